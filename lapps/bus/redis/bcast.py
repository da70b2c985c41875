"""bcast over Redis: one publish reaches the subscribers of its channel in
every process connected to the same Redis and prefix.

A send is a Redis PUBLISH; each process receives every broadcast on one
pattern subscription, made before the bus counts as available, and fans it
out to its own subscribers as :class:`~lapps.bus.local.bcast.Broadcasts`
does. The local subscribers of the sending process get it back the same
way, so every process delivers broadcasts in the order Redis took them: the
publish order of each publisher, since each process publishes on one
connection, in order. Subscribing stays local and takes effect at once, as
on the local bus: nothing is asked of Redis.

Channel ids are shared: a channel created anywhere exists everywhere. A
create adds the id to a Redis set and announces it on a pub/sub channel;
each process keeps a mirror (the set, read after its subscription is in
place, then the announcements), so ``subscribe`` and ``send`` check a
channel without a round trip. A create made while Redis is gone is added to
the set when it returns.

A send is not confirmed (PUBLISH is fire-and-forget, like a frame written to
a socket): it returns false only when the bus is unavailable, or when more
than :data:`MAX_IN_FLIGHT` bytes of this process's broadcasts are still on
their way to Redis (one of any size goes when none are), so a producer
faster than Redis is told, not buffered.
"""

from twisted.internet.defer import DeferredList
from twisted.logger import Logger

from lapps.bus.local.bcast import Backlog, Broadcasts

log = Logger(namespace="lapps.bus")

#: Bytes of broadcasts sent to Redis and not yet answered, at most.
MAX_IN_FLIGHT = 32 * 1024 * 1024


def _glob_escaped(text: bytes) -> bytes:
    return bytes(b for c in text for b in ((92, c) if c in b"\\*?[]" else (c,)))


class RedisBroadcasts(Broadcasts):
    """The bcast channels on the Redis bus (same interface as the local ones)."""

    def __init__(self, connections, reactor, bus, history_max_bytes):
        super().__init__(connections, reactor, history_max_bytes)
        self.bus = bus
        self._channel = bus.key(b"bcast:")
        self._created = bus.key(b"bcast-created")
        self._ids = bus.key(b"bcast-channels")
        self._in_flight = Backlog(MAX_IN_FLIGHT)
        bus.subscribe_hooks.append(self._subscribe)
        bus.sync_hooks.append(self._sync)

    def create(self, channel):
        with self._lock:
            new = channel not in self._channels
            self._channels.setdefault(channel, set())
        if new:
            self.bus.call(self._announce, channel)
        return True

    def publish(self, channel, payload: bytes):
        """True once handed to the bus, or ``(False, why)``."""
        bus = self.bus
        if not bus.available:
            return False, bus.problem()
        if not self._in_flight.admit(len(payload)):
            return False, b"the bus is behind: %d bytes of broadcasts are still on their " \
                          b"way to Redis" % self._in_flight.waiting
        bus.call(self._send, b"%s%d" % (self._channel, channel), payload)
        return True

    def _send(self, name, payload):
        protocol = self.bus.command.protocol
        if protocol is None:  # lost since publish() looked
            self._landed(None, len(payload))
            return
        protocol.execute_command(b"PUBLISH", name, payload).addBoth(self._landed, len(payload))

    def _landed(self, _, size):
        self._in_flight.through(size)

    def _announce(self, channel):
        protocol = self.bus.command.protocol
        if protocol is None or not self.bus.available:
            return  # _sync adds it when the bus is back
        for command in ((b"SADD", self._ids), (b"PUBLISH", self._created)):
            # a failure means the link is lost: _sync adds the id when it is back
            protocol.execute_command(*command, b"%d" % channel).addErrback(lambda _: None)

    def _subscribe(self, protocol):
        protocol.on_message = self._message
        return DeferredList([protocol.psubscribe([_glob_escaped(self._channel) + b"*"]),
                             protocol.subscribe([self._created])], fireOnOneErrback=True)

    def _sync(self, protocol):
        """After (re)connecting: add the channels created here, then learn
        those created anywhere."""
        with self._lock:
            mine = [b"%d" % channel for channel in self._channels]
        d = protocol.execute_command(b"SADD", self._ids, *mine) if mine else None
        learned = protocol.execute_command(b"SMEMBERS", self._ids)
        learned.addCallback(lambda ids: [self._learn(i) for i in ids])
        return learned if d is None else DeferredList([d, learned], fireOnOneErrback=True)

    def _learn(self, text):
        try:
            channel = int(text)
        except ValueError:
            log.error("bcast: {text!r} in Redis is not a channel id; ignored",
                      lapps_event="bcast.bad_id", text=text)
            return
        with self._lock:
            self._channels.setdefault(channel, set())

    def _message(self, channel, payload):
        if channel == self._created:
            self._learn(payload)
            return
        try:
            channel = int(channel[len(self._channel):])
        except ValueError:
            return  # another name under the pattern: not lapps's
        self._deliver(channel, payload)
