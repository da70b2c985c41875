"""The messages of the host bus, between the supervisor (the hub) and each
worker, on one Unix-domain socket pair per worker.

Each message is one Int32 string (Twisted's ``Int32StringReceiver``): a
kind byte and a body whose fields are fixed-size big-endian integers and,
last, the bytes that are left. A queue name comes first, with its length.

From a worker: ``C`` create a channel (with history options when it keeps
history), ``B`` publish (forwarded as it is to every worker), ``H``
publish on a history channel, ``Q`` ask for held messages, ``J``/``L``
a subscription begins/ends, ``E`` ask for presence, ``P`` post, ``W``
credit for deliveries, ``F`` fetch (``try_recv``), ``A`` acknowledge,
``R`` release (give entries back).
From the hub: ``C`` a channel exists (with its history options), ``S``
caught up (sent once, after the channels), ``B`` a broadcast, ``N`` a
numbered broadcast of a history channel, ``h``/``q``/``e`` the answers to
``H``/``Q``/``E``, ``p`` a post's answer, ``D`` deliveries, ``f`` a fetch
done.
"""

import collections
import struct

from twisted.internet import interfaces
from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import implementer

CREATE, SYNCED, BROADCAST, POST, POSTED = b"C", b"S", b"B", b"P", b"p"
WANT, FETCH, FETCHED, DELIVER, ACK, RELEASE = b"W", b"F", b"f", b"D", b"A", b"R"
NUMBERED, PUBLISH, PUBLISHED, HELD, HELD_ANSWER = b"N", b"H", b"h", b"Q", b"q"
JOIN, LEAVE, PRESENCE, PRESENCE_ANSWER = b"J", b"L", b"E", b"e"

#: The largest message either side takes (a bcast or mqr payload and its header).
MAX_MESSAGE = 1 << 30
#: Bytes a side may queue for a peer that does not read, at most.
MAX_BEHIND = 64 * 1024 * 1024

U64 = struct.Struct("!Q")
U32 = struct.Struct("!I")
I32 = struct.Struct("!i")
_ENTRY = struct.Struct("!QI")  # id, length
_OPTIONS = struct.Struct("!IdQ")  # size, ttl (< 0: none), max_bytes
HELD_QUERY = struct.Struct("!QI")  # after, limit
_HELD = struct.Struct("!QQ")  # first, top (after the epoch)


def channel_message(kind, channel, payload=b""):
    return kind + U64.pack(channel) + payload


def channel_of(message):
    return U64.unpack_from(message, 1)[0]


def history_options(options):
    """A CREATE body: the history options, or nothing for a plain channel."""
    if options is None:
        return b""
    return _OPTIONS.pack(options.size, -1.0 if options.ttl is None else options.ttl,
                         options.max_bytes)


def read_history_options(message, offset=9):
    """``(size, ttl, max_bytes)`` of a CREATE, or None for a plain channel."""
    if len(message) <= offset:
        return None
    size, ttl, max_bytes = _OPTIONS.unpack_from(message, offset)
    return size, None if ttl < 0 else ttl, max_bytes


def held_answer(epoch, first, top, entries_held):
    """The body of a HELD_ANSWER: epoch, first and top offsets, the entries."""
    return named(b"", epoch.encode()) + _HELD.pack(first, top) + entries(entries_held)


def read_held_answer(message):
    """``(epoch, first, top, [(offset, payload), ...])``, or None when the
    hub holds no history for the channel."""
    if len(message) == 5:
        return None
    epoch, offset = name_and_body(message, 5)
    first, top = _HELD.unpack_from(message, offset)
    return epoch.decode(), first, top, read_entries(message, offset + _HELD.size)


def named(kind, name, body=b""):
    """``kind``, the queue ``name`` and ``body``."""
    return kind + U32.pack(len(name)) + name + body


def name_and_body(message, offset=1):
    """(name, offset of what follows it) of a :func:`named` message."""
    size = U32.unpack_from(message, offset)[0]
    start = offset + 4
    return message[start:start + size], start + size


def request(kind, number, body=b""):
    return kind + U32.pack(number) + body


def request_number(message):
    return U32.unpack_from(message, 1)[0]


def ids(values):
    return b"".join(U64.pack(v) for v in values)


def read_ids(message, offset):
    return [U64.unpack_from(message, i)[0] for i in range(offset, len(message), 8)]


def entries(pairs):
    """``(id, data)`` pairs as the body of a DELIVER message."""
    return b"".join(_ENTRY.pack(i, len(data)) + data for i, data in pairs)


def read_entries(message, offset):
    pairs, end = [], len(message)
    while offset < end:
        entry_id, size = _ENTRY.unpack_from(message, offset)
        offset += _ENTRY.size
        pairs.append((entry_id, message[offset:offset + size]))
        offset += size
    return pairs


@implementer(interfaces.IPushProducer)
class Peer(Int32StringReceiver):
    """One end of a link: messages in go to ``received(message)``. While its
    peer does not read (Twisted pauses it as a producer), messages wait
    here, so :attr:`behind` is exactly what the peer has yet to take; the
    link is dropped once that exceeds :data:`MAX_BEHIND`. A peer that reads,
    however slowly, is never cut for what it has already taken."""

    MAX_LENGTH = MAX_MESSAGE
    behind = 0  # bytes of the messages in _waiting
    #: Whether the peer has stopped reading. (Not ``paused``: that one is
    #: the receiver's own, and stops it reading what arrives.)
    peer_full = False

    def connectionMade(self):
        self._waiting = collections.deque()
        self.transport.registerProducer(self, True)

    def stringReceived(self, message):
        self.received(message)

    def send(self, message):
        if not self.peer_full:
            self.sendString(message)
            return
        self._waiting.append(message)
        self.behind += len(message)
        if self.behind > MAX_BEHIND:
            self.too_far_behind()

    def lengthLimitExceeded(self, length):
        self.transport.loseConnection()

    def too_far_behind(self):
        self._waiting.clear()
        self.behind = 0
        self.transport.abortConnection()

    def pauseProducing(self):
        self.peer_full = True

    def resumeProducing(self):
        """The peer took all the transport held: pass on what waits here
        until the transport is full again."""
        self.peer_full = False
        waiting = self._waiting
        while waiting and not self.peer_full:
            message = waiting.popleft()
            self.behind -= len(message)
            self.sendString(message)

    def stopProducing(self):
        self.peer_full = True


class OneProtocol(Factory):
    """Builds the one protocol of an adopted socket."""

    noisy = False

    def __init__(self, protocol):
        self.protocol = protocol

    def buildProtocol(self, addr):
        return self.protocol
