"""bcast over Redis: one publish reaches the subscribers of its channel in
every process connected to the same Redis and prefix.

A send is a Redis PUBLISH; each process receives every broadcast on one
pattern subscription, made before the bus counts as available, and fans it
out to its own subscribers as :class:`~lapps.bus.local.bcast.Broadcasts`
does. The local subscribers of the sending process get it back the same
way, so every process delivers broadcasts in the order Redis took them: the
publish order of each publisher, since each process publishes on one
connection, in order. Subscribing stays local and takes effect at once, as
on the local bus: nothing is asked of Redis.

Channel ids are shared: a channel created anywhere exists everywhere. A
create adds the id to a Redis set and announces it on a pub/sub channel;
each process keeps a mirror (the set, read after its subscription is in
place, then the announcements), so ``subscribe`` and ``send`` check a
channel without a round trip. A create made while Redis is gone is added to
the set when it returns.

A send is not confirmed (PUBLISH is fire-and-forget, like a frame written to
a socket): it returns false only when the bus is unavailable, or when more
than :data:`MAX_IN_FLIGHT` bytes of this process's broadcasts are still on
their way to Redis (one of any size goes when none are), so a producer
faster than Redis is told, not buffered.

History channels, recovery and presence are kept in Redis
(:mod:`lapps.bus.redis.history`), so they need a round trip: a send on a
history channel, a subscribe with a position, ``history`` and ``presence``
answer later (PENDING, then ``done``), or ``(False, why)`` at once while the
bus is unavailable. A subscription is recorded for presence as it is made
(counted once Redis has it: a moment after the subscribe answers), and
recorded again when Redis comes back. History channels are announced with
their options, like ids, so every process knows which channels number their
sends.
"""

from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from lapps.bus.entries import PENDING
from lapps.bus.history import MAX_LIMIT, Position, Recovery, recovery
from lapps.bus.local.bcast import Backlog, Broadcasts
from lapps.bus.redis.bus import failure_text
from lapps.bus.redis.history import Store, options_of, options_text, position_of

log = Logger(namespace="lapps.bus")

#: Bytes of broadcasts sent to Redis and not yet answered, at most.
MAX_IN_FLIGHT = 32 * 1024 * 1024


def _glob_escaped(text: bytes) -> bytes:
    return bytes(b for c in text for b in ((92, c) if c in b"\\*?[]" else (c,)))


