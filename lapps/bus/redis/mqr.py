"""mqr over Redis: named queues shared by every process connected to the
same Redis and prefix, with competing receivers, each entry to exactly one.

A queue is a Redis stream read through one consumer group; each process is
one consumer (``bus.consumer``). The operations keep the local queue's
interface (:class:`lapps.bus.remote.RemoteQueue`), so the Lua module does not
know which bus runs:

* ``post`` runs a script that refuses the entry when the stream holds
  ``max_queue`` entries, or the entry would take it over ``max_queue_bytes``
  ("queue full"), and otherwise adds it; the answer comes back with the
  script's reply (PENDING, then ``done``). True means the entry is in
  Redis. The bytes of the entries in the stream are counted in a key of
  their own (``mqrbytes:NAME``), raised by that script and lowered by the
  one that deletes acknowledged entries, so both change with the stream,
  atomically; entries claimed from a dead consumer stay in the stream and
  stay counted.
* A receiver that finds nothing buffered registers as a waiter; a dedicated
  connection per queue then blocks in XREADGROUP while this process has
  waiters, and what it reads (up to :data:`PREFETCH` entries) is buffered
  here and handed out, oldest first. ``try_recv`` reads without blocking.
* An entry is acknowledged (XACK, and XDEL so the stream length counts only
  what is unfinished) once its receiver is done with it: a standalone
  thread when it next asks the same queue (or at stop), a reactive
  instance at the end of the reactor turn that received it (its callback
  returned or suspended). A process that dies leaves its unacknowledged
  entries pending under its consumer name.
* Every process renews a presence key (``alive:CONSUMER``, expiring after
  ``consumer_timeout``) and, for the queues it receives from, looks for
  consumers whose presence expired and that have been idle as long: it
  claims their pending entries (XCLAIM) and deletes them from the group.
  So nothing taken by a dead process is lost; an entry its receiver had
  already been given but not finished with is delivered again (at least
  once). Entries of a live process are never claimed, however slow it is.

While the bus is unavailable every call returns at once with the bus's
problem; waiting receivers are woken to get it.
"""

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from lapps.bus.entries import FETCHED, PENDING, QUEUE_FULL, decode, encode
from lapps.bus.local import mqr as local
from lapps.bus.redis.bus import failure_text
from lapps.bus.redis.link import Link
from lapps.bus.remote import RemoteQueue
from lapps.lua import source

log = Logger(namespace="lapps.mqr")

GROUP = b"lapps"
#: How many entries one read asks for, at most (and at least twice the
#: waiting receivers): what a process may hold that others cannot have.
PREFETCH = 32
#: How long one blocking read waits, in ms, before it is made again.
_BLOCK_MS = 1000
#: Entry ids per XACK/XDEL/XCLAIM call.
_BATCH = 1000

# (An empty stream holds no bytes: a count left over, e.g. by a stream
# deleted by hand, goes.)
_POST = source.read("mqr_post.lua", "lapps.bus.redis")

# (Only entries still in the stream free their bytes: an id acknowledged
# twice frees them once.)
_ACK = source.read("mqr_ack.lua", "lapps.bus.redis")



def _is_missing_group(failure):
    return "NOGROUP" in str(failure.value)


