#!/usr/bin/env python3
"""The README's performance tables, from a results file of bench/run.py or
bench/connections.py.

    python3 bench/report.py bench/results/echo.json [more.json ...]
    python3 bench/report.py                # every bench/results/*.json but the smoke runs

prints, for each file, its table(s) as Markdown and one line saying when,
where and how it was measured (date, commit, machine, command). Other code
calls :func:`markdown`::

    sys.path.insert(0, "bench"); import report; text = report.markdown(path)

Importing this module has no side effect; it needs only the standard library.
"""

import json
import re
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

#: The README's row names, by server key; ``{package}`` is its version in
#: ``meta.versions.peers``.
LABELS = {
    "lapps-ws": "lapps ws (echo.lua)",
    "lapps-wss": "lapps wss (echo.lua)",
    "lapps-ws-off": "lapps ws, `fast_path` off",
    "lapps-wss-off": "lapps wss, `fast_path` off",
    "autobahn": "Autobahn/Twisted, bare echo",
    "autobahn-wss": "Autobahn/Twisted, bare echo, wss",
    "websockets": "websockets {websockets} (asyncio)",
    "aiohttp": "aiohttp {aiohttp} (asyncio)",
    "picows": "picows {picows} (uvloop {uvloop})",
    "nginx-ws": "nginx + lua-resty-websocket",
    "nginx-wss": "nginx + lua-resty-websocket, wss",
    "echosrv": "echosrv (C, the ceiling)",
    "lua-ws": "ws, echo in the same lapps process",
    "lua-wss": "wss, echo in the same lapps process",
    "lua-ws-nginx": "ws, echo on nginx",
    "lua-wss-nginx": "wss, echo on nginx",
}

ECHO_HEADER = "| server | msgs/s median (min–max) | server CPU-µs/msg |"
RATIO_HEADER = " vs Autobahn/Twisted |"
LUA_HEADER = "| LAppS benchmark | msgs/s median (min–max) | CPU-µs/msg (clients + echo server) |"
CONNECTIONS_HEADER = ("| server | server CPU-µs per handshake | × nginx-ws | handshakes/s "
                      "| KiB per idle connection |")


class _Versions(dict):
    def __missing__(self, key):
        return "?"


def _label(row, peers):
    template = LABELS.get(row["server"])
    name = template.format_map(_Versions(peers)) if template else row.get("label", row["server"])
    if row.get("ok") is not None and row.get("runs") and row["ok"] != row["runs"]:
        name += f" ({row['ok']}/{row['runs']} runs ok)"
    return name


def _rate(row):
    if row.get("msgs_per_s_median") is None:
        return "failed"
    return (f"{row['msgs_per_s_median']:,.0f} "
            f"({row['msgs_per_s_min']:,.0f}–{row['msgs_per_s_max']:,.0f})")


def _cpu(value):
    return f"{value:.1f}" if value else "—"


def _echo_tables(data):
    peers = data.get("meta", {}).get("versions", {}).get("peers") or {}
    rows = data.get("summary", [])
    echo = [r for r in rows if r.get("kind", "wsbench") != "lua"]
    lua = [r for r in rows if r.get("kind") == "lua"]
    out = []
    if echo:
        ratio = any(r.get("ratio_to_autobahn") for r in echo)
        lines = [ECHO_HEADER + (RATIO_HEADER if ratio else ""),
                 "|---|---:|---:|" + ("---:|" if ratio else "")]
        for r in echo:
            cells = [_label(r, peers), _rate(r), _cpu(r.get("cpu_us_per_msg_median"))]
            if ratio:
                x = r.get("ratio_to_autobahn")
                cells.append(f"{x:.2f}×" if x else "—")
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    if lua:
        lines = [LUA_HEADER, "|---|---:|---:|"]
        for r in lua:
            lines.append(f"| {_label(r, peers)} | {_rate(r)} | "
                         f"{_cpu(r.get('cpu_us_per_msg_median'))} |")
        out.append("\n".join(lines))
    return out


def _connections_table(data):
    rows = data.get("summary", [])
    base = next((r["cpu_us_per_handshake"] for r in rows if r["server"] == "nginx-ws"), None)
    lines = [CONNECTIONS_HEADER, "|---|---:|---:|---:|---:|"]
    for r in rows:
        mark = "" if r.get("all_connected", True) else " (not all connected)"
        ratio = f"{r['cpu_us_per_handshake'] / base:.1f}" if base else "–"
        lines.append(f"| {r['server']}{mark} | {r['cpu_us_per_handshake']:.0f} | {ratio} | "
                     f"{r['handshakes_per_s']:.0f} | {r['kib_per_connection']:.1f} |")
    return ["\n".join(lines)]


def _history_table(data):
    lines = ["| bus | channel | sends/s | lapps CPU-µs/send | Redis CPU-µs/send | "
             "total CPU-µs/send |", "|---|---|---:|---:|---:|---:|"]
    for r in data.get("summary", []):
        ratio = "/" in r["kind"]
        cells = [r["sends_per_s"], r["lapps_cpu_us_per_send"], r["redis_cpu_us_per_send"],
                 r["total_cpu_us_per_send"]]
        shown = ["—" if v is None else f"{v:.2f}×" if ratio else f"{v:,.1f}" for v in cells]
        lines.append(f"| {r['backend']} | {r['kind']} | " + " | ".join(shown) + " |")
    return ["\n".join(lines)]