class RedisBroadcasts(Broadcasts):
    """The bcast channels on the Redis bus (same interface as the local ones).
    Floors count in the epoch of ``_epochs``: one that changes (Redis lost
    the channel) starts them again at 0."""

    def __init__(self, connections, reactor, bus, history_max_bytes):
        super().__init__(connections, reactor, history_max_bytes)
        self.bus = bus
        self.store = Store(bus)
        self._channel = bus.key(b"bcast:")
        self._created = bus.key(b"bcast-created")
        self._ids = bus.key(b"bcast-channels")
        self._in_flight = Backlog(MAX_IN_FLIGHT)
        self._options = {}     # history channel -> Options
        self._epochs = {}      # history channel -> the epoch its floors count in
        self._present = set()  # channels with subscriptions of this process recorded in Redis
        self._renewal = LoopingCall(self._renew)  # their expiry, as mqr renews alive:
        self._renewal.clock = bus.reactor
        bus.subscribe_hooks.append(self._subscribe)
        bus.sync_hooks.append(self._sync)

    def create(self, channel, options=None):
        new = not self.exists(channel)
        super().create(channel, options)
        if new or options is not None:
            self.bus.call(self._announce, channel, options)
        return True

    def _keep_history(self, channel, options):
        self._floors.setdefault(channel, {})
        self._options[channel] = options

    def _top(self, channel):
        return 0  # pub/sub brings only what is sent from now on

    def publish(self, channel, payload: bytes, done=None):
        """True once handed to the bus; on a history channel PENDING, then
        ``(True, offset)`` once Redis numbered it; or ``(False, why)``."""
        bus = self.bus
        if not bus.available:
            return False, bus.problem()
        if not self._in_flight.admit(len(payload)):
            return False, b"the bus is behind: %d bytes of broadcasts are still on their " \
                          b"way to Redis" % self._in_flight.waiting
        name = b"%s%d" % (self._channel, channel)
        if not self.has_history(channel):
            bus.call(self._send, name, payload)
            return True

        def numbered(outcome):
            self._landed(None, len(payload))
            done(outcome)

        bus.call(self._ask, channel, lambda protocol: self.store.publish(
            protocol, channel, payload, self.history_max_bytes, self._options[channel], name),
            lambda offset: (True, offset), numbered)
        return PENDING

    def _send(self, name, payload):
        protocol = self.bus.command.protocol
        if protocol is None:  # lost since publish() looked
            self._landed(None, len(payload))
            return
        protocol.execute_command(b"PUBLISH", name, payload).addBoth(self._landed, len(payload))

    def _landed(self, _, size):
        self._in_flight.through(size)

    def _later(self, channel, start, answer, done):
        """PENDING, and ``done(answer(Redis's reply to start(protocol)))``."""
        if not self.bus.available:
            return False, self.bus.problem()
        self.bus.call(self._ask, channel, start, answer, done)
        return PENDING

    def _ask(self, channel, start, answer, done):
        """(On the reactor.) See :meth:`_later`; ``(False, why)`` if Redis fails."""
        protocol = self.bus.command.protocol
        if protocol is None:  # lost since the caller looked; answer later, as from Redis
            self.bus.reactor.callLater(0, done, (False, self.bus.problem()))
            return
        d = maybeDeferred(start, protocol).addCallback(answer)
        d.addErrback(lambda failure: (False, self._failed(channel, failure))).addCallback(done)

    def _failed(self, channel, failure):
        reason = failure_text(failure)
        if reason.startswith("NOHISTORY"):
            return b"Broadcast with id %d keeps no history" % channel
        return b"the bus failed: " + reason.encode()

    def history(self, channel, after=0, limit=None, done=None):
        if not self.has_history(channel):
            return self._not_history(channel)
        return self._later(channel, lambda protocol: self.store.read(
            protocol, channel, after, limit or MAX_LIMIT), _held, done)

    def presence(self, channel, done=None):
        if not self.exists(channel):
            return False, b"Broadcast with id %d is not found" % channel
        return self._later(channel, lambda protocol: self.store.presence(protocol, channel),
                           lambda present: present, done)

    def subscribe(self, channel, handler, since=None, info=None, done=None):
        """As on the local bus; a channel not known here yet (just created
        in another process: its announcement is on its way) is looked up in
        Redis first."""
        if since is not None and not self.bus.available:
            return False, self.bus.problem()
        if self.exists(channel) or not self.bus.available:
            return super().subscribe(channel, handler, since, info, done)

        def found(reply):
            member, options = reply
            if member:
                self._learn(b"%d" % channel if options is None else b"%d %s" % (channel, options))
            return Broadcasts.subscribe(self, channel, handler, since, info, done)

        def answered(outcome):
            if outcome is not PENDING:  # (else the recovery answers)
                done(outcome)

        return self._later(channel, lambda protocol: self.store.lookup(
            protocol, channel, self._ids), found, answered)

    def _recover(self, channel, handler, since, done):
        """Read what ``handler`` missed from Redis; until then, what comes
        live waits (see the module docstring of :mod:`lapps.bus.redis.history`).
        More than :data:`~lapps.bus.history.MAX_LIMIT` missed is not
        recovered: ``bcast:history`` pages through it."""
        since_epoch, since_offset = since

        def recovered(position):
            epoch, top, oldest, missed = position
            whole = recovery(epoch, oldest, top, since_epoch, since_offset) \
                and top - since_offset <= MAX_LIMIT
            self._in_epoch(channel, epoch)
            self._recovered(channel, handler, missed if whole else [], top)
            return True, Recovery(whole, epoch, top)

        def answered(outcome):
            if outcome[0] is False:  # not subscribed, then
                self.unsubscribe(channel, handler)
            done(outcome)

        self.bus.call(self._ask, channel, lambda protocol: self.store.read(
            protocol, channel, since_offset, MAX_LIMIT), recovered, answered)
        return PENDING

    def _in_epoch(self, channel, epoch):
        with self._lock:
            if self._epochs.get(channel) != epoch:
                floors = self._floors.get(channel, {})
                floors.update(dict.fromkeys(floors, 0))
                self._epochs[channel] = epoch

    def _joined(self, channel, handler, info):
        self.bus.call(self._record, self.store.join, channel, handler, info)

    def _left(self, channel, handler):
        self.bus.call(self._record, self.store.leave, channel, handler)

    def _record(self, change, channel, *args):
        protocol = self.bus.command.protocol
        if protocol is None:
            return  # _sync records the subscriptions when the bus is back
        self._present.add(channel)
        # a failure means the link is lost: _sync records them when it is back
        change(protocol, channel, *args).addErrback(lambda _: None)
        self.bus.flush()

    def _announce(self, channel, options):
        protocol = self.bus.command.protocol
        if protocol is None or not self.bus.available:
            return  # _sync adds it when the bus is back
        text = b"%d" % channel
        # a failure means the link is lost: _sync adds the id when it is back
        if options is not None:
            self.store.create(protocol, channel, options).addErrback(lambda _: None)
            text += b" " + options_text(options)
        for command in ((b"SADD", self._ids, b"%d" % channel), (b"PUBLISH", self._created, text)):
            protocol.execute_command(*command).addErrback(lambda _: None)
        self.bus.flush()

    def _subscribe(self, protocol):
        protocol.on_message = self._message
        return DeferredList([protocol.psubscribe([_glob_escaped(self._channel) + b"*"]),
                             protocol.subscribe([self._created])], fireOnOneErrback=True)

    def _renew(self):
        protocol = self.bus.command.protocol
        if protocol is not None and self.bus.available and self._present:
            # a failure means the link is lost: _sync records them again when it is back
            self.store.renew(protocol, list(self._present)).addErrback(lambda _: None)

    def stopService(self):
        super().stopService()
        if self._renewal.running:
            self._renewal.stop()

    def _sync(self, protocol):
        """After (re)connecting: add the channels and history channels known
        here, record this process's subscriptions again, then learn the
        channels created anywhere."""
        store = self.store
        with self._lock:
            mine = [b"%d" % channel for channel in self._channels]
            histories = list(self._options.items())
            subscriptions = [(channel, handler, self._info.get(channel, {}).get(handler))
                             for handler, channels in self._memberships.items()
                             for channel in channels]
        steps = [protocol.execute_command(b"SADD", self._ids, *mine)] if mine else []
        steps += [store.keep(protocol, channel, options) for channel, options in histories]
        steps += [store.forget(protocol, channel) for channel in self._present]
        self._present = {channel for channel, _, _ in subscriptions}
        steps += [store.join(protocol, *subscription) for subscription in subscriptions]
        if not self._renewal.running:
            self._renewal.start(self.bus.consumer_timeout / 4, now=False)
        ids = protocol.execute_command(b"SMEMBERS", self._ids)
        ids.addCallback(lambda ids: [self._learn(i) for i in ids])
        learned = store.all_histories(protocol)
        learned.addCallback(lambda flat: [self._learn(flat[i] + b" " + flat[i + 1])
                                          for i in range(0, len(flat), 2)])
        return DeferredList(steps + [ids, learned], fireOnOneErrback=True)

    def _learn(self, text):
        """A channel id, or a history channel's ``ID SIZE TTL``."""
        channel, _, options = text.partition(b" ")
        try:
            channel = int(channel)
            options = options_of(options, self.history_max_bytes) if options else None
        except ValueError:
            log.error("bcast: {text!r} in Redis is not a channel id or its options; ignored",
                      lapps_event="bcast.bad_id", text=text)
            return
        super().create(channel, options)

    def _message(self, channel, payload):
        if channel == self._created:
            self._learn(payload)
            return
        try:
            channel = int(channel[len(self._channel):])
        except ValueError:
            return  # another name under the pattern: not lapps's
        position = position_of(payload) if self.has_history(channel) else None
        if position is None:
            self._deliver(channel, payload)
            return
        epoch, offset = position
        if self._epochs.get(channel) != epoch:
            self._in_epoch(channel, epoch)
        self._deliver(channel, payload, offset)


def _held(position):
    epoch, top, _, entries = position
    return Position(epoch, top), entries
