"""bcast on the host bus: a send goes to the supervisor's hub, which hands
it to every worker, this one included; each worker fans it out to its own
subscribers as :class:`~lapps.bus.local.bcast.Broadcasts` does, framing it
once. So every worker delivers broadcasts in the order the hub read them:
the send order of each sender, as each worker sends on one link, in order.
Subscribing stays local and takes effect at once; a channel created in any
worker exists in all of them (the hub tells each one).

A send is not confirmed (like a frame written to a socket): it returns
false only when the link is down, or when the supervisor has not read
:data:`MAX_IN_FLIGHT` bytes of this worker's messages, or standalone
threads are that far ahead of the reactor, so a producer faster than the
host is told, not buffered.
"""

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
        link.handlers[wire.CREATE] = self._learn
        link.handlers[wire.BROADCAST] = self._arrived

    def create(self, channel):
        with self._lock:
            new = channel not in self._channels
            self._channels.setdefault(channel, set())
        if new:
            self.link.call(self.link.send, wire.channel_message(wire.CREATE, channel))
        return True

    def publish(self, channel, payload: bytes):
        """True once handed to the link, or ``(False, why)``."""
        link = self.link
        if not link.available:
            return False, link.problem()
        if link.behind() > MAX_IN_FLIGHT or not self._in_flight.admit(len(payload)):
            return False, b"the bus is behind: the supervisor has not taken %d bytes of " \
                          b"broadcasts yet" % max(link.behind(), self._in_flight.waiting)
        link.call(self._send, wire.channel_message(wire.BROADCAST, channel, payload), len(payload))
        return True

    def _send(self, message, size):
        self._in_flight.through(size)
        self.link.send(message)

    def _learn(self, message):
        with self._lock:
            self._channels.setdefault(wire.channel_of(message), set())

    def _arrived(self, message):
        self._deliver(wire.channel_of(message), message[9:])
