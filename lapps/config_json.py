"""JSON as an operator's config file must be: what Python's ``json`` lets
through quietly (a key given twice, the last one winning; ``NaN`` and
``Infinity``; ``1e999``, which becomes infinity) or fails on with a
traceback (integers past Python's digit limit, nesting past its recursion
limit) is a problem with its JSON pointer, as nginx refuses a directive
given twice."""

import json
import re

#: Deeper than any lapps config, shallow enough for every recursive walk.
MAX_DEPTH = 64

#: Python's own limit for converting digits to an int (``sys.int_info``).
MAX_DIGITS = 4300

#: The structural tokens: strings (whole, escapes included) and punctuation.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.DOTALL)


class Unusable:
    """A value json parsed that a config cannot hold, kept in place until
    the walk that reports it with its pointer."""

    def __init__(self, why):
        self.why = why


class _Object(dict):
    """An object that had some keys more than once (json keeps the last)."""

    repeated = ()


def _pairs(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) == len(keys):
        return dict(pairs)
    obj = _Object(pairs)
    obj.repeated = sorted({key for key in keys if keys.count(key) > 1})
    return obj


def _integer(text):
    digits = len(text.lstrip("-"))
    if digits > MAX_DIGITS:
        return Unusable(f"an integer of {digits} digits is not a usable number")
    return int(text)


def _number(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        return Unusable(f"{text[:20]}{'...' if len(text) > 20 else ''} is too big for a number")
    return value


def _constant(name):
    return Unusable(f"{name} is not a JSON number")


def too_deep(text):
    """The JSON pointer of the first array or object nested deeper than
    :data:`MAX_DEPTH` in ``text``, or None. It reads only the structure, so
    it runs before ``json`` recurses; malformed text is json's to report."""
    stack = []  # per open container: [is_object, key or index, expecting a key]
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            if len(stack) == MAX_DEPTH:
                return "".join(_token(str(entry[1])) for entry in stack)
            stack.append([token == "{", 0, token == "{"])
        elif token in "]}":
            if stack:
                stack.pop()
        elif not stack:
            continue
        elif token == ",":
            entry = stack[-1]
            if entry[0]:
                entry[2] = True
            else:
                entry[1] += 1
        elif token != ":" and stack[-1][0] and stack[-1][2]:
            try:
                stack[-1][1] = json.loads(token)
            except ValueError:
                return None  # json reports the bad string
            stack[-1][2] = False
    return None


def _token(key):
    return "/" + key.replace("~", "~0").replace("/", "~1")


def problems_in(value, where=""):
    """``(pointer, message)`` for each unusable value and repeated key."""
    if isinstance(value, Unusable):
        yield where, value.why
    elif isinstance(value, dict):
        for key in getattr(value, "repeated", ()):
            yield where + _token(key), "key given more than once (one value per key)"
        for key, item in value.items():
            yield from problems_in(item, where + _token(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from problems_in(item, f"{where}/{index}")


def loads(text):
    """Parse ``text`` (str or bytes). Returns ``(value, problems)``, the
    problems as ``(pointer, message)``; raises ``json.JSONDecodeError``
    for text that is not JSON, and ``UnicodeDecodeError``."""
    if isinstance(text, bytes):
        text = text.decode(json.detect_encoding(text))
    deep = too_deep(text)
    if deep is not None:
        return None, [(deep, f"nested more than {MAX_DEPTH} levels deep")]
    value = json.loads(text, object_pairs_hook=_pairs, parse_int=_integer,
                       parse_float=_number, parse_constant=_constant)
    return value, list(problems_in(value))
