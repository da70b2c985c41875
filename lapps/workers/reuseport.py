"""One port for every worker: SO_REUSEPORT lets each worker bind its own
listening socket on it, and the kernel spreads new connections over them
(a hash of the peer's address and port), so no process hands sockets to
another and a worker that dies only loses its own queue.

The supervisor :func:`reserve`\\ s the port first with a bound socket that
never listens: that turns ``"port": 0`` into one concrete port for all the
workers, makes "port in use" a start-up error in the parent, and keeps the
port the server's while every worker is down for a restart (a socket that
does not listen receives no connection)."""

import socket

from twisted.internet import tcp

from lapps.fast.transport import EagerPort


def _family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def reserve(ip, port):
    """A socket bound to ``ip``:``port`` with SO_REUSEPORT, not listening;
    ``OSError`` (EADDRINUSE, ...) if the address cannot be had.

    A port is first bound without SO_REUSEPORT, and let go: a server of the
    same user already listening there with SO_REUSEPORT (this one started
    twice) would otherwise be joined silently and get half the connections."""
    check_free(ip, port)
    return _bound(ip, port, reuse_port=True)


def check_free(ip, port):
    """Raise ``OSError`` (EADDRINUSE, ...) if ``ip``:``port`` cannot be
    bound now without SO_REUSEPORT (port 0 always can)."""
    if port != 0:
        _bound(ip, port, reuse_port=False).close()


def _bound(ip, port, reuse_port):
    sock = socket.socket(_family(ip), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((ip, port))
    except OSError:
        sock.close()
        raise
    return sock


class _ReusePort:
    """Mixed into a ``tcp.Port``: its socket is bound with SO_REUSEPORT."""

    def createInternetSocket(self):
        sock = super().createInternetSocket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return sock


class ReusePort(_ReusePort, tcp.Port):
    """Twisted's transports (``fast_path`` off)."""


class EagerReusePort(_ReusePort, EagerPort):
    """The fast path's eager-write transports (``fast_path`` on)."""


def port_class(eager):
    """The ports of a worker's listener: with the fast path's transports when ``eager``."""
    return EagerReusePort if eager else ReusePort
