"""bcast history and presence kept in Redis, so every process on the same
Redis and prefix shares them, and history outlives the processes: a lapps
restart keeps a channel's epoch and messages; the epoch changes only when
Redis lost the channel's meta.

Keys, under the prefix ``P``:

* ``P bcast-histories``, a hash: channel id → its options ``"SIZE TTL"``
  (TTL empty for none). One HGETALL at sync tells a process every history
  channel (``has_history`` must hold everywhere: a sender's own
  ``epoch``/``offset`` keys are dropped before the send); the options live
  only here, so a later create's options apply to every process at once.
* ``P bcast-meta:ID``, a hash {epoch, offset, bytes}: the position, and the
  bytes the stream holds (to trim to ``history_max_bytes`` without reading
  it). It never expires: the epoch stays while Redis keeps it.
* ``P bcast-history:ID``, a stream of the positioned payloads (field ``p``)
  and Redis's time of the send (``t``, ms), whose entry ids are
  ``0-OFFSET``: "everything after K" is ``XRANGE key 0-(K+1) +``, and the
  first id is the oldest offset held. It expires ``ttl`` after the last
  send, when the channel has a ttl.
* ``P presence-consumers:ID``, a set of the consumers (processes) with
  subscriptions on the channel, and ``P presence:ID:CONSUMER``, a hash
  handler → info ("" for none) of each. A consumer whose ``alive:`` key
  (renewed by :mod:`lapps.bus.redis.mqr`) expired is dropped by the next
  ``presence``, so a process that died stops counting after
  ``consumer_timeout``.

A send on a history channel is one script (``bcast_history.lua``): it
numbers the send, puts the position in the CBOR map, adds it to the stream,
trims, and PUBLISHes it on ``P bcast:ID``. So the pub/sub order is the offset
order, and the position a read script returns (epoch, top, oldest held) is
that of one moment: a subscriber recovering after K gets K+1..top from the
read and what came after over pub/sub (stashed meanwhile, see
:class:`~lapps.bus.local.bcast.Broadcasts`), the offsets telling which is
which, whichever connection Redis answered first on.
"""

import io

import cbor2
from twisted.internet.defer import DeferredList

from lapps.bus.history import MAX_MEMBERS, Options, new_epoch
from lapps.lua import source

_HISTORY = source.read("bcast_history.lua", "lapps.bus.redis")
_PRESENCE = source.read("bcast_presence.lua", "lapps.bus.redis")


def options_text(options: Options) -> bytes:
    ttl = b"" if options.ttl is None else repr(float(options.ttl)).encode()
    return b"%d %s" % (options.size, ttl)


def options_of(text: bytes, max_bytes) -> Options:
    """The options ``options_text`` wrote (ValueError if not)."""
    size, _, ttl = text.partition(b" ")
    return Options(int(size), float(ttl) if ttl else None, max_bytes)


def position_of(payload: bytes):
    """The ``(epoch, offset)`` a positioned payload carries first (None if none)."""
    info = payload[0] & 31 if payload and payload[0] >> 5 == 5 else 31
    if info > 27:
        return None
    decoder = cbor2.CBORDecoder(io.BytesIO(payload[1 if info < 24 else 1 + (1 << info - 24):]))
    try:
        key, epoch, offset_key, offset = (decoder.decode() for _ in range(4))
    except cbor2.CBORDecodeError:
        return None
    if (key, offset_key) != ("epoch", "offset") or type(offset) is not int:
        return None
    return epoch, offset


