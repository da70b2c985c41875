"""The status page: plain HTML, no script. Everything shown passes through
``html.escape`` (request targets and log texts carry what clients sent),
and the page is served with a Content-Security-Policy that forbids scripts,
so a value that slipped through would still not run."""

import html
from datetime import datetime, timezone

#: Sent with the page: no script, no plugin, no form, no framing; inline style only.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
td.number { text-align: right; }
.ready { color: #060; } .not-ready { color: #a00; }
pre { margin: 0; white-space: pre-wrap; max-width: 80em; }
"""


def _text(value):
    return html.escape("" if value is None else str(value))


def _cell(css, value):
    """A table cell; a log text keeps its lines (a Lua traceback)."""
    shown = f"<pre>{_text(value)}</pre>" if css == "text" else _text(value)
    return f'<td class="{css}">{shown}</td>'


def _table(table_id, headers, rows):
    """``rows``: (the row's data attribute name and value, [(css class, value), ...])."""
    head = "".join(f"<th>{_text(h)}</th>" for h in headers)
    body = "".join(f'<tr data-{key}="{_text(key_value)}">'
                   + "".join(_cell(css, value) for css, value in cells) + "</tr>"
                   for (key, key_value), cells in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _when(seconds):
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def render(problems, services, workers, recent, now, deployed=()):
    """The whole page (str) for what a status reader and the recent events gave."""
    if problems:
        readiness = ('<p id="readiness" class="not-ready">not ready:</p><ul id="problems">'
                     + "".join(f"<li>{_text(p)}</li>" for p in problems) + "</ul>")
    else:
        readiness = '<p id="readiness" class="ready">ready</p>'
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>lapps status</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>lapps status</h1><p>at {_text(_when(now))}</p>", readiness,
        "<h2>Services</h2>",
        _table("services", ["service", "kind", "target", "instances", "connections", "started"],
               [(("service", s.name),
                 [("name", s.name), ("kind", s.kind), ("target", s.target or ""),
                  ("number instances", s.instances), ("number connections", s.connections),
                  ("started", "yes" if s.started else "no")]) for s in services]),
    ]
    if workers:
        parts += ["<h2>Workers</h2>", _table(
            "workers", ["worker", "pid", "ready", "restarts"],
            [(("worker", w.index),
              [("number", w.index), ("number pid", w.pid), ("ready", "yes" if w.ready else "no"),
               ("number restarts", w.restarts)]) for w in workers])]
    if deployed:
        parts += ["<h2>Deployed</h2>", _table(
            "deployed", ["service", "archive", "sha256", "deployed at"],
            [(("service", d.name), [("name", d.name), ("archive", d.archive),
                                    ("sha256", d.sha256), ("time", d.deployed_at)])
             for d in deployed])]
    parts += [f"<h2>Recent warnings and errors ({len(recent)})</h2>", _table(
        "recent", ["time", "level", "event", "worker", "text"],
        [(("level", r.level),
          [("time", _when(r.time)), ("level", r.level), ("event", r.event),
           ("worker", r.worker), ("text", r.text)]) for r in recent])]
    parts.append("</body></html>")
    return "".join(parts)
