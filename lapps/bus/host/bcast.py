"""bcast on the host bus: a send goes to the supervisor's hub, which hands
it to every worker, this one included; each worker fans it out to its own
subscribers as :class:`~lapps.bus.local.bcast.Broadcasts` does, framing it
once. So every worker delivers broadcasts in the order the hub read them:
the send order of each sender, as each worker sends on one link, in order.
Subscribing stays local and takes effect at once; a channel created in any
worker exists in all of them (the hub tells each one).

A history channel's messages are held and numbered by the hub; a send on
one waits for the hub's answer (its offset), and a subscribe with a
position, ``history`` and ``presence`` ask the hub.

A plain send is not confirmed (like a frame written to a socket): it returns
false only when the link is down, or when the supervisor has not read
:data:`MAX_IN_FLIGHT` bytes of this worker's messages, or standalone
threads are that far ahead of the reactor, so a producer faster than the
host is told, not buffered.
"""

import cbor2

from lapps.bus.entries import PENDING
from lapps.bus.history import MAX_LIMIT, Position, Recovery, recovery
from lapps.bus.host import wire
from lapps.bus.local.bcast import Backlog, Broadcasts

#: Bytes of broadcasts not yet taken by the supervisor, at most.
MAX_IN_FLIGHT = 32 * 1024 * 1024


class HostBroadcasts(Broadcasts):
    """The bcast channels on the host bus (same interface as the local ones)."""

    def __init__(self, connections, reactor, link, history_max_bytes):
        super().__init__(connections, reactor, history_max_bytes)
        self.link = link
        self._in_flight = Backlog(MAX_IN_FLIGHT)  # from threads, not yet on the link
        self._tops = {}  # history channel -> the newest offset seen here
        link.handlers[wire.CREATE] = self._learn
        link.handlers[wire.BROADCAST] = self._arrived
        link.handlers[wire.NUMBERED] = self._numbered
        for kind in (wire.PUBLISHED, wire.HELD_ANSWER, wire.PRESENCE_ANSWER):
            link.handlers[kind] = self._answered

    def create(self, channel, options=None):
        with self._lock:
            new = channel not in self._channels
            self._channels.setdefault(channel, set())
            if options is not None:
                self._keep_history(channel, options)
        if new or options is not None:
            self.link.call(self.link.send, wire.channel_message(
                wire.CREATE, channel, wire.history_options(options)))
        return True

    def _keep_history(self, channel, options):
        self._floors.setdefault(channel, {})  # (the hub holds the messages)

    def _top(self, channel):
        return self._tops.get(channel, 0)

    def _ask(self, kind, channel, body, answered, done):
        """Ask the hub (a request about ``channel``): PENDING, then
        ``done(answered(answer message))``, or ``(False, why)``."""
        link = self.link
        if not link.available:
            return False, link.problem()

        def send():
            if not link.available:  # (lost since: nothing would answer)
                done((False, link.problem()))
                return
            number = link.expect(lambda message: done(answered(message)), done)
            link.send(wire.request(kind, number, wire.U64.pack(channel) + body))

        link.call(send)
        return PENDING

    def _answered(self, message):
        self.link.answer(message, message)

    def _recover(self, channel, handler, since, done):
        def answered(message):
            answer = wire.read_held_answer(message)
            if answer is None:  # (the hub holds none: live from now on)
                self._recovered(channel, handler, [], 0)
                return True, Recovery(False, "", 0)
            epoch, first, top, entries = answer
            recovered = recovery(epoch, first, top, *since)
            self._recovered(channel, handler, entries if recovered else [], top)
            return True, Recovery(recovered, epoch, top)

        outcome = self._ask(wire.HELD, channel, wire.HELD_QUERY.pack(since[1], MAX_LIMIT),
                            answered, done)
        if outcome is not PENDING:
            self.unsubscribe(channel, handler)
        return outcome

    def history(self, channel, after=0, limit=None, done=None):
        if channel not in self._floors:
            return self._not_history(channel)

        def answered(message):
            answer = wire.read_held_answer(message)
            if answer is None:
                return self._not_history(channel)
            epoch, _, top, entries = answer
            return Position(epoch, top), entries

        return self._ask(wire.HELD, channel, wire.HELD_QUERY.pack(after, limit or MAX_LIMIT),
                         answered, done)

    def presence(self, channel, done=None):
        if channel not in self._channels:
            return False, b"Broadcast with id %d is not found" % channel

        def answered(message):
            count, members = cbor2.loads(message[5:])
            return {"count": count, "members": members}

        return self._ask(wire.PRESENCE, channel, b"", answered, done)

    def _joined(self, channel, handler, info):
        self.link.call(self.link.send, wire.channel_message(
            wire.JOIN, channel, wire.U64.pack(handler) + (info or b"")))

    def _left(self, channel, handler):
        self.link.call(self.link.send, wire.channel_message(
            wire.LEAVE, channel, wire.U64.pack(handler)))

    def publish(self, channel, payload: bytes, done=None):
        """True once handed to the link, or ``(False, why)``; on a history
        channel PENDING, then ``done((True, offset))``."""
        link = self.link
        if not link.available:
            return False, link.problem()
        if link.behind() > MAX_IN_FLIGHT or not self._in_flight.admit(len(payload)):
            return False, b"the bus is behind: the supervisor has not taken %d bytes of " \
                          b"broadcasts yet" % max(link.behind(), self._in_flight.waiting)
        if channel in self._floors and done is not None:
            return self._publish_held(channel, payload, done)
        link.call(self._send, wire.channel_message(wire.BROADCAST, channel, payload), len(payload))
        return True

    def _publish_held(self, channel, payload, done):
        def settled(outcome):
            self._in_flight.through(len(payload))
            done(outcome)

        def answered(message):
            offset = wire.U64.unpack_from(message, 5)[0]
            return (True, offset) if offset else True

        outcome = self._ask(wire.PUBLISH, channel, payload, answered, settled)
        if outcome is not PENDING:
            self._in_flight.through(len(payload))
        return outcome

    def _send(self, message, size):
        self._in_flight.through(size)
        self.link.send(message)

    def _learn(self, message):
        channel = wire.channel_of(message)
        with self._lock:
            self._channels.setdefault(channel, set())
            if wire.read_history_options(message) is not None:
                self._floors.setdefault(channel, {})

    def _numbered(self, message):
        channel, offset = wire.channel_of(message), wire.U64.unpack_from(message, 9)[0]
        self._tops[channel] = offset
        self._deliver(channel, message[17:], offset)

    def _arrived(self, message):
        self._deliver(wire.channel_of(message), message[9:])