class Store:
    """The Redis side of bcast history and presence: each call takes the
    command connection and returns a Deferred of Redis's answer."""

    def __init__(self, bus):
        self.bus = bus
        self.histories = bus.key(b"bcast-histories")
        self._alive = bus.key(b"alive:")

    def _keys(self, channel):
        bus = self.bus
        return [bus.key(b"bcast-meta:%d" % channel), bus.key(b"bcast-history:%d" % channel),
                self.histories]

    def _run(self, protocol, channel, action, *args):
        return protocol.eval(_HISTORY, self._keys(channel),
                             [action, b"%d" % channel, new_epoch(), *args])

    def create(self, protocol, channel, options):
        return self._run(protocol, channel, b"create", options_text(options))

    def keep(self, protocol, channel, options):
        """(At sync.) The channel's options, unless Redis has some."""
        return protocol.execute_command(b"HSETNX", self.histories, b"%d" % channel,
                                        options_text(options))

    def publish(self, protocol, channel, payload, max_bytes, options, pubsub_name):
        """A Deferred of the send's offset."""
        d = self._run(protocol, channel, b"publish", payload, max_bytes, options_text(options),
                      pubsub_name)
        return d.addCallback(int)

    def read(self, protocol, channel, after, limit):
        """A Deferred of ``(epoch, top, oldest held, [(offset, payload), ...])``."""
        d = self._run(protocol, channel, b"read", after, limit)
        return d.addCallback(_position)

    def lookup(self, protocol, channel, ids):
        """A Deferred of ``[whether the set ids has the channel, its options or None]``."""
        text = b"%d" % channel
        d = DeferredList([protocol.execute_command(b"SISMEMBER", ids, text),
                          protocol.execute_command(b"HGET", self.histories, text)],
                         fireOnOneErrback=True, consumeErrors=True)
        return d.addCallback(lambda results: [value for _, value in results])

    def all_histories(self, protocol):
        return protocol.execute_command(b"HGETALL", self.histories)

    # Presence.

    def _consumers(self, channel):
        return self.bus.key(b"presence-consumers:%d" % channel)

    def _subscriptions(self, channel, consumer=b""):
        return self.bus.key(b"presence:%d:" % channel, consumer)

    def join(self, protocol, channel, handler, info):
        """(The hash first: a consumer in the set without one is dropped.)"""
        consumer, mine = self.bus.consumer, self._subscriptions(channel, self.bus.consumer)
        return DeferredList([
            protocol.execute_command(b"HSET", mine, b"%d" % handler, info or b""),
            protocol.execute_command(b"PEXPIRE", mine, self._ttl()),
            protocol.execute_command(b"SADD", self._consumers(channel), consumer),
            protocol.execute_command(b"PEXPIRE", self._consumers(channel), self._ttl())],
            fireOnOneErrback=True, consumeErrors=True)

    def renew(self, protocol, channels):
        """Keep this process's subscriptions on ``channels`` (and the sets of
        consumers) from expiring: what a process that died recorded goes by
        itself ``consumer_timeout`` later, as its ``alive:`` key does."""
        ttl = self._ttl()
        return DeferredList([protocol.execute_command(b"PEXPIRE", key, ttl)
                             for channel in channels
                             for key in (self._subscriptions(channel, self.bus.consumer),
                                         self._consumers(channel))],
                            fireOnOneErrback=True, consumeErrors=True)

    def _ttl(self):
        return int(self.bus.consumer_timeout * 1000)

    def leave(self, protocol, channel, handler):
        return protocol.execute_command(b"HDEL", self._subscriptions(channel, self.bus.consumer),
                                        b"%d" % handler)

    def forget(self, protocol, channel):
        """This process's subscriptions on the channel, all of them."""
        return protocol.execute_command(b"DEL", self._subscriptions(channel, self.bus.consumer))

    def presence(self, protocol, channel):
        """A Deferred of ``{"count": n, "members": [info, ...]}``."""
        d = protocol.eval(_PRESENCE, [self._consumers(channel)],
                          [self._alive, self._subscriptions(channel), MAX_MEMBERS])
        return d.addCallback(lambda reply: {"count": int(reply[0]), "members": list(reply[1])})


def _position(reply):
    epoch, top, oldest, flat = reply
    entries = [(int(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]
    return epoch.decode(), int(top), int(oldest), entries
