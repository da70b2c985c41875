"""The process-wide broadcast channels behind the ``bcast`` Lua module.

Channels and subscriptions may be touched from any thread (standalone
instances run in their own); frames are written on the reactor thread. A
message is framed once and written to every subscriber; a subscriber that
reads slowly only grows its own transport buffer, so it delays no one, up to
its service's ``max_outbound_buffer`` (then it is closed 1008, see
:mod:`lapps.protocols.backpressure`).

A channel created with history options (:mod:`lapps.bus.history`) also
holds its last messages here, numbers its sends, and delivers them in
that order; a subscriber that gives a position first gets what it missed.
Every subscription counts in ``presence``; one given an ``info`` string is
listed there.
"""

import collections
import threading

from autobahn.websocket.protocol import PreparedMessage
from twisted.application.service import Service
from twisted.python.threadable import isInIOThread

from lapps import metrics
from lapps.bus.history import MAX_LIMIT, MAX_MEMBERS, Held, Position, Recovery

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
    closed connection leaves all of them at once. History channels also
    have their held messages (``_held``), each subscriber's *floor* (the
    offset after which it gets live messages), the subscribers still
    waiting for what they missed (``_recovering``: what came live
    meanwhile) and the messages numbered but not yet delivered
    (``_outbox``, delivered in offset order on the reactor)."""

    name = "bcast"

    def __init__(self, connections, reactor, history_max_bytes):
        self._connections, self._reactor = connections, reactor
        self.history_max_bytes = history_max_bytes
        self._lock = threading.Lock()
        self._channels = {}
        self._memberships = {}
        self._info = {}        # channel -> {handler: presence info}
        self._held = {}        # channel -> Held (history channels only)
        self._floors = {}      # channel -> {handler: offset}
        self._recovering = {}  # channel -> {handler: [(offset, payload)] that came live}
        self._outbox = collections.deque()  # (channel, offset, payload), numbered here
        self._behind = Backlog(MAX_BEHIND)  # published from threads, not yet on the reactor
        metrics.watch_broadcasts(self)

    def exists(self, channel):
        return channel in self._channels

    def has_history(self, channel):
        return channel in self._floors

    def create(self, channel, options=None):
        """Make the channel; with ``options`` (:class:`~lapps.bus.history.Options`),
        make it or keep it a history channel with those options. A create
        without options leaves a history channel as it is."""
        with self._lock:
            self._channels.setdefault(channel, set())
            if options is not None:
                self._keep_history(channel, options)
        return True

    def _keep_history(self, channel, options):
        """(Under the lock.) The channel's history options are ``options``."""
        self._floors.setdefault(channel, {})
        held = self._held.get(channel)
        if held is None:
            self._held[channel] = Held(options)
        else:
            held.reconfigure(options)

    def subscribe(self, channel, handler, since=None, info=None, done=None):
        """True; with ``since`` (an ``(epoch, offset)``), ``(True, Recovery)``
        once what was missed is on its way; ``(False, why)`` if the channel
        or the connection is unknown. A subclass whose history lives
        elsewhere may return PENDING and answer through ``done``."""
        with self._lock:
            subscribers = self._channels.get(channel)
            if subscribers is None:
                return False, b"Broadcast with id %d is not found" % channel
            if handler not in self._connections:
                return False, b"no open connection with this handler"
            subscribers.add(handler)
            self._memberships.setdefault(handler, set()).add(channel)
            self._info.setdefault(channel, {})[handler] = info
            floors = self._floors.get(channel)
            if floors is not None:
                floors[handler] = self._top(channel)
                if since is not None:  # what comes live waits until what it missed is sent
                    self._recovering.setdefault(channel, {})[handler] = []
        self._joined(channel, handler, info)
        if since is None:
            return True
        if floors is None:
            return True, Recovery(False, "", 0)
        return self._recover(channel, handler, since, done)

    def _top(self, channel):
        """(Under the lock.) The newest offset this process knows of."""
        return self._held[channel].top

    def _recover(self, channel, handler, since, done):
        """Send ``handler`` what it missed since ``since``: here, from the
        held messages (on the reactor, in order with the live ones)."""
        with self._lock:
            recovery, missed = self._held[channel].recover(*since)
        self._call(self._recovered, channel, handler, missed, recovery.offset)
        return True, recovery

    def _recovered(self, channel, handler, missed, floor):
        """(On the reactor.) Write what ``handler`` missed, then what came
        live while it waited and is newer, and let live messages through."""
        with self._lock:
            waiting = self._recovering.get(channel, {}).pop(handler, None)
            if waiting is None:  # it left meanwhile
                return
            last = max(floor, missed[-1][0]) if missed else floor
            newer = [(o, p) for o, p in waiting if o > last]
            self._floors[channel][handler] = newer[-1][0] if newer else last
        self._write(handler, [p for _, p in missed] + [p for _, p in newer])

    def _call(self, function, *args):
        if isInIOThread():
            function(*args)
        else:
            self._reactor.callFromThread(function, *args)

    def _joined(self, channel, handler, info):
        """A subscription began (a bus shared with others tells them)."""

    def _left(self, channel, handler):
        """A subscription ended."""

    def unsubscribe(self, channel, handler):
        with self._lock:
            subscribers = self._channels.get(channel)
            if subscribers is None:
                return False, b"Broadcast with id %d is not found" % channel
            subscribed = handler in subscribers
            subscribers.discard(handler)
            self._memberships.get(handler, set()).discard(channel)
            self._forget(channel, handler)
        if subscribed:
            self._left(channel, handler)
        return True

    def _forget(self, channel, handler):
        """(Under the lock.) What the channel keeps about ``handler``."""
        for table in (self._info, self._floors, self._recovering):
            table.get(channel, {}).pop(handler, None)

    def subscribers(self, channel):
        with self._lock:
            return frozenset(self._channels.get(channel, ()))

    def drop(self, handler):
        """A connection closed: it leaves every channel."""
        with self._lock:
            channels = self._memberships.pop(handler, ())
            for channel in channels:
                self._channels[channel].discard(handler)
                self._forget(channel, handler)
        for channel in channels:
            self._left(channel, handler)

    def presence(self, channel, done=None):
        """``{"count": subscriptions, "members": [info, ...]}`` (at most
        :data:`~lapps.bus.history.MAX_MEMBERS` members), or ``(False, why)``."""
        with self._lock:
            subscribers = self._channels.get(channel)
            if subscribers is None:
                return False, b"Broadcast with id %d is not found" % channel
            members = [info for info in self._info.get(channel, {}).values() if info]
            return {"count": len(subscribers), "members": members[:MAX_MEMBERS]}

    def history(self, channel, after=0, limit=None, done=None):
        """``(Position, [(offset, payload), ...])`` of the held messages
        after ``after`` (at most ``limit``), or ``(False, why)``."""
        with self._lock:
            held = self._held.get(channel)
            if held is None:
                return self._not_history(channel)
            return Position(held.epoch, held.top), held.after(after, limit or MAX_LIMIT)

    def _not_history(self, channel):
        if channel not in self._channels:
            return False, b"Broadcast with id %d is not found" % channel
        return False, b"Broadcast with id %d keeps no history" % channel

    def publish(self, channel, payload: bytes, done=None):
        """Fan ``payload`` out to the channel's subscribers: True (on a
        history channel ``(True, offset)``), or ``(False, why)`` when the
        standalone threads are more than :data:`MAX_BEHIND` bytes ahead of
        the reactor (a producer faster than the reactor is told, not
        buffered; see :mod:`lapps.bus`)."""
        on_reactor = isInIOThread()
        if not on_reactor and not self._behind.admit(len(payload)):
            return False, b"bcast is behind: %d bytes of broadcasts are still waiting " \
                          b"for the reactor" % self._behind.waiting
        if channel in self._held:
            return self._number(channel, payload, on_reactor)
        if on_reactor:
            self._deliver(channel, payload)
        else:
            self._reactor.callFromThread(self._handed_over, channel, payload)
        return True

    def _number(self, channel, payload, on_reactor):
        """Hold, number and queue a send on a history channel here."""
        with self._lock:
            offset, framed = self._held[channel].append(payload)
            self._outbox.append((channel, offset, framed, len(payload), on_reactor))
            if not on_reactor:
                self._reactor.callFromThread(self._deliver_outbox)
        if on_reactor:
            self._deliver_outbox()
        return True, offset

    def _deliver_outbox(self):
        """(On the reactor.) Every numbered send, in offset order."""
        while True:
            with self._lock:
                if not self._outbox:
                    return
                channel, offset, framed, size, from_reactor = self._outbox.popleft()
            if not from_reactor:
                self._behind.through(size)
            self._deliver(channel, framed, offset)

    def _handed_over(self, channel, payload):
        self._behind.through(len(payload))
        self._deliver(channel, payload)

    def _deliver(self, channel, payload, offset=None):
        """(On the reactor.) ``payload`` to the channel's subscribers here;
        with an ``offset``, to those past their floor, and into the waiting
        list of those still recovering."""
        if offset is None:
            self._write_all(self.subscribers(channel), PreparedMessage(payload, True, False, True))
            return
        with self._lock:
            floors = self._floors.get(channel, {})
            recovering = self._recovering.get(channel, {})
            ready = []
            for handler in self._channels.get(channel, ()):
                waiting = recovering.get(handler)
                if waiting is not None:
                    waiting.append((offset, payload))
                elif floors.get(handler, 0) < offset:
                    ready.append(handler)
        self._write_all(ready, PreparedMessage(payload, True, False, True))

    def _write_all(self, handlers, frame):
        connections = self._connections
        for handler in handlers:
            connection = connections.get(handler)
            if connection is not None and connection.state == connection.STATE_OPEN:
                connection.sendPreparedMessage(frame)

    def _write(self, handler, payloads):
        connection = self._connections.get(handler)
        if connection is not None and connection.state == connection.STATE_OPEN:
            for payload in payloads:
                connection.sendPreparedMessage(PreparedMessage(payload, True, False, True))
