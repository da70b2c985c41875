"""The process-wide named message queues behind the ``mqr`` Lua module.

A queue is created on first use of its name and shared by every service and
instance. Posts and receives come from standalone threads and from the
reactor thread, so a queue is a deque and a list of waiting receivers under
one lock. Receivers compete: each entry is taken by exactly one of them, in
FIFO order. A queue holds at most ``max_queue`` entries; a post to a full
queue is refused and leaves what is queued untouched.

A receiver that finds its queue empty registers a *waiter* and is woken by
the next post (one waiter per post, oldest first); it then takes an entry
itself, so an entry is never handed to a receiver that has given up. A
woken waiter that will not take (it is stopping) passes the wake-up on.
"""

import collections
import threading

import cbor2
from twisted.application.service import Service
from twisted.logger import Logger

from lapps import metrics

log = Logger(namespace="lapps.mqr")

#: The default of the server key ``mqr.max_queue``.
DEFAULT_MAX_QUEUE = 10000

#: What a queue operation returns when its answer comes later, through the
#: ``done`` callable it was given (on the reactor thread). The local queues
#: always answer at once; the Redis bus (:mod:`lapps.bus.redis_mqr`) may not.
PENDING = object()
#: What a queue's ``take(done)`` calls ``done`` with once it has fetched what
#: is queued (then a plain ``take()`` takes from that).
FETCHED = object()

_QUEUE_FULL = (False, b"queue full")


class Json:
    """A queued JSON value (Python form), to be rebuilt as nljson by the
    receiver, and the size of its CBOR form."""

    __slots__ = ("value", "size")

    def __init__(self, value, size):
        self.value, self.size = value, size


def encode(entry) -> bytes:
    """An entry as bytes, for a bus that carries bytes (Redis): a type tag
    and the value, so that it comes back as the same Python type."""
    kind = type(entry)
    if kind is bytes:
        return b"s" + entry
    if kind is Json:
        return b"j" + cbor2.dumps(entry.value)
    if kind is bool:
        return b"t" if entry else b"f"
    return (b"i%d" % entry) if kind is int else b"d" + repr(entry).encode()


def decode(data: bytes):
    """The entry :func:`encode` made (ValueError if ``data`` is not one)."""
    tag, body = data[:1], data[1:]
    if tag == b"s":
        return body
    if tag == b"j":
        try:
            return Json(cbor2.loads(body), len(body))
        except cbor2.CBORDecodeError as e:
            raise ValueError(f"bad CBOR: {e}") from None
    if tag in (b"t", b"f"):
        return tag == b"t"
    if tag == b"i":
        return int(body)
    if tag == b"d":
        return float(body)
    raise ValueError(f"unknown entry tag {tag!r}")


class Queue:
    """One named, bounded FIFO queue. A receiver that finds it empty waits
    as a *waiter*: an object with a ``registered`` flag (kept by the queue)
    and a ``wake()`` method that may be called from any thread."""

    def __init__(self, name, limit):
        self.name, self.limit = name, limit
        self._lock = threading.Lock()
        self._items = collections.deque()
        self._waiters = collections.deque()

    def __len__(self):
        return len(self._items)

    def post(self, entry, done=None):
        """Append ``entry`` (never None) and wake one waiter: True, or
        ``(False, b"queue full")``. (Never PENDING, so ``done`` is unused.)"""
        with self._lock:
            if len(self._items) >= self.limit:
                return _QUEUE_FULL
            self._items.append(entry)
            if not self._waiters:
                return True
            waiter = self._waiters.popleft()
            waiter.registered = False
        waiter.wake()
        return True

    def take(self, done=None):
        """The oldest entry, or None; never waits (nor uses ``done``)."""
        with self._lock:
            return self._items.popleft() if self._items else None

    def take_or_wait(self, waiter):
        """The oldest entry, or None after registering ``waiter`` to be woken
        by the next post."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            if not waiter.registered:
                waiter.registered = True
                self._waiters.append(waiter)
            return None

    def forget(self, waiter):
        """``waiter`` no longer waits (a no-op when a post already woke it)."""
        with self._lock:
            if waiter.registered:
                waiter.registered = False
                self._waiters.remove(waiter)

    def pass_on(self):
        """A woken waiter will not take: wake the next one if there is an entry."""
        with self._lock:
            if not (self._items and self._waiters):
                return
            waiter = self._waiters.popleft()
            waiter.registered = False
        waiter.wake()


class MessageQueues(Service):
    """The named queues of the process (the ``mqr`` service of the tree)."""

    name = "mqr"

    def __init__(self, max_queue=DEFAULT_MAX_QUEUE):
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._queues = {}
        metrics.watch_queues(self)

    def queue(self, name: bytes) -> Queue:
        """The queue called ``name``, created on first use."""
        queue = self._queues.get(name)
        if queue is None:
            with self._lock:
                queue = self._queues.setdefault(name, Queue(name, self.max_queue))
        return queue

    def stopService(self):
        """Runs after every Lua service has stopped: what is left is dropped."""
        super().stopService()
        for name, queue in sorted(self._queues.items()):
            if len(queue):
                log.info("mqr queue {queue} dropped {count} messages at stop",
                         lapps_event="mqr.dropped", queue=name.decode("utf-8", "replace"),
                         count=len(queue))
