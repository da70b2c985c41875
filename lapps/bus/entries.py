"""What every bus's queues share: the entries they hold and how an answer
that comes later is told.

An entry is what Lua posted, copied: ``bytes`` (a Lua string), an int, a
float, a bool, or a :class:`Json` (a table or nljson value in Python form).
A bus that carries bytes between processes (host, Redis) sends it as
:func:`encode` makes it and rebuilds it with :func:`decode`.
"""

import cbor2

#: What a queue operation returns when its answer comes later, through the
#: ``done`` callable it was given (on the reactor thread). The local queues
#: always answer at once; the host and Redis buses may not.
PENDING = object()
#: What a queue's ``take(done)`` calls ``done`` with once it has fetched what
#: is queued (then a plain ``take()`` takes from that).
FETCHED = object()

QUEUE_FULL = (False, b"queue full")


class Json:
    """A queued JSON value (Python form), to be rebuilt as nljson by the
    receiver, and the size of its CBOR form."""

    __slots__ = ("value", "size")

    def __init__(self, value, size):
        self.value, self.size = value, size


def encode(entry) -> bytes:
    """An entry as bytes: a type tag and the value, so that it comes back as
    the same Python type."""
    kind = type(entry)
    if kind is bytes:
        return b"s" + entry
    if kind is Json:
        return b"j" + cbor2.dumps(entry.value)
    if kind is bool:
        return b"t" if entry else b"f"
    return (b"i%d" % entry) if kind is int else b"d" + repr(entry).encode()


def size(entry) -> int:
    """The bytes ``entry`` counts against ``mqr.max_queue_bytes``: those of
    its :func:`encode` form, which the shared buses hold (a JSON value's
    length being the CBOR form the poster made)."""
    kind = type(entry)
    if kind is bytes:
        return 1 + len(entry)
    if kind is Json:
        return 1 + entry.size
    return len(encode(entry))  # a number or boolean: a few bytes


def decode(data: bytes):
    """The entry :func:`encode` made (ValueError if ``data`` is not one)."""
    tag, body = data[:1], data[1:]
    if tag == b"s":
        return body
    if tag == b"j":
        try:
            return Json(cbor2.loads(body), len(body))
        except cbor2.CBORDecodeError as e:
            raise ValueError(f"bad CBOR: {e}") from None
    if tag in (b"t", b"f"):
        return tag == b"t"
    if tag == b"i":
        return int(body)
    if tag == b"d":
        return float(body)
    raise ValueError(f"unknown entry tag {tag!r}")
