"""What every bus's bcast history shares: the options of a history channel,
the position a delivered message carries, and the held messages of one
channel where a process keeps them itself (the local bus, the host bus's
hub; Redis keeps its own, see :mod:`lapps.bus.redis.history`).

A channel created with history numbers its sends 1, 2, 3… (the *offset*)
and has an *epoch*, a string that changes whenever its history was lost
(the process that held it restarted). A client that remembers the last
``(epoch, offset)`` it saw can ask for what came after it: it gets all of
it, in order, or it is told that it cannot (``recovered = false``).
"""

import collections
import itertools
import secrets
import time
from dataclasses import dataclass
from typing import Optional

import cbor2

#: Members ``presence`` lists at most (``count`` counts them all).
MAX_MEMBERS = 1000
#: The longest presence ``info`` string, in bytes.
MAX_INFO = 256
#: The largest ``history_size``.
MAX_SIZE = 1_000_000
#: Messages one ``history`` call returns at most, and a subscribe recovers at most.
MAX_LIMIT = 10_000
#: The longest ``history_ttl``, in seconds (about 31 years).
MAX_TTL = 1_000_000_000


@dataclass(frozen=True)
class Options:
    """A history channel's options: ``size`` messages at most, none older
    than ``ttl`` seconds (None: no age limit), ``max_bytes`` of payload."""

    size: int
    ttl: Optional[float]
    max_bytes: int


@dataclass(frozen=True)
class Position:
    """Where a history channel is: its epoch and newest offset."""

    epoch: str
    offset: int


@dataclass(frozen=True)
class Recovery:
    """What a subscribe with a position found: whether every message after
    it was still held, and the channel's position now."""

    recovered: bool
    epoch: str
    offset: int


def new_epoch() -> str:
    return secrets.token_hex(4)


def positioned(payload: bytes, epoch: str, offset: int) -> bytes:
    """The CBOR map ``payload`` (a broadcast's ``{cid, message, ...}``) with
    ``epoch`` and ``offset`` added, without decoding it: the map's header
    counts two more entries and the two are put first."""
    first = payload[0]
    if first >> 5 != 5:
        raise ValueError("a broadcast payload is a CBOR map")
    info = first & 31
    if info < 24:
        count, body = info, payload[1:]
    else:
        width = 1 << (info - 24)
        count, body = int.from_bytes(payload[1:1 + width], "big"), payload[1 + width:]
    return _map_header(count + 2) + cbor2.dumps({"epoch": epoch, "offset": offset})[1:] + body


def _map_header(count):
    if count < 24:
        return bytes([0xA0 | count])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if count < 1 << 8 * width:
            return bytes([0xA0 | info]) + count.to_bytes(width, "big")
    raise ValueError("a CBOR map of more than 2**64 entries")


def recovery(epoch, first, top, since_epoch, since_offset) -> bool:
    """Whether a subscriber that saw ``(since_epoch, since_offset)`` can get
    everything after it from a history holding offsets ``first``..``top``
    (``first`` > ``top`` when it holds none): at most :data:`MAX_LIMIT`
    messages are sent on a subscribe (more are paged with ``history``)."""
    if since_epoch != epoch or since_offset > top or top - since_offset > MAX_LIMIT:
        return False
    return since_offset == top or first <= since_offset + 1


class Held:
    """The held messages of one history channel: ``(offset, time, payload)``
    oldest first, trimmed to its options on every change and read."""

    __slots__ = ("options", "epoch", "top", "entries", "bytes", "clock")

    def __init__(self, options: Options, clock=time.monotonic):
        self.options, self.epoch, self.top = options, new_epoch(), 0
        self.entries = collections.deque()
        self.bytes, self.clock = 0, clock

    def append(self, payload: bytes):
        """Hold the next message: ``(offset, payload with its position)``."""
        self.top += 1
        framed = positioned(payload, self.epoch, self.top)
        self.entries.append((self.top, self.clock(), framed))
        self.bytes += len(framed)
        self.trim()
        return self.top, framed

    def trim(self):
        entries, options = self.entries, self.options
        oldest = None if options.ttl is None else self.clock() - options.ttl
        while entries and (len(entries) > options.size or self.bytes > options.max_bytes
                           or oldest is not None and entries[0][1] < oldest):
            self.bytes -= len(entries.popleft()[2])

    def first(self) -> int:
        """The oldest offset held (``top + 1`` when none is)."""
        self.trim()
        return self.entries[0][0] if self.entries else self.top + 1

    def after(self, offset, limit=MAX_LIMIT):
        """The held ``(offset, payload)`` after ``offset``, oldest first."""
        self.trim()
        skip = max(0, offset + 1 - self.first())
        return [(entry[0], entry[2])
                for entry in itertools.islice(self.entries, skip, skip + limit)]

    def recover(self, since_epoch, since_offset):
        """``(Recovery, [(offset, payload)...])`` for a subscriber at that position."""
        recovered = recovery(self.epoch, self.first(), self.top, since_epoch, since_offset)
        missed = self.after(since_offset) if recovered else []
        return Recovery(recovered, self.epoch, self.top), missed

    def reconfigure(self, options: Options):
        self.options = options
        self.trim()
