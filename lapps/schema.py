"""A small declarative schema for JSON config: validates, fills defaults, and
reports every problem at once with its JSON pointer.

Written here rather than taken from ``jsonschema`` because the messages are the
product: one short line per problem, in the operator's terms
("expected integer >= 1, got 0"), and defaults deep-merged in the same walk.
"""

import copy
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

_MISSING = object()

#: Control characters (line breaks above all) as JSON escapes, so that a key
#: or a name holding one keeps its problem on one line.
_ESCAPES = {**{c: json.dumps(chr(c))[1:-1] for c in range(32)},
            **{c: f"\\u{c:04x}" for c in (0x7F, 0x85, 0x2028, 0x2029)}}


def pointer(parent: str, key) -> str:
    """Extend a JSON pointer (RFC 6901) by one reference token."""
    token = str(key).replace("~", "~0").replace("/", "~1")
    return f"{parent}/{token}"


def describe(value) -> str:
    """How a JSON value is shown in an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return repr(value)


@dataclass
class Problems:
    """The errors found so far, each tied to a file and a JSON pointer."""

    lines: list = field(default_factory=list)

    def add(self, source: str, where: str, message: str) -> None:
        self.lines.append(f"{source}: {where or '/'}: {message}".translate(_ESCAPES))


class Node:
    """One value in the schema. ``check`` returns the value to keep;
    ``help`` says what it means (the docs' configuration reference is made
    from it: :func:`walk`)."""

    default: Any = _MISSING
    help: str = ""

    def check(self, value, where, source, problems):
        raise NotImplementedError

    def fill(self):
        """The value used when the key is absent (a fresh copy)."""
        return copy.deepcopy(self.default)


class Scalar(Node):
    """A value of one JSON type, optionally constrained."""

    def __init__(self, kind, default=_MISSING, minimum=None, maximum=None,
                 choices=None, test: Callable | None = None, expect: str = "", help: str = ""):
        self.kind, self.default, self.help = kind, default, help
        self.minimum, self.maximum, self.choices = minimum, maximum, choices
        self.test, self.expect = test, expect

    def expected(self) -> str:
        if self.expect:
            return self.expect
        name = {int: "integer", float: "number", bool: "boolean", str: "string"}[self.kind]
        if self.choices is not None:
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        if self.minimum is not None and self.maximum is not None:
            return f"{name} from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"{name} >= {self.minimum}"
        return name

    def _type_ok(self, value) -> bool:
        if isinstance(value, bool):
            return self.kind is bool
        if self.kind is float:  # NaN and infinity only come from Python (embedding)
            return isinstance(value, int) or isinstance(value, float) and math.isfinite(value)
        return isinstance(value, self.kind)

    def check(self, value, where, source, problems):
        ok = self._type_ok(value)
        if ok and self.choices is not None:
            ok = value in self.choices
        if ok and self.minimum is not None:
            ok = value >= self.minimum
        if ok and self.maximum is not None:
            ok = value <= self.maximum
        if ok and self.test is not None:
            ok = self.test(value)
        if not ok:
            problems.add(source, where, f"expected {self.expected()}, got {describe(value)}")
            return self.default if self.default is not _MISSING else value
        return value


class Anything(Node):
    """Any JSON value (what the service itself interprets)."""

    def __init__(self, help: str = ""):
        self.help = help

    def expected(self) -> str:
        return "any JSON value"

    def check(self, value, where, source, problems):
        return value


class Nullable(Node):
    """``null`` or the wrapped node; null becomes the given default."""

    def __init__(self, inner: Node, default, help: str = ""):
        self.inner, self.default, self.help = inner, default, help

    def expected(self) -> str:
        return f"null or {self.inner.expected()}"

    def check(self, value, where, source, problems):
        if value is None:
            return self.default
        return self.inner.check(value, where, source, problems)


class Array(Node):
    """A JSON array whose items all match one node."""

    def __init__(self, item: Node, default=_MISSING, unique=False, help: str = ""):
        self.item, self.default, self.unique, self.help = item, default, unique, help

    def expected(self) -> str:
        return f"an array{' of distinct items' if self.unique else ''}, each {self.item.expected()}"

    def check(self, value, where, source, problems):
        if not isinstance(value, list):
            problems.add(source, where, f"expected an array, got {describe(value)}")
            return list(self.default) if self.default is not _MISSING else []
        items = [self.item.check(v, pointer(where, i), source, problems) for i, v in enumerate(value)]
        if self.unique:
            seen = set()
            for i, v in enumerate(items):
                if isinstance(v, (list, dict)):
                    continue  # not a valid item (reported above), and not hashable
                if v in seen:
                    problems.add(source, pointer(where, i), f"duplicate entry {describe(v)}")
                seen.add(v)
        return items


class MapOf(Node):
    """A JSON object with free keys whose values all match one node."""

    def __init__(self, value: Node, default=_MISSING, help: str = ""):
        self.value, self.default, self.help = value, default, help

    def expected(self) -> str:
        return f"an object whose values are each {self.value.expected()}"

    def check(self, value, where, source, problems):
        if not isinstance(value, dict):
            problems.add(source, where, f"expected an object, got {describe(value)}")
            return self.fill() if self.default is not _MISSING else {}
        return {k: self.value.check(v, pointer(where, k), source, problems) for k, v in value.items()}


class Object(Node):
    """A JSON object with known keys: unknown keys are errors, absent keys take
    their defaults (deep-merged), absent keys without a default are reported."""

    def __init__(self, fields: dict, help: str = ""):
        self.fields, self.help = fields, help
        self.default = {}

    def expected(self) -> str:
        return "an object"

    def fill(self):
        return self.check({}, "", "", Problems())

    def check(self, value, where, source, problems):
        if not isinstance(value, dict):
            problems.add(source, where, f"expected an object, got {describe(value)}")
            value = {}
        out = {}
        for key in value:
            if key not in self.fields:
                problems.add(source, pointer(where, key), "unknown key")
        for key, node in self.fields.items():
            if key in value:
                out[key] = node.check(value[key], pointer(where, key), source, problems)
            elif node.default is not _MISSING:
                out[key] = node.fill()
            else:
                problems.add(source, pointer(where, key), "required key is missing")
        return out


def walk(node: Node, path: tuple = ()):
    """Every key under an :class:`Object`, depth first, in schema order, as
    ``(path, node)`` pairs: the objects themselves, then their keys."""
    for key, child in getattr(node, "fields", {}).items():
        yield path + (key,), child
        yield from walk(child, path + (key,))
