"""One connection to Redis that lapps keeps open.

txredisapi speaks the protocol (hiredis parses replies when installed);
Twisted's ``ClientService`` keeps the connection: it reconnects with
exponential backoff and jitter whenever the connection is lost or cannot be
made. A link tells its owner each time it comes up (after AUTH and SELECT)
and each time it goes down, and logs both with stable event names. Every
command has a reply timeout: a Redis that stops answering without closing
the socket drops the link instead of leaving callers waiting.

:func:`probe` is the one blocking call here: at start-up, before the
reactor runs, it tells whether Redis answers at all, so an unreachable bus
is a start-up error rather than a server that waits forever.
"""

import socket

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import endpoints
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from lapps.bus.unavailable import BusUnavailable

log = Logger(namespace="lapps.bus")

#: Seconds a command may wait for its reply before the link is dropped.
REPLY_TIMEOUT = 5.0
#: Reconnect delays: from 0.1 s, doubling, to at most 5 s (with jitter).
_RETRY = backoffPolicy(initialDelay=0.1, maxDelay=5.0, factor=2.0)


def probe(address, timeout=3.0):
    """Connect, authenticate, select the database and PING, blocking for at
    most about ``timeout`` seconds; raise :class:`BusUnavailable` if any fails."""
    commands = []
    if address.password is not None:
        commands.append(["AUTH"] + ([address.username] if address.username else [])
                        + [address.password])
    commands += [["SELECT", str(address.db)], ["PING"]]
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout) as sock:
            reader = sock.makefile("rb")
            for command in commands:
                sock.sendall(_encode(command))
                line = reader.readline()
                if not line.startswith(b"+"):
                    reason = line[1:].strip().decode("utf-8", "replace") or "connection closed"
                    raise BusUnavailable(f"Redis at {address} refused {command[0]}: {reason}")
    except OSError as e:
        raise BusUnavailable(f"cannot reach Redis at {address}: {e.strerror or e}") from None


def _encode(command):
    parts = [arg.encode() for arg in command]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class Subscriber(txredisapi.SubscriberProtocol):
    """A pub/sub connection; each message goes to ``on_message``."""

    on_message = None

    def messageReceived(self, pattern, channel, message):
        self.on_message(channel, message)


class _Factory(Factory):
    """Builds the txredisapi protocol (raw bytes in and out: no charset, no
    number conversion) and takes the calls it makes on its factory."""

    isLazy = False
    noisy = False

    def __init__(self, link, protocol_class, address):
        self.link, self.protocol_class, self.address = link, protocol_class, address

    def buildProtocol(self, addr):
        a = self.address
        protocol = self.protocol_class(charset=None, replyTimeout=REPLY_TIMEOUT,
                                       password=a.password, dbid=a.db, convertNumbers=False,
                                       username=a.username)
        protocol.factory = self
        return protocol

    def stopTrying(self):
        """txredisapi gives up after a refused AUTH or SELECT; lapps keeps
        retrying (with backoff): the operator may fix Redis meanwhile."""

    def connectionError(self, message):
        self.link.refused(message)


class Link:
    """A named connection kept open; ``protocol`` is the txredisapi protocol
    while it is up, else None. ``on_up(protocol)`` runs each time it comes up
    (a Deferred it returns delays the link's readiness); ``on_down()`` each
    time it goes down."""

    def __init__(self, name, address, reactor, protocol_class=txredisapi.RedisProtocol,
                 on_up=None, on_down=None):
        self.name, self.address = name, address
        self.on_up, self.on_down = on_up, on_down
        self.protocol = None
        self.reason = "not connected yet"
        endpoint = endpoints.HostnameEndpoint(reactor, address.host, address.port, timeout=5)
        self._service = ClientService(endpoint, _Factory(self, protocol_class, address),
                                      retryPolicy=self._retry_delay, clock=reactor,
                                      prepareConnection=self._prepare)

    def start(self):
        self._service.startService()

    def stop(self):
        """Close the connection and stop reconnecting (a Deferred)."""
        return self._service.stopService()

    def _retry_delay(self, attempt):
        delay = _RETRY(attempt)
        if attempt in (0, 1) or attempt % 10 == 0:  # not every attempt of a long outage
            log.info("bus link {link} to {address}: retry {attempt} in {delay:.1f} s",
                     lapps_event="bus.retry", link=self.name, address=str(self.address),
                     attempt=attempt + 1, delay=delay)
        return delay

    def refused(self, message):
        self.reason = message
        log.error("bus link {link} to {address}: {message}", lapps_event="bus.refused",
                  link=self.name, address=str(self.address), message=message)

    def _prepare(self, protocol):
        protocol.transport.setTcpNoDelay(True)  # requests are small and each awaits its reply
        d = protocol.whenConnected()
        d.addCallback(self._came_up)
        return d

    def _came_up(self, protocol):
        protocol.whenDisconnected().addCallback(self._went_down)
        self.protocol = protocol
        log.info("bus link {link} to {address} is up", lapps_event="bus.up", link=self.name,
                 address=str(self.address))
        if self.on_up is not None:
            return self.on_up(protocol)

    def _went_down(self, protocol):
        if self.protocol is not protocol:
            return
        self.protocol = None
        self.reason = "connection lost"
        log.warn("bus link {link} to {address} is down: {reason}", lapps_event="bus.down",
                 link=self.name, address=str(self.address), reason=self.reason)
        if self.on_down is not None:
            self.on_down()
