"""A worker's side of the host bus: its link to the supervisor's hub.

The link is a Unix-domain socket the supervisor made before starting the
worker (the worker's end is a descriptor it inherits). The bus counts as
available once the hub has sent the channels it knows and ``SYNCED``; the
Lua services start after that, as they wait for Redis on that bus.

A link that breaks while the worker runs cannot be made again (the hub
made it for this process): the worker logs ``bus.link_lost``, and the
``lost_hooks`` close its clients (1011) and end it, to be restarted. If
the supervisor itself died, the kernel has already sent the worker SIGTERM
(:mod:`lapps.workers.worker`).
"""

import itertools
import os
import socket

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.threadable import isInIOThread

from lapps import metrics
from lapps.bus.host import wire

log = Logger(namespace="lapps.bus")

_LOST = b"the bus is unavailable: the link to the supervisor is lost"
_NOT_YET = b"the bus is unavailable: not linked to the supervisor yet"


class _SupervisorEnd(wire.Peer):

    def __init__(self, link):
        self.link = link

    def received(self, message):
        self.link.received(message)

    def connectionLost(self, reason):
        self.link.went_down()

    def too_far_behind(self):
        log.error("host bus: the supervisor has not read {bytes} bytes of the bus; link dropped",
                  lapps_event="bus.supervisor_behind", bytes=self.behind)
        super().too_far_behind()


class HostLink(Service):
    """The ``bus`` service of a worker on the host bus. ``handlers`` maps a
    message kind to the part that takes it (bcast, mqr)."""

    name = "bus"
    backend = "host"

    def __init__(self, fd, reactor):
        self.fd, self.reactor = fd, reactor
        self.available = False
        self.handlers = {wire.SYNCED: self._synced}
        self.lost_hooks = []     # f(), when the link breaks while the worker runs
        self.down_hooks = []     # f(), each time it goes down (waiters learn why)
        self.peer = None
        self._ready = []         # Deferreds of when_ready(); None once synced
        self._gone = None        # fires when the link has closed, once it is closing
        self._problem = _NOT_YET
        self._numbers = itertools.count(1)
        self._expected = {}      # request number -> (on answer, on failure)
        metrics.watch_bus(self)

    def problem(self) -> bytes:
        return self._problem

    def call(self, function, *args):
        """Run ``function(*args)`` on the reactor thread: now if this is it."""
        if isInIOThread():
            function(*args)
        else:
            self.reactor.callFromThread(function, *args)

    def send(self, message):
        """On the reactor thread; nothing goes while the link is down."""
        if self.peer is not None:
            self.peer.send(message)

    def expect(self, answered, failed):
        """A request number whose answer goes to ``answered(value)``; if the
        link is lost first, ``failed((False, why))``."""
        number = next(self._numbers) & 0xFFFFFFFF
        self._expected[number] = (answered, failed)
        return number

    def answer(self, message, value):
        """The answer ``message`` brought is ``value``."""
        callbacks = self._expected.pop(wire.request_number(message), None)
        if callbacks is not None:
            callbacks[0](value)

    def behind(self) -> int:
        """Bytes written that the supervisor has not read yet (0 while it keeps up)."""
        return self.peer.behind if self.peer is not None else 0

    def when_ready(self):
        if self._ready is None:
            return succeed(None)
        d = Deferred()
        self._ready.append(d)
        return d

    def startService(self):
        super().startService()
        self.peer = _SupervisorEnd(self)
        try:
            self.reactor.adoptStreamConnection(self.fd, socket.AF_UNIX, wire.OneProtocol(self.peer))
        finally:
            os.close(self.fd)  # the reactor has its own copy

    def stopService(self):
        """Close the link (after the Lua services and mqr have stopped)."""
        super().stopService()
        self.available = False
        if self.peer is None:
            return None
        self._gone = Deferred()
        self.peer.transport.loseConnection()
        return self._gone

    def received(self, message):
        handler = self.handlers.get(message[:1])
        if handler is None:
            log.error("host bus: unknown message {kind!r} from the supervisor; ignored",
                      lapps_event="bus.bad_message", kind=message[:1])
            return
        handler(message)

    def _synced(self, _):
        self.available = True
        log.info("bus available: the host bus of supervisor {pid}", lapps_event="bus.available",
                 pid=os.getppid())
        ready, self._ready = self._ready, None
        for d in ready or ():
            d.callback(None)

    def went_down(self):
        self.peer, self.available, self._problem = None, False, _LOST
        expected, self._expected = self._expected, {}
        for _, failed in expected.values():
            failed((False, _LOST))
        for hook in self.down_hooks:
            hook()
        if self._gone is not None:
            self._gone.callback(None)
            return
        log.error("bus unavailable: the link to the supervisor is lost; this worker closes its "
                  "clients (1011) and ends, to be restarted", lapps_event="bus.link_lost")
        for hook in self.lost_hooks:
            hook()
