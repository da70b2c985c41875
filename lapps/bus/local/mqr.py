"""The local bus's named message queues (one process), behind the ``mqr``
Lua module.

A queue is created on first use of its name and shared by every service and
instance. Posts and receives come from standalone threads and from the
reactor thread, so a queue is a deque and a list of waiting receivers under
one lock. Receivers compete: each entry is taken by exactly one of them, in
FIFO order. A queue holds at most ``max_queue`` entries and
``max_queue_bytes`` bytes of them (:func:`lapps.bus.entries.size`); a post
to a full queue is refused and leaves what is queued untouched.

A receiver that finds its queue empty registers a *waiter* and is woken by
the next post (one waiter per post, oldest first); it then takes an entry
itself, so an entry is never handed to a receiver that has given up. A
woken waiter that will not take (it is stopping) passes the wake-up on.
"""

import collections
import threading

from twisted.application.service import Service
from twisted.logger import Logger

from lapps import metrics
from lapps.bus.entries import QUEUE_FULL, size

log = Logger(namespace="lapps.mqr")

#: The default of the server key ``mqr.max_queue``.
DEFAULT_MAX_QUEUE = 10000
#: The default of ``mqr.max_queue_bytes``: far above what 10,000 messages
#: of a few KiB take, so the count binds first for them, while 10,000 of
#: 64 KiB no longer take 640 MiB.
DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024


class Queue:
    """One named, bounded FIFO queue. A receiver that finds it empty waits
    as a *waiter*: an object with a ``registered`` flag (kept by the queue)
    and a ``wake()`` method that may be called from any thread."""

    def __init__(self, name, limit, max_bytes):
        self.name, self.limit, self.max_bytes = name, limit, max_bytes
        self.bytes = 0  # the size of what is queued
        self._lock = threading.Lock()
        self._items = collections.deque()
        self._waiters = collections.deque()

    def __len__(self):
        return len(self._items)

    def post(self, entry, done=None):
        """Append ``entry`` (never None) and wake one waiter: True, or
        ``(False, b"queue full")``. (Never PENDING, so ``done`` is unused.)"""
        added = size(entry)
        with self._lock:
            if len(self._items) >= self.limit or self.bytes + added > self.max_bytes:
                return QUEUE_FULL
            self._items.append(entry)
            self.bytes += added
            if not self._waiters:
                return True
            waiter = self._waiters.popleft()
            waiter.registered = False
        waiter.wake()
        return True

    def take(self, done=None):
        """The oldest entry, or None; never waits (nor uses ``done``)."""
        with self._lock:
            return self._pop() if self._items else None

    def take_or_wait(self, waiter):
        """The oldest entry, or None after registering ``waiter`` to be woken
        by the next post."""
        with self._lock:
            if self._items:
                return self._pop()
            if not waiter.registered:
                waiter.registered = True
                self._waiters.append(waiter)
            return None

    def _pop(self):
        """The oldest entry, out (under the lock)."""
        entry = self._items.popleft()
        self.bytes -= size(entry)
        return entry

    def forget(self, waiter) -> bool:
        """``waiter`` no longer waits (a no-op when a post already woke it):
        whether it was still waiting."""
        with self._lock:
            if not waiter.registered:
                return False
            waiter.registered = False
            self._waiters.remove(waiter)
            return True

    def pass_on(self):
        """A woken waiter will not take: wake the next one if there is an entry."""
        with self._lock:
            if not (self._items and self._waiters):
                return
            waiter = self._waiters.popleft()
            waiter.registered = False
        waiter.wake()


class NamedQueues(Service):
    """The ``mqr`` service of a bus: its queues by name, each made on first
    use by ``new_queue(name)``."""

    name = "mqr"

    def __init__(self, max_queue, max_queue_bytes):
        self.max_queue, self.max_queue_bytes = max_queue, max_queue_bytes
        self._lock = threading.Lock()
        self._queues = {}
        metrics.watch_queues(self)

    def queue(self, name: bytes):
        """The queue called ``name``, created on first use."""
        queue = self._queues.get(name)
        if queue is None:
            with self._lock:
                queue = self._queues.setdefault(name, self.new_queue(name))
        return queue


class MessageQueues(NamedQueues):
    """The named queues of the process (the local bus)."""

    def __init__(self, max_queue=DEFAULT_MAX_QUEUE, max_queue_bytes=DEFAULT_MAX_QUEUE_BYTES):
        super().__init__(max_queue, max_queue_bytes)

    def new_queue(self, name):
        return Queue(name, self.max_queue, self.max_queue_bytes)

    def stopService(self):
        """Runs after every Lua service has stopped: what is left is dropped."""
        super().stopService()
        for name, queue in sorted(self._queues.items()):
            if len(queue):
                log.info("mqr queue {queue} dropped {count} messages at stop",
                         lapps_event="mqr.dropped", queue=name.decode("utf-8", "replace"),
                         count=len(queue))
