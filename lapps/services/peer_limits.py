"""Per-peer connection limits, decided when a TCP connection is accepted.

A peer (an IP address) may hold ``peer_max_connections`` connections at
once, and open new ones at ``peer_connection_rate`` per second after a
burst of ``peer_connection_burst``: a token bucket, kept as the time at
which the peer's bucket is full again (the GCRA form: one number per peer,
no timers). Peers in ``peer_exempt`` (by default the host's own loopback
addresses) are not counted. A connection over a limit gets no protocol, so
Twisted closes its socket at once, before a byte is read or any TLS work
is done, exactly as for the global ACL (:class:`lapps.services.acl.GuardedFactory`, whose
judge runs first). Nothing else is stopped.

Refusals are logged as ``limit.peer`` at the 1st, 2nd, 4th, 8th, ...
refusal in a row of a peer, so a flood costs a few log lines, not one per
connection. A peer is forgotten once it has nothing open and a full bucket;
the forgetting is done in sweeps, when the table has doubled since the last.
"""

from twisted.logger import Logger

from lapps import metrics
from lapps.acl import Acl
from lapps.services.acl import GuardedFactory, describe_peer

log = Logger(namespace="lapps.limits")

#: The table size below which no sweep is done.
_MIN_SWEEP = 1024


class _Peer:
    __slots__ = ("open", "full_at", "refused")

    def __init__(self, now):
        self.open, self.full_at, self.refused = 0, now, 0


class PeerLimits:
    """The accounting, for a listener: :meth:`guard` wraps its factory.
    ``clock`` has ``seconds()`` (the reactor); ``limits`` is the server's
    ``limits`` config object; :meth:`configure` replaces it (a reload), for
    the connections accepted from then on."""

    def __init__(self, limits, clock):
        self.clock = clock
        self._peers = {}
        self._sweep_at = _MIN_SWEEP
        self.configure(limits)

    def configure(self, limits):
        self.max_connections = limits["peer_max_connections"]
        self.rate, self.burst = limits["peer_connection_rate"], limits["peer_connection_burst"]
        self._interval = 1.0 / self.rate
        self._slack = (self.burst - 1) * self._interval  # how far ahead a bucket may be drained
        self.exempt = Acl(exclude=limits["peer_exempt"])

    def guard(self, factory):
        """The factory to listen with: ``factory`` behind these limits."""
        return PeerLimitedFactory(self, factory)

    def admits(self, address) -> bool:
        """Whether a connection from ``address`` (a Twisted address) may be
        made; if so it is counted until :meth:`release`."""
        if self.exempt.matches(address.host):
            return True
        now = self.clock.seconds()
        peer = self._peers.get(address.host)
        if peer is None:
            if len(self._peers) >= self._sweep_at:
                self._sweep(now)
            peer = self._peers[address.host] = _Peer(now)
        if peer.open >= self.max_connections:
            return self._refuse(peer, address, "connections")
        full_at = max(peer.full_at, now)
        if full_at - now > self._slack:
            return self._refuse(peer, address, "rate")
        peer.full_at = full_at + self._interval
        peer.open += 1
        peer.refused = 0
        return True

    def release(self, host):
        """A connection admitted by :meth:`admits` has ended."""
        peer = self._peers.get(host)
        if peer is not None and peer.open:  # (an exempt peer is not counted)
            peer.open -= 1

    def _refuse(self, peer, address, limit):
        """Count a refusal; log it if it is the 1st, 2nd, 4th, ... in a row
        (the reason is worded only then: a flood is refused cheaply)."""
        peer.refused += 1
        metrics.refused_at_accept("peer_limit")
        if peer.refused & (peer.refused - 1) == 0:  # a power of two
            why = (f"{peer.open} connections open (peer_max_connections)"
                   if limit == "connections" else
                   f"over {self.rate:g} new connections per second after a burst "
                   f"of {self.burst} (peer_connection_rate, peer_connection_burst)")
            log.warn("{peer} refused at accept: {why} ({refused} refused in a row)",
                     lapps_event="limit.peer", peer=describe_peer(address), limit=limit,
                     why=why, refused=peer.refused)
        return False

    def _sweep(self, now):
        self._peers = {host: peer for host, peer in self._peers.items()
                       if peer.open or peer.full_at > now}
        self._sweep_at = max(_MIN_SWEEP, 2 * len(self._peers))


class PeerLimitedFactory(GuardedFactory):
    """``factory`` behind :class:`PeerLimits`. An admitted connection is
    released when its protocol's ``connectionLost`` has run, which Twisted
    calls once however the connection ends. The hook is set on the protocol
    itself rather than through a wrapping protocol, so that nothing is added
    to the path of each read and write."""

    def buildProtocol(self, addr):
        if not self.judge.admits(addr):
            return None
        protocol = None
        try:
            protocol = self.factory.buildProtocol(addr)
        finally:
            if protocol is None:  # no connection to wait for (or an error)
                self.judge.release(addr.host)
        if protocol is not None:
            _release_when_lost(protocol, self.judge, addr.host)
        return protocol


def _release_when_lost(protocol, limits, host):
    lost = protocol.connectionLost

    def connectionLost(reason):
        try:
            lost(reason)
        finally:
            limits.release(host)

    protocol.connectionLost = connectionLost