class RedisQueue(RemoteQueue):
    """One named queue on the Redis bus, as this process sees it."""

    def __init__(self, queues, name):
        super().__init__(name, queues, queues.bus)
        self.key = queues.bus.key(b"mqr:", name)
        self._keys = [self.key, queues.bus.key(b"mqrbytes:", name)]  # of the scripts
        self._reader = None               # the blocking connection, made at the first wait
        self._reading = False

    # Posting.

    def post(self, entry, done):
        bus = self.bus
        if not bus.available:
            return False, bus.problem()
        bus.call(self._post, encode(entry), done)
        return PENDING

    def _post(self, data, done):
        protocol = self.bus.command.protocol
        if protocol is None:  # lost since post() looked; answer later, as from Redis
            self.bus.reactor.callLater(0, done, (False, self.bus.problem()))
            return
        d = protocol.eval(_POST, self._keys, [self.limit, data, self.max_bytes])
        d.addCallbacks(lambda added: done(True if added else QUEUE_FULL),
                       lambda failure: done((False, self._failed(failure))))

    def _failed(self, failure):
        return b"the bus failed: " + failure_text(failure).encode()

    # Receiving.

    def _send_acks(self, ids):
        protocol = self.bus.command.protocol
        if protocol is None:  # again when the bus is back
            self.requeue_acks(ids)
            return None
        batches = [protocol.eval(_ACK, self._keys, ids[i:i + _BATCH])
                   for i in range(0, len(ids), _BATCH)]
        for batch, d in zip(range(0, len(ids), _BATCH), batches):
            d.addErrback(lambda _, part=ids[batch:batch + _BATCH]: self.requeue_acks(part))
        return batches[-1]

    def _arrived(self, entries, first=False):
        """Buffer entries read (or claimed: ``first``) from Redis."""
        decoded, bad = [], []
        for entry_id, fields in entries:
            if fields is None:  # deleted since (a claimed entry already acknowledged)
                continue
            try:
                decoded.append((entry_id, decode(dict(zip(fields[::2], fields[1::2]))[b"v"])))
            except (ValueError, KeyError) as e:
                log.error("mqr queue {queue}: entry {id} is not one lapps wrote ({reason}); "
                          "dropped", lapps_event="mqr.bad_entry", queue=self.shown(),
                          id=entry_id.decode(), reason=str(e))
                bad.append(entry_id)
        if bad:
            self.requeue_acks(bad)
        self.arrived(decoded, first)

    def _read_command(self, count, block=None):
        command = [b"XREADGROUP", b"GROUP", GROUP, self.bus.consumer, b"COUNT", count]
        if block is not None:
            command += [b"BLOCK", block]
        return command + [b"STREAMS", self.key, b">"]

    def _fetch_now(self, done):
        """try_recv found nothing buffered: read what Redis has, at once."""
        protocol = self.bus.command.protocol
        if protocol is None:  # lost since take() looked; answer later, as from Redis
            self.bus.reactor.callLater(0, done, (None, self.bus.problem()))
            return
        d = self._with_group(protocol, self._read_command(PREFETCH))
        d.addCallbacks(self._fetched, lambda failure: (None, self._failed(failure)))
        d.addCallback(done)

    def _fetched(self, reply):
        if reply:
            self._arrived(reply[0][1])
        return FETCHED

    @inlineCallbacks
    def _with_group(self, protocol, command):
        """Run a group command; if the group is missing (a new queue, or a
        Redis that lost its data), create it and run the command again."""
        try:
            reply = yield protocol.execute_command(*command)
        except Exception:
            ok = yield self.ensure_group(protocol)
            if not ok:
                raise
            reply = yield protocol.execute_command(*command)
        return reply

    @inlineCallbacks
    def ensure_group(self, protocol):
        """Whether the group exists now (creating it, and the stream)."""
        try:
            yield protocol.execute_command(b"XGROUP", b"CREATE", self.key, GROUP, b"0",
                                           b"MKSTREAM")
        except Exception as e:
            return "BUSYGROUP" in str(e)
        return True

    def _read(self):
        """While receivers here wait, keep one blocking read going."""
        if self._reading or not self._waiters or not self.bus.available:
            return
        if self._reader is None:
            self._reader = Link(f"mqr {self.shown()}", self.bus.address, self.bus.reactor,
                                on_up=lambda _: self._read())
            self._reader.start()
        protocol = self._reader.protocol
        if protocol is None:
            return  # its on_up reads
        self._reading = True
        count = min(PREFETCH, max(8, 2 * len(self._waiters)))
        d = self._with_group(protocol, self._read_command(count, _BLOCK_MS))
        d.addCallbacks(self._read_done, self._read_failed)

    def _read_done(self, reply):
        self._reading = False
        if reply:
            self._arrived(reply[0][1])
        self._read()

    def _read_failed(self, failure):
        self._reading = False
        if self._reader is not None and self._reader.protocol is not None:
            log.error("mqr queue {queue}: reading from Redis failed: {reason}",
                      lapps_event="mqr.read_failed", queue=self.shown(),
                      reason=failure_text(failure))
            self.bus.reactor.callLater(1, self._read)
        # else the link is down: it reads again when it is back up

    @inlineCallbacks
    def reclaim(self, protocol):
        """Claim the pending entries of dead consumers (see the module docstring)."""
        try:
            consumers = yield protocol.execute_command(b"XINFO", b"CONSUMERS", self.key, GROUP)
        except Exception as e:
            if "NOGROUP" in str(e) or "no such key" in str(e):
                return
            raise
        timeout_ms = int(self.bus.consumer_timeout * 1000)
        for fields in consumers:
            info = dict(zip(fields[::2], fields[1::2]))
            name = info[b"name"]
            if name == self.bus.consumer or info[b"idle"] < timeout_ms:
                continue
            if (yield protocol.execute_command(b"EXISTS", self.bus.key(b"alive:", name))):
                continue
            claimed = 0
            if info[b"pending"]:
                pending = yield protocol.execute_command(b"XPENDING", self.key, GROUP, b"-", b"+",
                                                         _BATCH, name)
                ids = [p[0] for p in pending]
                entries = yield protocol.execute_command(b"XCLAIM", self.key, GROUP,
                                                         self.bus.consumer, 0, *ids)
                claimed = len(entries)
                self._arrived(entries, first=True)
                if len(ids) == _BATCH:
                    continue  # the rest next time, before the consumer is deleted
            yield protocol.execute_command(b"XGROUP", b"DELCONSUMER", self.key, GROUP, name)
            log.info("mqr queue {queue}: took {count} entries of the dead consumer {consumer}",
                     lapps_event="mqr.reclaimed", queue=self.shown(), count=claimed,
                     consumer=name.decode("utf-8", "replace"))

    def close(self):
        if self._reader is not None:
            return self._reader.stop()
        return None


