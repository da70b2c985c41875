"""The fast path of ``cws`` connections: :mod:`lapps.fast.frames`
from the client's side.

:class:`FastClient` takes the common server frame in (final text or
binary, no RSV, *unmasked*, minimal length, within the limits, valid
UTF-8) and sends the common message out as one client frame, masked with
a fresh key from ``os.urandom`` (RFC 6455 5.3), without Autobahn's
per-frame callbacks; every other byte is Autobahn's, exactly as on the
server side (a masked server frame, say, which Autobahn then fails).

:func:`connecting` gives the ``cws`` endpoints a reactor whose
``connectTCP`` makes :class:`EagerClient` transports, which write at once
what is written while nothing is queued. Twisted has no public way to
choose a client's transport class: the places that reach in are
:class:`EagerConnector` (``tcp.Connector._makeTransport``) and
:func:`adopt` (``tcp.Server._fromConnectedSocket``, what
``adoptStreamConnection`` runs), and where those methods or a POSIX reactor
are missing they use the reactor's own, with Twisted's transports.
"""

import os
import struct

from twisted.internet import posixbase, tcp

from lapps.fast import frames, transport
from lapps.fast.frames import FastPath, payload_bounds, unmask

_TEXT, _BINARY = frames._TEXT, frames._BINARY
#: The headers of masked client frames with 16-bit and 64-bit lengths.
_MASKED_16, _MASKED_64 = struct.Struct(">BBH").pack, struct.Struct(">BBQ").pack


class FastClient(FastPath):
    """Mixed into an Autobahn Twisted client protocol that has
    :class:`~lapps.protocols.backpressure.OutboundCap`, first in the bases;
    ``factory.fast_path`` turns it on."""

    def _fast_path_applies(self):
        listeners = self._listeners
        return bool(self.factory.fast_path
                    and self.websocket_version != 0
                    and self._perMessageCompress is None
                    and self.maskClientFrames
                    and not (self.logFrames or self.logOctets or self.trackedTimings)
                    and not (listeners and listeners.get("message")))

    def _frame_at(self, data, pos, size):
        """(end, payload, first octet) of the whole fast server frame at
        ``pos`` (unmasked), or None, as the server side's."""
        if size - pos < 2:  # the smallest unmasked frame
            return None
        b0, n = data[pos], data[pos + 1]
        if (b0 != _BINARY and b0 != _TEXT) or n >= 0x80:
            return None  # a masked server frame, say: Autobahn's, which fails it
        if n < 126:
            start = pos + 2
        else:
            start, n = payload_bounds(data, pos, size, n, 0)
        end = start + n
        return (end, data[start:end], b0) if end <= size and n <= self._in_limit else None

    def _frame(self, payload, n, isBinary):
        """One masked client frame of ``payload`` (``n`` octets)."""
        b0 = _BINARY if isBinary else _TEXT
        if n < 126:
            header = bytes((b0, 0x80 | n))
        elif n < 0x10000:
            header = _MASKED_16(b0, 0x80 | 126, n)
        else:
            header = _MASKED_64(b0, 0x80 | 127, n)
        mask = os.urandom(4)
        return header + mask + unmask(payload, mask)


class EagerClient(transport.EagerWrites, tcp.Client):
    """A client TCP transport with :class:`~lapps.fast.transport.EagerWrites`.
    :mod:`lapps.fast.dispatch` caches its log context as for the server's; Twisted
    renames the transport (``logstr``) once connected, which drops the cache."""

    log_context = None
    _logstr = tcp.Client.logstr

    @property
    def logstr(self):
        return self._logstr

    @logstr.setter
    def logstr(self, value):
        self._logstr, self.log_context = value, None


class EagerConnector(tcp.Connector):
    def _makeTransport(self):
        return EagerClient(self.host, self.port, self.bindAddress, self, self.reactor)


class _EagerConnecting:
    """What ``TCP4ClientEndpoint`` and ``TCP6ClientEndpoint`` use of their
    reactor, ``connectTCP``, with :class:`EagerConnector`."""

    def __init__(self, reactor):
        self.reactor = reactor

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        connector = EagerConnector(host, port, factory, timeout, bindAddress, self.reactor)
        connector.connect()
        return connector


def _posix(reactor, cls, method):
    """Whether ``reactor`` is a POSIX one and Twisted's ``cls`` has ``method``."""
    return isinstance(reactor, posixbase.PosixReactorBase) and callable(
        getattr(cls, method, None))


def adopt(reactor, fileno, family, factory, eager=True):
    """Give ``reactor`` a connected, non-blocking socket (it takes a copy),
    as ``adoptStreamConnection`` does; with ``eager``, on a transport that
    writes at once (:class:`~lapps.fast.transport.EagerServer`:
    Twisted's adopted connections are its ``Server`` transports) where
    Twisted allows it."""
    if eager and _posix(reactor, tcp.Server, "_fromConnectedSocket"):
        transport.EagerServer._fromConnectedSocket(fileno, family, factory, reactor)
    else:
        reactor.adoptStreamConnection(fileno, family, factory)


def connecting(reactor, eager=True):
    """The reactor to give a TCP client endpoint: with ``eager``, one that
    makes :class:`EagerClient` transports where Twisted allows it, else
    ``reactor``."""
    if eager and _posix(reactor, tcp.Connector, "_makeTransport"):
        return _EagerConnecting(reactor)
    return reactor
