"""The process-wide broadcast channels behind the ``bcast`` Lua module.

Channels and subscriptions may be touched from any thread (standalone
instances run in their own); frames are written on the reactor thread. A
message is framed once and written to every subscriber; a subscriber that
reads slowly only grows its own transport buffer, so it delays no one, up to
its service's ``max_outbound_buffer`` (then it is closed 1008, see
:mod:`lapps.protocols.backpressure`).
"""

import threading

from autobahn.websocket.protocol import PreparedMessage
from twisted.application.service import Service
from twisted.python.threadable import isInIOThread

from lapps import metrics

#: Bytes of broadcasts from standalone threads waiting for the reactor, at most
#: (one broadcast of any size goes when none waits).
MAX_BEHIND = 8 * 1024 * 1024


class Backlog:
    """Bytes handed on and not yet through, counted from any thread. A
    message is admitted while the bytes waiting, with it, stay within
    ``limit``, or when none wait: so a message of any size still goes."""

    __slots__ = ("limit", "waiting", "_lock")

    def __init__(self, limit):
        self.limit, self.waiting, self._lock = limit, 0, threading.Lock()

    def admit(self, size) -> bool:
        with self._lock:
            if self.waiting and self.waiting + size > self.limit:
                return False
            self.waiting += size
            return True

    def through(self, size):
        with self._lock:
            self.waiting -= size


class Broadcasts(Service):
    """Channel id → subscribed handlers, and each handler's channels, so a
    closed connection leaves all of them at once."""

    name = "bcast"

    def __init__(self, connections, reactor):
        self._connections, self._reactor = connections, reactor
        self._lock = threading.Lock()
        self._channels = {}
        self._memberships = {}
        self._behind = Backlog(MAX_BEHIND)  # published from threads, not yet on the reactor
        metrics.watch_broadcasts(self)

    def exists(self, channel):
        return channel in self._channels

    def create(self, channel):
        with self._lock:
            self._channels.setdefault(channel, set())
        return True

    def subscribe(self, channel, handler):
        with self._lock:
            subscribers = self._channels.get(channel)
            if subscribers is None:
                return False, b"Broadcast with id %d is not found" % channel
            if handler not in self._connections:
                return False, b"no open connection with this handler"
            subscribers.add(handler)
            self._memberships.setdefault(handler, set()).add(channel)
        return True

    def unsubscribe(self, channel, handler):
        with self._lock:
            subscribers = self._channels.get(channel)
            if subscribers is None:
                return False, b"Broadcast with id %d is not found" % channel
            subscribers.discard(handler)
            self._memberships.get(handler, set()).discard(channel)
        return True

    def subscribers(self, channel):
        with self._lock:
            return frozenset(self._channels.get(channel, ()))

    def drop(self, handler):
        """A connection closed: it leaves every channel."""
        with self._lock:
            for channel in self._memberships.pop(handler, ()):
                self._channels[channel].discard(handler)

    def publish(self, channel, payload: bytes):
        """Fan ``payload`` out to the channel's subscribers: True, or
        ``(False, why)`` when the standalone threads are more than
        :data:`MAX_BEHIND` bytes ahead of the reactor (a producer faster
        than the reactor is told, not buffered; see :mod:`lapps.bus`)."""
        if isInIOThread():
            self._deliver(channel, payload)
            return True
        if not self._behind.admit(len(payload)):
            return False, b"bcast is behind: %d bytes of broadcasts are still waiting " \
                          b"for the reactor" % self._behind.waiting
        self._reactor.callFromThread(self._handed_over, channel, payload)
        return True

    def _handed_over(self, channel, payload):
        self._behind.through(len(payload))
        self._deliver(channel, payload)

    def _deliver(self, channel, payload):
        frame = PreparedMessage(payload, True, False, True)
        connections = self._connections
        for handler in self.subscribers(channel):
            connection = connections.get(handler)
            if connection is not None and connection.state == connection.STATE_OPEN:
                connection.sendPreparedMessage(frame)
