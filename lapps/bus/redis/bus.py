"""The Redis bus service: the two connections bcast and mqr share, and
whether the bus is usable right now.

The bus is *available* while both its links are up and the parts have
caught up with Redis after (re)connecting (``sync_hooks``). While it is not,
bcast and mqr calls return false and :meth:`RedisBus.problem` at once, so
nothing waits on a Redis that is gone; the links reconnect with backoff.

Keys, under the configured prefix ``P``: ``P bcast:ID`` (pub/sub, one per
channel), ``P bcast-created`` (pub/sub) and ``P bcast-channels`` (a set),
``P mqr:NAME`` (a stream with the consumer group ``lapps``), and
``P alive:CONSUMER`` (a process's presence, with a time to live); bcast
history and presence have theirs (:mod:`lapps.bus.redis.history`).
"""

import os
import secrets
import socket

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.threadable import isInIOThread

from lapps import metrics
from lapps import redis_address as bus_address
from lapps.bus.redis.link import Link, Subscriber, probe

log = Logger(namespace="lapps.bus")


def failure_text(failure):
    """A failed command's reason, for a log line or a Lua message."""
    return str(failure.value) or type(failure.value).__name__


class RedisBus(Service):
    """The ``bus`` service; see the module docstring."""

    name = "bus"
    backend = "redis"

    def __init__(self, settings, reactor):
        self.address = bus_address.parse(settings["url"])
        self.prefix = settings["prefix"].encode()
        self.consumer_timeout = settings["consumer_timeout"]
        self.reactor = reactor
        #: This process's name in Redis (consumer groups, presence).
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}".encode()
        self.command = Link("command", self.address, reactor, on_up=self._link_up,
                            on_down=self._link_down)
        self.subscriber = Link("subscriber", self.address, reactor, protocol_class=Subscriber,
                               on_up=self._subscriber_up, on_down=self._link_down)
        self.available = False
        self.sync_hooks = []         # f(command protocol) -> Deferred, each time the bus comes up
        self.down_hooks = []         # f(), each time it goes down
        self.subscribe_hooks = []    # f(subscriber protocol) -> Deferred, each time it connects
        self._ready = []             # Deferreds of when_ready(), until the first time up
        self._listening = False      # the subscriber link is up and subscribed
        self._syncing = None
        metrics.watch_bus(self)

    def probe(self):
        """Block until Redis answers a PING, or raise BusUnavailable."""
        probe(self.address)

    def problem(self) -> bytes:
        """Why a call cannot go through now, for Lua."""
        reason = self.command.reason if self.command.protocol is None else \
            self.subscriber.reason if self.subscriber.protocol is None else "reconnecting"
        return f"the bus is unavailable: Redis at {self.address}: {reason}".encode()

    def key(self, kind: bytes, name: bytes = b"") -> bytes:
        return self.prefix + kind + name

    def flush(self):
        """Write what the command link holds now, not at the reactor's next
        turn: what a call recorded (a create, a subscription) then reaches
        Redis before the call's answer reaches its client, who may go on to
        another process and look for it there. (A connection this write
        finds lost is found again by the reactor when it next reads the
        socket, so what ``doWrite`` returns is not needed here.)"""
        protocol = self.command.protocol
        if protocol is not None and not protocol.transport.disconnecting:
            protocol.transport.doWrite()

    def call(self, function, *args):
        """Run ``function(*args)`` on the reactor thread: now if this is it."""
        if isInIOThread():
            function(*args)
        else:
            self.reactor.callFromThread(function, *args)

    def when_ready(self):
        """Fires once the bus has been available (Lua services wait for it)."""
        d = Deferred()
        if self._ready is None:
            d.callback(None)
        else:
            self._ready.append(d)
        return d

    def startService(self):
        super().startService()
        self.command.start()
        self.subscriber.start()

    def stopService(self):
        super().stopService()
        self.available = False
        return DeferredList([self.command.stop(), self.subscriber.stop()])

    def _subscriber_up(self, protocol):
        d = DeferredList([hook(protocol) for hook in self.subscribe_hooks], fireOnOneErrback=True)
        return d.addCallback(self._subscribed)

    def _subscribed(self, _):
        self._listening = True
        self._link_up(None)

    def _link_up(self, _):
        protocol = self.command.protocol
        if protocol is None or not self._listening or self._syncing is not None:
            return None
        self._syncing = d = DeferredList([hook(protocol) for hook in self.sync_hooks],
                                         fireOnOneErrback=True)
        d.addCallbacks(self._synced, self._sync_failed)
        return None

    def _synced(self, _):
        self._syncing = None
        if self.command.protocol is None or not self._listening:
            return
        self.available = True
        log.info("bus available: Redis at {address}, consumer {consumer}",
                 lapps_event="bus.available", address=str(self.address),
                 consumer=self.consumer.decode())
        ready, self._ready = self._ready, None
        for d in ready or ():
            d.callback(None)

    def _sync_failed(self, failure):
        self._syncing = None
        log.error("bus: catching up with Redis failed: {reason}", lapps_event="bus.sync_failed",
                  reason=failure_text(failure.value.subFailure))
        protocol = self.command.protocol
        if protocol is not None:  # start over on a new connection
            protocol.transport.loseConnection()

    def _link_down(self):
        self._listening = self._listening and self.subscriber.protocol is not None
        if self.available:
            self.available = False
            log.warn("bus unavailable: {problem}", lapps_event="bus.unavailable",
                     problem=self.problem().decode())
        for hook in self.down_hooks:
            hook()
