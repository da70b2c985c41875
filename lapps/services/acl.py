"""The ``acl`` service: the global network ACL, applied when a TCP connection
is accepted, and the per-service ACLs, applied in the WebSocket handshake.

The global ACL guards the listening port's factory: for a denied peer
``buildProtocol`` returns None and Twisted closes the socket at once, before
a byte is read, so no TLS (or any other) work is done for it. The guard
hands an allowed connection the listener's own protocol, so it costs nothing
after the accept. Each denial is counted and logged as ``acl.denied``.
A reload replaces every ACL at once (:meth:`AclService.replace`); the
connections already made are not judged again.
"""

from collections import Counter

from twisted.application.service import Service
from twisted.internet.address import IPv6Address
from twisted.internet.interfaces import ILoggingContext, IProtocolFactory
from twisted.logger import Logger
from zope.interface import implementer

from lapps import metrics
from lapps.acl import Acl

log = Logger(namespace="lapps.acl")

#: The ``scope`` of a denial by the server's ACL (else the service's name).
GLOBAL = "global"


def describe_peer(address) -> str:
    """A peer as the connection log lines show it (``tcp4:127.0.0.1:5000``)."""
    kind = "tcp6" if isinstance(address, IPv6Address) else "tcp4"
    return f"{kind}:{getattr(address, 'host', address)}:{getattr(address, 'port', '')}"


class AclService(Service):
    """The server's ACL (``server["acl"]``) and each service's (``acls``:
    service name → its ``acl`` config object). ``denied`` counts the denials
    by scope (``"global"`` or the service name)."""

    name = "acl"

    def __init__(self, server_acl, acls=None):
        self.denied = Counter()
        self._rules = None
        self.replace(server_acl, acls)

    def replace(self, server_acl, acls=None):
        """Judge the connections from now on by these ACLs (the ``server``
        ``acl`` config object, and service name → its ``acl``); returns
        whether any decision can differ from before. Denial counts go on."""
        self.server_acl = Acl.from_config(server_acl)
        self.service_acls = {name: Acl.from_config(section)
                             for name, section in (acls or {}).items()}
        self.service_acls = {name: acl for name, acl in self.service_acls.items()
                             if not acl.allows_everyone}
        rules = {scope: (acl.policy, acl.networks)
                 for scope, acl in [(GLOBAL, self.server_acl), *self.service_acls.items()]}
        changed, self._rules = rules != self._rules, rules
        if changed and self.running:
            self._log_rules()
        return changed

    def guard(self, factory):
        """The factory to listen with: a :class:`GuardedFactory` in front of
        ``factory`` (always, since a reload may make the global ACL deny)."""
        return GuardedFactory(self, factory)

    def admits(self, address) -> bool:
        """The global decision for a connecting peer (a Twisted address)."""
        if self.server_acl.allows(address.host):
            return True
        metrics.refused_at_accept("acl_denied")
        self._denied(GLOBAL, describe_peer(address))
        return False

    def admits_to(self, service, address, peer=None) -> bool:
        """The decision of ``service``'s ACL for a peer (a Twisted address;
        ``peer`` is its description for the log, if already made)."""
        acl = self.service_acls.get(service)
        if acl is None or acl.allows(address.host):
            return True
        self._denied(service, peer or describe_peer(address))
        return False

    def _denied(self, scope, peer):
        self.denied[scope] += 1
        log.info("{peer} denied by {where} ({count} denied so far)",
                 lapps_event="acl.denied", peer=peer, scope=scope, where=_name(scope),
                 count=self.denied[scope])

    def startService(self):
        super().startService()
        self._log_rules()

    def _log_rules(self):
        for scope, acl in [(GLOBAL, self.server_acl), *self.service_acls.items()]:
            if not acl.allows_everyone:
                log.info("{where}: {policy} all except {entries}", lapps_event="acl.rules",
                         scope=scope, where=_name(scope), policy=acl.policy,
                         entries=", ".join(map(str, acl.networks)) or "none")

    def stopService(self):
        super().stopService()
        if self.denied:
            log.info("connections denied: {text}", lapps_event="acl.summary",
                     counts=dict(self.denied),
                     text=", ".join(f"{count} by {_name(scope)}"
                                    for scope, count in self.denied.items()))


def _name(scope):
    return "the global ACL" if scope == GLOBAL else f"the ACL of service {scope}"


@implementer(IProtocolFactory, ILoggingContext)
class GuardedFactory:
    """``factory`` behind a judge of connecting peers (``judge.admits(address)``:
    the global ACL, or :mod:`lapps.services.peer_limits`): a refused peer gets
    no protocol (Twisted closes its socket); an admitted one gets ``factory``'s."""

    def __init__(self, judge, factory):
        self.judge, self.factory = judge, factory

    def buildProtocol(self, addr):
        if not self.judge.admits(addr):
            return None
        return self.factory.buildProtocol(addr)

    def doStart(self):
        self.factory.doStart()

    def doStop(self):
        self.factory.doStop()

    def logPrefix(self):
        inner = self.factory
        return inner.logPrefix() if ILoggingContext.providedBy(inner) else type(inner).__name__
