"""The LAppS protocol's messages (spec §4): CBOR in binary frames.

Inbound, a request or client notification is classified into the four
``msg_type`` values exactly as §4.3. Outbound, ``ws:send`` accepts the
shapes the spec itself uses (§4.2), which relaxes LAppS's own validator:

* a response on the command channel: ``{cid: 0, status: 1, result: [...]}``;
* an error: ``{cid: N, status: 0, error: {code: number, message: string[, data]}}``
  (any ``cid``, as the original examples send them);
* an out-of-order notification: ``{cid: N != 0, message: [...]}``, with or
  without ``status: 1``.

Integral numbers are encoded as CBOR integers, others as floats.
"""

import io

import cbor2

CN, CN_WITH_PARAMS, REQUEST, REQUEST_WITH_PARAMS = 1, 2, 3, 4

PARSE_ERROR, INVALID_REQUEST = -32700, -32600

#: The most characters of an error reply's ``data``: the reasons name what
#: is wrong, but one may quote input (a cbor2 message), and a reply to bad
#: input must not echo it back at length.
MAX_DATA = 200


def shortened(text: str, limit: int = MAX_DATA) -> str:
    """``text``, cut to ``limit`` characters with "…" where it was cut."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


class InvalidInput(Exception):
    """An inbound message that gets an error reply instead of reaching Lua."""

    def __init__(self, code, message, data):
        data = shortened(data)
        super().__init__(data)
        self.code, self.message, self.data = code, message, data

    def reply(self) -> bytes:
        return encode({"cid": 0, "status": 0,
                       "error": {"code": self.code, "message": self.message, "data": self.data}})


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _invalid(reason):
    return InvalidInput(INVALID_REQUEST, "Invalid request", reason)


class _TagRefused(ValueError):
    """A tag in client CBOR; cbor2 wraps it in its decode error."""


class _NoTags(dict):
    """cbor2's ``semantic_decoders``, refusing every tag: LAppS decoded with
    nlohmann's ``from_cbor``, which takes none. cbor2 would otherwise turn
    client bytes into bignums of any size, dates, regexes, sets and shared
    references (a few bytes that expand exponentially). cbor2 asks it for
    every tag, its own ones and unknown ones alike."""

    def __missing__(self, tag):
        raise _TagRefused(tag)


_NO_TAGS = _NoTags()


def _parse_error(error) -> str:
    if isinstance(error.__cause__, _TagRefused):
        return f"CBOR tags are not accepted (tag {error.__cause__.args[0]})"
    return f"not CBOR: {error}"


def decode(payload: bytes):
    """One CBOR item without tags, nothing after it; :class:`InvalidInput`
    (-32700) if not."""
    stream = io.BytesIO(payload)
    try:
        value = cbor2.CBORDecoder(stream, semantic_decoders=_NO_TAGS).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise InvalidInput(PARSE_ERROR, "Parse error", _parse_error(e)) from None
    if stream.tell() != len(payload):
        raise InvalidInput(PARSE_ERROR, "Parse error", "data after the CBOR item")
    return value


def classify(message) -> int:
    """The ``msg_type`` (1-4) of a decoded message, or :class:`InvalidInput`."""
    if not isinstance(message, dict):
        raise _invalid("a message must be a CBOR map")
    if message.get("lapps") != 1 or not _number(message.get("lapps")):
        raise _invalid("lapps must be the number 1")
    method = message.get("method")
    if not isinstance(method, str) or not method or method[0] == "_" or "." in method:
        raise _invalid("method must be a non-empty string without '.' not starting with '_'")
    params = message.get("params")
    has_params = isinstance(params, list) and len(params) > 0
    if "cid" in message:
        if not _number(message["cid"]):
            raise _invalid("cid must be a number")
        return CN_WITH_PARAMS if has_params else CN
    return REQUEST_WITH_PARAMS if has_params else REQUEST


def outbound_problem(message):
    """Why ``message`` is not a valid server→client message, or None."""
    if not isinstance(message, dict):
        return "the message must be an object"
    cid = message.get("cid")
    if not _number(cid):
        return "cid must be a number"
    status = message.get("status")
    if status is None:
        if cid == 0:
            return "a message on cid 0 needs status 0 or 1"
        return None if isinstance(message.get("message"), list) else "message must be an array"
    if status == 0 and _number(status):
        error = message.get("error")
        if not isinstance(error, dict) or not _number(error.get("code")):
            return "error.code must be a number"
        return None if isinstance(error.get("message"), str) else "error.message must be a string"
    if status == 1 and _number(status):
        key = "result" if cid == 0 else "message"
        return None if isinstance(message.get(key), list) else f"{key} must be an array"
    return "status must be 0 or 1"


def broadcast_problem(message):
    """Why ``message`` cannot be broadcast (it must be an OON), or None."""
    if not isinstance(message, dict):
        return "the message must be an object"
    cid = message.get("cid")
    if not _number(cid) or cid == 0:
        return "a broadcast needs a number cid other than 0"
    return None if isinstance(message.get("message"), list) else "message must be an array"


def encode(message) -> bytes:
    """CBOR of a message whose integral numbers are already ``int`` (as
    ``nljson.to_python`` gives them)."""
    return cbor2.dumps(message)
