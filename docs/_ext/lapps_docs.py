"""Sphinx directives that make the docs' tables from data, so no key or
number is typed by hand:

- ``config-reference`` (argument: ``server``, ``services file`` or
  ``service``): a table per object of the config schema (:mod:`lapps.config`),
  every key with its default, what it accepts and its help text;
- ``config-keys`` (arguments: ``server:PATH`` or ``service:PATH``, dotted):
  the same table for a chosen set of keys;
- ``bench-table`` (argument: a results file under ``bench/results/``): the
  tables ``bench/report.py`` makes of it.
"""

import json
import sys
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

from lapps import config
from lapps.schema import MapOf, Object, walk

ROOT = Path(__file__).resolve().parents[2]
#: The roots a directive names: the services file is its two top-level keys
#: (the descriptors have a table of their own).
SCHEMAS = {"server": config.SERVER, "service": config.SERVICE,
           "services file": Object({"directories": config.DIRECTORIES,
                                    "services": MapOf(config.SERVICE, {},
                                                      help=config.SERVICE.help)})}


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(node):
    default = getattr(node, "default", None)
    if isinstance(node, Object):
        return ""
    if default is None:
        return "none"
    return f"`{json.dumps(default)}`"


_HEAD = ["| key | default | accepts | meaning |", "|---|---|---|---|"]


def _row(name, node):
    return f"| `{name}` | {_default(node)} | {_cell(node.expected())} | {_cell(node.help)} |"


def reference_tables(root):
    """Markdown: one table per object, its keys as dotted paths."""
    groups = {(): []}
    for path, node in walk(root):
        if isinstance(node, Object):
            groups[path] = []
        else:
            groups[path[:-1]].append((path, node))
    out = []
    for parent, keys in groups.items():
        if not keys:
            continue
        if parent:
            node = dict(walk(root))[parent]
            out += [f"**`{'.'.join(parent)}`**: {_cell(node.help)}.", ""]
        out += _HEAD + [_row(".".join(path), node) for path, node in keys]
        out.append("")
    return out


class _MarkdownDirective(SphinxDirective):
    required_arguments = 1
    final_argument_whitespace = True

    def markdown(self):
        raise NotImplementedError

    def run(self):
        container = nodes.container()
        self.state.nested_parse(StringList(self.markdown(), self.get_source_info()[0]),
                                self.content_offset, container)
        return container.children


class ConfigReference(_MarkdownDirective):
    def markdown(self):
        return reference_tables(SCHEMAS[self.arguments[0]])


class ConfigKeys(_MarkdownDirective):
    optional_arguments = 100
    final_argument_whitespace = False

    def markdown(self):
        rows = []
        for argument in self.arguments:
            which, _, dotted = argument.partition(":")
            keys = dict(walk(SCHEMAS[which]))
            path = tuple(dotted.split("."))
            if path not in keys:
                raise self.error(f"no config key {argument}")
            rows.append(_row(("service " if which == "service" else "") + dotted, keys[path]))
        return _HEAD + rows


class BenchTable(_MarkdownDirective):
    def markdown(self):
        path = ROOT / "bench" / "results" / self.arguments[0]
        if not path.is_file():
            raise self.error(f"no benchmark results at {path}: run the benchmark that writes "
                             "it (bench/README.md)")
        self.env.note_dependency(str(path))
        sys.path.insert(0, str(ROOT / "bench"))
        try:
            import report
        finally:
            sys.path.remove(str(ROOT / "bench"))
        return report.markdown(path).splitlines()


def setup(app):
    app.add_directive("config-reference", ConfigReference)
    app.add_directive("config-keys", ConfigKeys)
    app.add_directive("bench-table", BenchTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