class RedisQueues(local.NamedQueues):
    """The named queues on the Redis bus (the ``mqr`` service of the tree,
    with the interface of :class:`lapps.bus.local.mqr.MessageQueues`)."""

    def __init__(self, bus, max_queue, max_queue_bytes):
        super().__init__(max_queue, max_queue_bytes)
        self.bus = bus
        self._alive = bus.key(b"alive:", bus.consumer)
        self._patrol = LoopingCall(self._check)
        self._patrol.clock = bus.reactor
        bus.sync_hooks.append(self._sync)
        bus.down_hooks.append(self._down)

    def new_queue(self, name):
        return RedisQueue(self, name)

    def _ttl(self):
        return int(self.bus.consumer_timeout * 1000)

    def _sync(self, protocol):
        """The bus is (back) up: be present, send the acknowledgements that
        waited, resume the reads, and patrol."""
        d = protocol.execute_command(b"SET", self._alive, b"1", b"PX", self._ttl())
        for queue in list(self._queues.values()):
            queue._flush()
            self.bus.reactor.callLater(0, queue._read)
        if not self._patrol.running:
            self._patrol.start(self.bus.consumer_timeout / 4, now=False)
        return d

    def _down(self):
        for queue in list(self._queues.values()):
            queue.bus_down()

    @inlineCallbacks
    def _check(self):
        protocol = self.bus.command.protocol
        if protocol is None or not self.bus.available:
            return
        try:
            yield protocol.execute_command(b"SET", self._alive, b"1", b"PX", self._ttl())
            for queue in list(self._queues.values()):
                if queue.consuming:
                    yield queue.reclaim(protocol)
        except Exception as e:
            log.warn("mqr: checking for dead consumers failed: {reason}",
                     lapps_event="mqr.patrol_failed", reason=str(e) or type(e).__name__)

    @inlineCallbacks
    def stopService(self):
        """After the Lua services stopped: acknowledge what they took, leave
        (what is still buffered here goes to other processes once this one
        counts as dead), and close the readers."""
        super().stopService()
        if self._patrol.running:
            self._patrol.stop()
        queues = list(self._queues.values())
        protocol = self.bus.command.protocol
        for queue in queues:
            try:
                yield queue.release_all()
            except Exception:
                pass  # logged below as what is left
            if len(queue):
                log.info("mqr queue {queue}: {count} entries read by this process go back to "
                         "the other receivers", lapps_event="mqr.released",
                         queue=queue.shown(), count=len(queue))
        if protocol is not None:
            try:
                yield protocol.execute_command(b"DEL", self._alive)
            except Exception:
                pass  # the key expires anyway
        for queue in queues:
            yield queue.close()
