"""The supervisor's side of the host bus: the channels and queues of the
host, and one link per worker (:mod:`lapps.bus.host.wire`).

bcast: the hub keeps the set of channel ids (a create anywhere makes the
channel exist everywhere) and forwards each broadcast, as the bytes it
came in, to every worker, the sender included, in the order it read them:
every worker delivers the broadcasts of one sender in its send order, and
frames each once for all its subscribers. A history channel's messages
are held here (:class:`lapps.bus.history.Held`), numbered as they are
read and sent on with their position; its epoch lives as long as the
supervisor. Each subscription of every worker is recorded here, for
``presence``.

mqr: the hub holds every queue of the host, so ``max_queue`` and
``max_queue_bytes`` bound a name across all workers. An entry a worker was
handed stays *in flight* (it counts against both, as the hub still holds
it) until that worker acknowledges it; a worker asks for entries with
credit (how many it can use now), and the hub hands them out oldest
first, turn by turn between the workers that asked. When a worker's link
ends (it stopped, died or was killed), what it had in flight goes back to
the front of its queues for the others (still counted): nothing a post
was told was accepted is lost while the supervisor lives.
"""

import collections
import itertools
import socket
import struct

import cbor2

from twisted.logger import Logger

from lapps.bus import history
from lapps.bus.host import wire
from lapps.bus.local.mqr import DEFAULT_MAX_QUEUE_BYTES

log = Logger(namespace="lapps.bus")


class _HubQueue:
    """One named queue of the host."""

    __slots__ = ("name", "items", "in_flight", "credit", "bytes")

    def __init__(self, name):
        self.name = name
        self.bytes = 0                     # of the entries' data, queued or in flight
        self.items = collections.deque()   # (id, data), oldest first
        self.in_flight = {}                # worker link -> {id: data}
        self.credit = {}                   # worker link -> entries it can take (order = turns)

    def size(self):
        return len(self.items) + sum(len(held) for held in self.in_flight.values())

    def put_back(self, held):
        """Entries a worker gave back: in front, oldest first."""
        self.items.extendleft(sorted(held.items(), reverse=True))


class WorkerLink(wire.Peer):
    """The hub's end of one worker's link."""

    def __init__(self, hub, index):
        self.hub, self.index = hub, index

    def connectionMade(self):
        super().connectionMade()
        self.hub.joined(self)

    def connectionLost(self, reason):
        self.hub.left(self)

    def received(self, message):
        handler = self.hub.handlers.get(message[:1])
        if handler is None:
            log.error("host bus: unknown message {kind!r} from worker {index}; link dropped",
                      lapps_event="bus.bad_message", kind=message[:1], index=self.index)
            self.transport.loseConnection()
            return
        try:
            handler(self, message)
        except struct.error:
            log.error("host bus: a message {kind!r} from worker {index} is cut short; link dropped",
                      lapps_event="bus.bad_message", kind=message[:1], index=self.index)
            self.transport.loseConnection()

    def too_far_behind(self):
        log.error("host bus: worker {index} has not read {bytes} bytes of the bus; link dropped "
                  "(the worker stops and is restarted)", lapps_event="bus.worker_behind",
                  index=self.index, bytes=self.behind)
        super().too_far_behind()


