"""What reactive and standalone services share: a service starts its
instances only once every service it ``depends`` on is ready (its
instances have run ``onStart`` or ``init``)."""

from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList


@dataclass(frozen=True)
class ServerParts:
    """The server-wide things every Lua instance is wired to."""

    lua_path: str          # LUA_PATH entries for every service directory
    connections: dict      # open handler id -> server protocol
    broadcasts: Any        # the bcast channels
    reactor: Any
    client_tls: Any        # cws wss:// (lapps.tls.ClientTLS)
    pam_auth: Any = None   # the pam_auth service (lapps.services.pam_auth.PamAuth)
    mqr: Any = None        # the named message queues (lapps.bus)
    fast_path: bool = True  # the server key: cws connections take the fast path too


class LuaService(Service):
    """A named Lua service; subclasses start instances and say when they are ready."""

    def __init__(self, config, parts):
        self.name = config.name
        self.config, self.parts = config, parts
        self.dependencies = []
        self.instances = []
        self._ready = False
        self._waiting = []

    def when_ready(self):
        """A Deferred that fires once this service's instances have started."""
        d = Deferred()
        if self._ready:
            d.callback(None)
        else:
            self._waiting.append(d)
        return d

    def became_ready(self):
        self._ready = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def instance_started(self):
        """Each instance calls this once its onStart/init has run."""
        self._starting -= 1
        if self._starting == 0:
            self.became_ready()

    def startService(self):
        super().startService()
        self._starting = len(self.instances)
        DeferredList([d.when_ready() for d in self.dependencies]).addCallback(
            lambda _: self.start_instances())

    def start_instances(self):
        raise NotImplementedError
