"""A queue whose entries live in another process (the host bus's
supervisor, or Redis), as one process sees it.

The other side hands this process entries, each with an id; they wait in a
buffer here (the local queue's items, as ``(id, entry)``) for this
process's receivers, who compete for them exactly as on the local bus
(:class:`lapps.bus.local.mqr.Queue`'s waiters, ``forget``, ``pass_on``).
An entry is acknowledged to the other side once its receiver is done with
it: a standalone thread when it next asks the same queue (or at stop), a
reactive instance at the end of the reactor turn that received it (its
callback returned or suspended). Until then the other side keeps it, so an
entry taken by a process that dies goes to another one.

A backend subclasses :class:`RemoteQueue` and says how to post, how to
fetch at once (``try_recv``), how to keep entries coming while receivers
wait (``_read``) and how to send acknowledgements (``_send_acks``).
"""

import collections
import threading

from twisted.python.threadable import isInIOThread

from lapps.bus.local import mqr as local
from lapps.bus.entries import PENDING

#: What ``_take_buffered`` returns when the bus is unavailable.
UNAVAILABLE = object()


class RemoteQueue(local.Queue):
    """See the module docstring. ``queues`` (the backend's ``mqr`` service)
    has the limits; ``bus`` has ``available``, ``problem()``,
    ``call(function, *args)`` (on the reactor thread) and ``reactor``."""

    def __init__(self, name, queues, bus):
        super().__init__(name, queues.max_queue, queues.max_queue_bytes)
        self.bus = bus
        self.consuming = False            # a receiver here has asked
        self.taken = 0                    # entries receivers here have taken from the buffer
        self._held = {}                   # thread id -> ids it took, acknowledged at its next take
        self._acks = []                   # ids to acknowledge
        self._flushing = False            # a flush of _acks is scheduled or running

    def take(self, done=None):
        """A buffered entry, or None; with ``done``, when none is buffered:
        PENDING, and ``done(FETCHED)`` once what the other side has queued
        is buffered (or ``done((None, why))``)."""
        entry = self._take_buffered()
        if entry is not None or done is None:
            return entry
        if not self.bus.available:
            return None, self.bus.problem()
        self.bus.call(self._fetch_now, done)
        return PENDING

    def take_or_wait(self, waiter):
        entry = self._take_buffered(waiter)
        if entry is UNAVAILABLE:
            return None, self.bus.problem()
        if entry is None:
            self.bus.call(self._read)
        return entry

    def _take_buffered(self, waiter=None):
        """The oldest buffered entry (held for its receiver), or None after
        registering ``waiter``, or UNAVAILABLE instead while the bus is (the
        bus going down wakes the waiters: none may register after that).
        First, what this thread took before is done."""
        self.consuming = True
        on_reactor = isInIOThread()
        thread = None if on_reactor else threading.get_ident()
        with self._lock:
            done_with = self._held.pop(thread, None)
            if self._items:
                entry_id, entry = self._items.popleft()
                self.taken += 1
                if on_reactor:
                    self._acks.append(entry_id)
                else:
                    self._held[thread] = [entry_id]
            else:
                entry_id = entry = None
                if waiter is not None and not self.bus.available:
                    entry = UNAVAILABLE
                elif waiter is not None and not waiter.registered:
                    waiter.registered = True
                    self._waiters.append(waiter)
            if done_with:
                self._acks.extend(done_with)
            flush = bool(done_with or on_reactor and entry_id is not None) and not self._flushing
            if flush:
                self._flushing = True
        if flush:  # on the reactor: the next turn, after the receiving callback
            if on_reactor:
                self.bus.reactor.callLater(0, self._flush)
            else:
                self.bus.reactor.callFromThread(self._flush)
        return entry

    def release_all(self):
        """At stop: what every thread took is done."""
        with self._lock:
            for ids in self._held.values():
                self._acks.extend(ids)
            self._held.clear()
        return self._flush()

    def _flush(self):
        """Acknowledge what receivers are done with (on the reactor); a
        Deferred or None."""
        with self._lock:
            ids, self._acks = self._acks, []
            self._flushing = False
        if not ids:
            return None
        return self._send_acks(ids)

    def requeue_acks(self, ids):
        """Acknowledgements that could not be sent: again at the next flush."""
        with self._lock:
            self._acks[:0] = ids

    def arrived(self, entries, first=False):
        """Buffer ``(id, entry)`` pairs handed over (in front of what is
        buffered when ``first``: entries another receiver had) and wake a
        waiter for each."""
        with self._lock:
            if first:
                self._items.extendleft(reversed(entries))
            else:
                self._items.extend(entries)
            woken = []
            while self._waiters and len(woken) < len(self._items):
                waiter = self._waiters.popleft()
                waiter.registered = False
                woken.append(waiter)
        for waiter in woken:
            waiter.wake()

    def buffered_ids(self):
        """Take every buffered entry back out (at stop): their ids."""
        with self._lock:
            ids = [entry_id for entry_id, _ in self._items]
            self._items.clear()
        return ids

    def bus_down(self):
        """Wake every waiter: it finds the bus unavailable and says so."""
        with self._lock:
            woken, self._waiters = list(self._waiters), collections.deque()
            for waiter in woken:
                waiter.registered = False
        for waiter in woken:
            waiter.wake()

    def shown(self):
        return self.name.decode("utf-8", "replace")

    # What a backend provides (each runs on the reactor thread).

    def _fetch_now(self, done):
        """Buffer what the other side has queued, then ``done(FETCHED)``."""
        raise NotImplementedError

    def _read(self):
        """While receivers here wait, keep entries coming."""
        raise NotImplementedError

    def _send_acks(self, ids):
        """Acknowledge ``ids``; ``requeue_acks`` those that could not be."""
        raise NotImplementedError