#: Each workload but echo's: its table(s).
_TABLES = {"connections": _connections_table, "bcast-history": _history_table}


def _load(data):
    others = [r["other_cpu"] for r in data.get("runs", []) if "other_cpu" in r]
    if not others:
        return ""
    busy = sum(1 for x in others if x > 0.25)
    return (f", other processes {statistics.median(others):.2f} cores (median over the runs"
            + (f"; {busy} of {len(others)} runs above 0.25" if busy else "") + ")")


def _n(count, noun):
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _workload(data):
    s = data.get("settings", {})
    if data.get("workload") == "connections":
        text = (f"{_n(s.get('conns', 0), 'connection')}, {s.get('batch', '?')} handshakes "
                f"at once, {_n(s.get('reps', 0), 'interleaved repetition')}")
    elif data.get("workload") == "bcast-history":
        text = (f"{_n(s.get('messages', 0), 'send')} of {s.get('size', '?')} B per request, "
                f"{_n(s.get('reps', 0), 'interleaved repetition')}")
    else:
        text = (f"{_n(s.get('conns', 0), 'connection')} × {s.get('size', '?')} B, "
                f"{_n(s.get('reps', 0), 'interleaved repetition')} of "
                f"{s.get('duration', 0):g} s after {s.get('warmup', 0):g} s warm-up")
    if s.get("server_cpu") is not None:
        text += f", server on CPU {s['server_cpu']}, client on CPU {s['client_cpu']}"
    return text


def measured(data):
    """One line: when, where and how the file's numbers were measured."""
    meta = data.get("meta", {})
    git, machine, versions = meta.get("git") or {}, meta.get("machine") or {}, \
        meta.get("versions") or {}
    when = (meta.get("date") or "?").replace("T", " ").replace("+00:00", " UTC")
    if git:
        commit = f"commit `{git.get('short') or git.get('commit', '?')[:7]}`"
        if git.get("dirty"):
            in_lapps = git.get("uncommitted_in_lapps_files", 0)
            commit += (f" ({_n(git.get('uncommitted_files', 0), 'uncommitted file')}, "
                       + (f"{in_lapps} in lapps/)" if in_lapps else "none in lapps/)"))
        if git.get("commit_at_end") and git["commit_at_end"] != git.get("commit"):
            commit += f" (`{git['commit_at_end'][:7]}` by the end)"
    else:
        commit = "no git checkout"
    where = (f"{machine.get('cpu_count', '?')}-CPU {machine.get('cpu_model', '?')}"
             + (" VM" if machine.get("virtual") else "")
             + f", Linux {machine.get('kernel', '?')}, {versions.get('python', 'Python ?')}")
    stack = [f"{name} {versions[key]}" for key, name in
             (("twisted", "Twisted"), ("autobahn", "Autobahn"), ("luajit", ""), ("nginx", "nginx"))
             if versions.get(key)]
    if stack:
        where += ", " + ", ".join(s.strip() for s in stack)
    load = meta.get("loadavg_start"), meta.get("loadavg_end")
    loadtext = (f"; load average {load[0][0]:.2f} → {load[1][0]:.2f}" if all(load) else "")
    elapsed = f", {meta['elapsed_s']:.0f} s" if meta.get("elapsed_s") is not None else ""
    return (f"Measured {when} at {commit} on a {where}{loadtext}{_load(data)}; "
            f"{_workload(data)}: `{meta.get('command', '?')}`{elapsed}.")


def markdown(path) -> str:
    """The table(s) of one results file, then the line saying how it was measured
    (and its notes, if any), as Markdown."""
    data = json.loads(Path(path).read_text())
    tables = _TABLES.get(data.get("workload"), _echo_tables)(data)
    parts = tables + [measured(data)]
    parts += [f"Note: {note}" for note in data.get("notes", [])]
    return "\n\n".join(parts) + "\n"


def default_files():
    return sorted(p for p in RESULTS.glob("*.json") if "smoke" not in p.name)


#: A block of a Markdown file made from a results file: ``<!-- bench NAME -->``,
#: the tables, ``<!-- /bench -->`` (NAME under bench/results/).
BLOCK = re.compile(r"(<!-- bench (\S+) -->\n).*?(<!-- /bench -->)", re.DOTALL)


def with_tables(text):
    """``text`` (the README) with each block's tables made again from its results file."""
    return BLOCK.sub(lambda m: m.group(1) + "\n" + markdown(RESULTS / m.group(2)) + "\n"
                     + m.group(3), text)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--readme"]:  # rewrite the README's blocks from the latest results
        readme = Path(argv[1]) if len(argv) > 1 else RESULTS.parents[1] / "README.md"
        readme.write_text(with_tables(readme.read_text()))
        return 0
    paths = [Path(p) for p in argv] or default_files()
    if not paths:
        print(f"no results file in {RESULTS}", file=sys.stderr)
        return 1
    for i, path in enumerate(paths):
        if len(paths) > 1:
            print(f"{'' if i == 0 else chr(10)}<!-- {path} -->\n")
        print(markdown(path), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
