"""mqr on the host bus: the queues live in the supervisor's hub
(:mod:`lapps.bus.host.hub`); a worker sees each as a
:class:`~lapps.bus.remote.RemoteQueue`.

* ``post`` asks the hub, which refuses the entry when the name holds
  ``max_queue`` entries across the host, or the entry would take it over
  ``max_queue_bytes`` ("queue full"); the answer comes back on the link
  (PENDING, then ``done``). True means the hub has it.
* A receiver that finds nothing buffered registers as a waiter, and the
  worker gives the hub credit for up to :data:`PREFETCH` entries (at least
  twice its waiting receivers); the hub hands entries out against it.
  ``try_recv`` asks for one entry at once.
* An entry is acknowledged once its receiver is done with it
  (:mod:`lapps.bus.remote`). What no receiver here takes goes back to the
  hub for the other workers: the credit when the last waiter leaves (a
  receiver that gave up), the entries still buffered once no receiver here
  has taken one for :data:`IDLE` seconds and none waits, and everything at
  stop. (So a busy stream keeps its order per receiver: what goes back is
  what sat unclaimed.)

A worker whose link is lost answers every waiting call with the bus's
problem at once (and ends, see :mod:`lapps.bus.host.link`).
"""

from twisted.logger import Logger

from lapps.bus.entries import FETCHED, PENDING, QUEUE_FULL, decode, encode
from lapps.bus.host import wire
from lapps.bus.local import mqr as local
from lapps.bus.remote import RemoteQueue

log = Logger(namespace="lapps.mqr")

#: How many entries a worker may hold that others cannot have, at most
#: (and at least twice its waiting receivers).
PREFETCH = 32
#: Seconds entries may stay buffered while no receiver here takes any, at
#: most (about: a check runs that long after entries came, and again while
#: receivers keep taking).
IDLE = 0.1


class HostQueue(RemoteQueue):
    """One named queue of the host, as this worker sees it."""

    def __init__(self, queues, name):
        super().__init__(name, queues, queues.link)
        self.queues = queues
        self.asked = 0  # credit given to the hub and not yet used
        self._idle_check = None  # the pending check for entries no one here waits for
        self._taken_seen = 0     # ``taken`` when that check was set

    def post(self, entry, done):
        if not self.bus.available:
            return False, self.bus.problem()
        self.bus.call(self._post, encode(entry), done)
        return PENDING

    def _post(self, data, done):
        number = self.bus.expect(lambda ok: done(True if ok else QUEUE_FULL), done)
        self.bus.send(wire.request(wire.POST, number, wire.named(b"", self.name, data)))

    def _fetch_now(self, done):
        number = self.bus.expect(lambda _: done(FETCHED), lambda failed: done((None, failed[1])))
        self.bus.send(wire.request(wire.FETCH, number, wire.named(b"", self.name)))

    def _read(self):
        """Credit for what the waiting receivers can take."""
        with self._lock:
            waiting, buffered = len(self._waiters), len(self._items)
        if not waiting or not self.bus.available:
            return
        wanted = min(PREFETCH, max(8, 2 * waiting)) - self.asked - buffered
        if wanted > 0:
            self.asked += wanted
            self.bus.send(wire.named(wire.WANT, self.name, wire.I32.pack(wanted)))

    def delivered(self, pairs):
        self.asked = max(0, self.asked - len(pairs))
        entries = []
        for entry_id, data in pairs:
            try:
                entries.append((entry_id, decode(data)))
            except ValueError as e:  # not one lapps wrote: dropped, and acknowledged
                log.error("mqr queue {queue}: entry {id} is not one lapps wrote ({reason}); "
                          "dropped", lapps_event="mqr.bad_entry", queue=self.shown(),
                          id=entry_id, reason=str(e))
                self._send_acks([entry_id])
        self.arrived(entries)
        self._read()
        if self._idle_check is None:
            self._check_idle_later()

    def _check_idle_later(self):
        self._taken_seen = self.taken
        self._idle_check = self.bus.reactor.callLater(IDLE, self._idle)

    def forget(self, waiter):
        """A receiver gave up: once none waits, the hub stops sending here."""
        if super().forget(waiter) and not self._waiters:
            self.bus.call(self._give_back_if_idle)

    def _idle(self):
        self._idle_check = None
        if self.taken != self._taken_seen:  # receivers here are at work: look again later
            self._check_idle_later()
        else:
            self._give_back_if_idle()

    def _give_back_if_idle(self):
        """While no receiver waits here, the credit and what is buffered go
        back to the hub, for the other workers."""
        with self._lock:
            idle = not self._waiters
        if not (idle and self.bus.available):
            return
        back = self.buffered_ids()
        if back or self.asked:
            self.asked = 0
            self.bus.send(wire.named(wire.RELEASE, self.name, wire.ids(back)))

    def _send_acks(self, ids):
        self.bus.send(wire.named(wire.ACK, self.name, wire.ids(ids)))

    def give_back(self):
        """At stop: what every thread took is done; what no receiver took
        goes back to the hub. The number of entries given back."""
        self.release_all()
        back = self.buffered_ids()
        self.bus.send(wire.named(wire.RELEASE, self.name, wire.ids(back)))
        return len(back)


class HostQueues(local.NamedQueues):
    """The named queues on the host bus (the ``mqr`` service of a worker,
    with the interface of :class:`lapps.bus.local.mqr.MessageQueues`)."""

    def __init__(self, link, max_queue, max_queue_bytes):
        super().__init__(max_queue, max_queue_bytes)
        self.link = link
        link.handlers[wire.POSTED] = self._posted
        link.handlers[wire.FETCHED] = self._fetched
        link.handlers[wire.DELIVER] = self._delivered
        link.down_hooks.append(self._down)

    def new_queue(self, name):
        return HostQueue(self, name)

    def _posted(self, message):
        self.link.answer(message, message[5:6] == b"\1")

    def _fetched(self, message):
        self.link.answer(message, True)

    def _delivered(self, message):
        name, offset = wire.name_and_body(message)
        self.queue(name).delivered(wire.read_entries(message, offset))

    def _down(self):
        for queue in list(self._queues.values()):
            queue.bus_down()

    def stopService(self):
        """After the Lua services stopped: acknowledge what they took and
        give back what they did not."""
        super().stopService()
        if not self.link.available:
            return
        for queue in list(self._queues.values()):
            back = queue.give_back()
            if back:
                log.info("mqr queue {queue}: {count} entries read by this worker go back to "
                         "the other receivers", lapps_event="mqr.released",
                         queue=queue.shown(), count=back)