class Hub:
    """The host bus of one supervisor; ``max_queue`` and ``max_queue_bytes``
    are the ``mqr`` server keys."""

    def __init__(self, max_queue, reactor, max_queue_bytes=DEFAULT_MAX_QUEUE_BYTES):
        self.max_queue, self.reactor = max_queue, reactor
        self.max_queue_bytes = max_queue_bytes
        self.links = []
        self.channels = set()
        self.held = {}        # channel -> history.Held, for history channels
        self.members = {}     # channel -> {(worker link, handler): info}
        self.queues = {}
        self._ids = itertools.count(1)
        self.handlers = {wire.CREATE: self._create, wire.BROADCAST: self._broadcast,
                         wire.PUBLISH: self._publish, wire.HELD: self._held,
                         wire.JOIN: self._join, wire.LEAVE: self._leave,
                         wire.PRESENCE: self._presence,
                         wire.POST: self._post, wire.WANT: self._want, wire.FETCH: self._fetch,
                         wire.ACK: self._ack, wire.RELEASE: self._release}

    def socket_for(self, index):
        """A connected pair for worker ``index``: the hub reads one end from
        now on; the other (a socket object) goes to the worker, and is
        closed here once the worker has it."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.reactor.adoptStreamConnection(mine.fileno(), socket.AF_UNIX,
                                               wire.OneProtocol(WorkerLink(self, index)))
        finally:
            mine.close()  # the reactor has its own copy
        return theirs

    # Links.

    def joined(self, link):
        self.links.append(link)
        for channel in sorted(self.channels):
            held = self.held.get(channel)
            options = None if held is None else held.options
            link.send(wire.channel_message(wire.CREATE, channel, wire.history_options(options)))
        link.send(wire.SYNCED)

    def left(self, link):
        if link in self.links:
            self.links.remove(link)
        for members in self.members.values():
            for key in [key for key in members if key[0] is link]:
                del members[key]
        for queue in self.queues.values():
            queue.credit.pop(link, None)
            held = queue.in_flight.pop(link, None)
            if held:
                queue.put_back(held)
                log.info("mqr queue {queue}: {count} entries worker {index} had not finished "
                         "go to the other receivers", lapps_event="mqr.reclaimed",
                         queue=queue.name.decode("utf-8", "replace"), count=len(held),
                         index=link.index)
                self._hand_out(queue)

    # bcast.

    def _create(self, link, message):
        channel = wire.channel_of(message)
        options = wire.read_history_options(message)
        new = channel not in self.channels
        self.channels.add(channel)
        if options is not None:
            options = history.Options(*options)
            held = self.held.get(channel)
            if held is None:
                self.held[channel] = history.Held(options)
            else:
                held.reconfigure(options)
        if new or options is not None:
            for other in self.links:
                other.send(message)

    def _broadcast(self, link, message):
        # (a message cut short drops the sender's link, not the others')
        channel = wire.channel_of(message)
        if channel in self.held:
            self._number(channel, message[9:])
            return
        for other in self.links:
            other.send(message)

    def _number(self, channel, payload):
        """Hold, number and send on a history channel's message: its offset."""
        offset, framed = self.held[channel].append(payload)
        numbered = wire.channel_message(wire.NUMBERED, channel, wire.U64.pack(offset) + framed)
        for other in self.links:
            other.send(numbered)
        return offset

    def _publish(self, link, message):
        number, channel = wire.request_number(message), wire.U64.unpack_from(message, 5)[0]
        if channel in self.held:
            offset = self._number(channel, message[13:])
        else:  # not (or no longer) a history channel here: a plain broadcast
            self._broadcast(link, wire.channel_message(wire.BROADCAST, channel, message[13:]))
            offset = 0
        link.send(wire.request(wire.PUBLISHED, number, wire.U64.pack(offset)))

    def _held(self, link, message):
        number, channel = wire.request_number(message), wire.U64.unpack_from(message, 5)[0]
        after, limit = wire.HELD_QUERY.unpack_from(message, 13)
        held = self.held.get(channel)
        if held is None:
            link.send(wire.request(wire.HELD_ANSWER, number))
            return
        entries = held.after(after, limit)
        link.send(wire.request(wire.HELD_ANSWER, number, wire.held_answer(
            held.epoch, held.first(), held.top, entries)))

    def _join(self, link, message):
        channel, handler = wire.U64.unpack_from(message, 1)[0], wire.U64.unpack_from(message, 9)[0]
        self.members.setdefault(channel, {})[link, handler] = message[17:]

    def _leave(self, link, message):
        channel, handler = wire.U64.unpack_from(message, 1)[0], wire.U64.unpack_from(message, 9)[0]
        self.members.get(channel, {}).pop((link, handler), None)

    def _presence(self, link, message):
        number, channel = wire.request_number(message), wire.U64.unpack_from(message, 5)[0]
        members = self.members.get(channel, {})
        infos = [info for info in members.values() if info][:history.MAX_MEMBERS]
        link.send(wire.request(wire.PRESENCE_ANSWER, number, cbor2.dumps([len(members), infos])))

    # mqr.

    def queue(self, name):
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = _HubQueue(name)
        return queue

    def _post(self, link, message):
        number = wire.request_number(message)
        name, offset = wire.name_and_body(message, 5)
        queue, data = self.queue(name), message[offset:]
        if queue.size() >= self.max_queue or queue.bytes + len(data) > self.max_queue_bytes:
            link.send(wire.request(wire.POSTED, number, b"\0"))
            return
        queue.items.append((next(self._ids), data))
        queue.bytes += len(data)
        link.send(wire.request(wire.POSTED, number, b"\1"))
        self._hand_out(queue)

    def _want(self, link, message):
        name, offset = wire.name_and_body(message)
        queue = self.queue(name)
        credit = queue.credit.pop(link, 0) + wire.I32.unpack_from(message, offset)[0]
        if credit > 0:
            queue.credit[link] = credit  # (at the end: its turn comes after the others')
        self._hand_out(queue)

    def _fetch(self, link, message):
        """``try_recv`` found nothing buffered: one entry now, if any."""
        name, _ = wire.name_and_body(message, 5)
        queue = self.queue(name)
        if queue.items:
            self._deliver(link, queue, [queue.items.popleft()])
        link.send(wire.request(wire.FETCHED, wire.request_number(message)))

    def _ack(self, link, message):
        name, offset = wire.name_and_body(message)
        queue = self.queue(name)
        held = queue.in_flight.get(link, {})
        for entry_id in wire.read_ids(message, offset):
            queue.bytes -= len(held.pop(entry_id, b""))

    def _release(self, link, message):
        """A stopping worker gives back what its receivers did not take."""
        name, offset = wire.name_and_body(message)
        queue = self.queue(name)
        held = queue.in_flight.get(link, {})
        back = {i: held.pop(i) for i in wire.read_ids(message, offset) if i in held}
        queue.put_back(back)
        queue.credit.pop(link, None)
        self._hand_out(queue)

    def _hand_out(self, queue):
        """Entries to the workers with credit, oldest first, turn by turn;
        one message per worker."""
        if not (queue.items and queue.credit):
            return
        batches = {}
        credit, items = queue.credit, queue.items
        while items and credit:
            link = next(iter(credit))
            left = credit.pop(link) - 1
            batches.setdefault(link, []).append(items.popleft())
            if left:
                credit[link] = left
        for link, pairs in batches.items():
            self._deliver(link, queue, pairs)

    def _deliver(self, link, queue, pairs):
        queue.in_flight.setdefault(link, {}).update(pairs)
        link.send(wire.named(wire.DELIVER, queue.name, wire.entries(pairs)))
