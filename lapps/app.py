"""``LAppSService``: the whole server as one Twisted service, for ``twistd``
and for any application that embeds it.

It touches no signal handler and no global log observer and never runs the
reactor: add it to an ``Application`` (or start it yourself) and it serves.
"""

import os

from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from lapps import config as configuration, tls
from lapps.lua.runtime import LuaStartError
from lapps.protocols.server import LAppSServerFactory
from lapps.schema import pointer
from lapps.services.listener import ListenerService
from lapps.services.lua_service import ServerParts
from lapps.services.acl import AclService
from lapps.services.bcast import Broadcasts
from lapps.services.mqr import MessageQueues
from lapps.services.pam_auth import PamAuth
from lapps.services.reactive import ReactiveService
from lapps.services.standalone import StandaloneService

log = Logger(namespace="lapps")


def _as_config(config):
    if isinstance(config, configuration.Config):
        return config
    if isinstance(config, dict):
        return configuration.from_dict(config, os.getcwd())
    return configuration.load(os.fspath(config))


def services_to_start(config):
    """Every ``auto_start`` service and, recursively, what it depends on.
    A dependency without a descriptor is logged and ignored."""
    chosen = []

    def add(name, wanted_by):
        if name in chosen:
            return
        if name not in config.services:
            log.warn("service {wanted_by} depends on {name}, which has no descriptor; ignored",
                     lapps_event="service.missing_dependency", wanted_by=wanted_by, name=name)
            return
        for dependency in config.services[name].depends:
            if dependency != name:
                add(dependency, name)
        chosen.append(name)

    for name, service in config.services.items():
        if service.auto_start:
            add(name, None)
    return chosen


def _endpoint(server, reactor):
    """A TCP endpoint: the listener layers TLS itself, above the global ACL."""
    ip, port = server["ip"], server["port"]
    if ":" in ip:
        return endpoints.TCP6ServerEndpoint(reactor, port, interface=ip)
    return endpoints.TCP4ServerEndpoint(reactor, port, interface=ip)


class LAppSService(MultiService):
    """The lapps server built from a config path, a config dict (one-file
    form; relative paths against the working directory) or a loaded
    :class:`lapps.config.Config`. Lua modules are loaded here, so a broken
    service raises :class:`lapps.config.ConfigError` before anything starts."""

    def __init__(self, config, reactor=None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = cfg = _as_config(config)
        # as LAppS does, for services that read it (also at module load)
        os.environ["LAPPS_APPS_DIR"] = os.path.join(cfg.apps_dir, "")
        self.connections = {}
        self.acl = AclService(cfg.server["acl"],
                              {name: s.acl for name, s in cfg.services.items()})
        self.acl.setServiceParent(self)
        self.pam_auth = PamAuth(cfg.server["pam_auth"], reactor)
        self.pam_auth.setServiceParent(self)
        self.mqr = MessageQueues(cfg.server["mqr"]["max_queue"])
        self.mqr.setServiceParent(self)
        self.broadcasts = Broadcasts(self.connections, reactor)
        self.broadcasts.setServiceParent(self)
        server = cfg.server
        parts = ServerParts(cfg.lua_path, self.connections, self.broadcasts, reactor,
                            tls.client_options(cfg.ca_file, server["tls_client_version"],
                                               server["tls_client_verify"]),
                            pam_auth=self.pam_auth, mqr=self.mqr)
        self.lua_services = []
        problems = []
        for name in services_to_start(cfg):
            service = cfg.services[name]
            try:
                kind = StandaloneService if service.standalone else ReactiveService
                built = kind(service, parts)
            except LuaStartError as e:
                problems.append(f"{cfg.source}: {pointer('/services', name)}: {e}")
            else:
                self.lua_services.append(built)
        if problems:
            raise configuration.ConfigError(problems)
        by_name = {s.name: s for s in self.lua_services}
        for service in self.lua_services:
            service.dependencies = [by_name[d] for d in service.config.depends
                                    if d in by_name and d != service.name]
            service.setServiceParent(self)
        routes = {s.config.request_target: s for s in self.lua_services if not s.config.standalone}
        workers = cfg.server["workers"]
        factory = LAppSServerFactory(
            routes, self.connections, self.broadcasts, auto_fragment=workers["auto_fragment"],
            max_connections=max(1, workers["workers"]) * workers["max_connections"],
            acl=self.acl)
        scheme = "wss" if cfg.server["tls"] else "ws"
        server_tls = tls.server_options(cfg.cert_file, cfg.key_file, server["tls_server_version"]) \
            if server["tls"] else None
        self.listener = ListenerService(_endpoint(cfg.server, reactor), factory,
                                        f"{scheme}://{cfg.server['ip']}:{cfg.server['port']}",
                                        reactor, tls=server_tls, acl=self.acl)
        self.listener.setServiceParent(self)

    def startService(self):
        super().startService()
        self.reactor.callWhenRunning(self._ready)

    def _ready(self):
        """The reactor runs (so signals are handled) and the port is bound."""
        log.info("lapps ready: {services} services, {description}",
                 lapps_event="server.ready", services=len(self.lua_services),
                 description=self.listener.description)

    @inlineCallbacks
    def stopService(self):
        """Stop accepting and close every connection (each gets its
        ``onDisconnect``) before the services shut down, in reverse order
        of their start (a service stops before what it depends on)."""
        Service.stopService(self)
        yield self.listener.stopService()
        for service in reversed(self.lua_services):
            yield service.stopService()
        yield self.mqr.stopService()
        yield self.pam_auth.stopService()
        yield self.acl.stopService()
