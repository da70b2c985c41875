"""``LAppSService``: the whole server as one Twisted service, for ``twistd``
and for any application that embeds it.

It touches no signal handler and no global log observer and never runs the
reactor: add it to an ``Application`` (or start it yourself) and it serves.
``stopService`` is bounded by ``shutdown_timeout``; ``reload()`` applies a
new configuration without a restart (the ``twistd`` plugin calls it on
SIGHUP).
"""

import dataclasses
import os

from OpenSSL import SSL
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, DeferredLock, inlineCallbacks, succeed
from twisted.logger import Logger

from lapps import admin, bus, config as configuration, metrics, tls
from lapps.bus import BusUnavailable
from lapps.deadline import within
from lapps.deploy.deployer import Deployer
from lapps.lua.runtime import LuaStartError
from lapps import fast
from lapps.protocols.server import LAppSServerFactory
from lapps.reload import Reloaded, plan_services, server_changes
from lapps.schema import pointer
from lapps.services.listener import ListenerService
from lapps.services.lua_service import ServerParts
from lapps.services.acl import AclService
from lapps.services.pam_auth import PamAuth
from lapps.services.peer_limits import PeerLimits
from lapps.services.reactive import ReactiveService
from lapps.services.standalone import StandaloneService
from lapps.start_order import services_to_start
from lapps.watchdog import Watchdog

log = Logger(namespace="lapps")

#: Close codes for the clients of a service a reload stops (RFC 6455 registry).
GOING_AWAY, SERVICE_RESTART = 1001, 1012


def _as_config(config):
    if isinstance(config, configuration.Config):
        return config
    if isinstance(config, dict):
        return configuration.from_dict(config, os.getcwd())
    return configuration.load(os.fspath(config))


def _build(config, parts, names):
    """Lua services for ``names`` (their modules loaded); a module that
    does not load is a :class:`ConfigError` line."""
    built, problems = [], []
    for name in names:
        service = config.services[name]
        try:
            kind = StandaloneService if service.standalone else ReactiveService
            built.append(kind(service, parts))
        except LuaStartError as e:
            problems.append(f"{config.source}: {pointer('/services', name)}: {e}")
    if problems:
        raise configuration.ConfigError(problems)
    return built


def _routes(services):
    return {s.config.request_target: s for s in services if not s.config.standalone}


def _service_acls(config):
    return {name: s.acl for name, s in config.services.items()}


def _server_tls(config):
    return tls.server_options(config.cert_file, config.key_file,
                              config.server["tls_server_version"])


def _stop_in_dependency_order(services, stop, unstopped):
    """Run ``stop(service)`` for each service once every service that
    depends on it has stopped; the others stop side by side, so one that
    hangs holds up only what it depends on. ``unstopped`` (a set of names)
    loses each name as its stop ends."""
    stopping = {}
    for service in reversed(services):  # dependents come after their dependencies
        dependents = [stopping[s.name] for s in services
                      if s.name in stopping and service in s.dependencies]

        def go(_, service=service):
            def stopped(result):
                unstopped.discard(service.name)
                return result  # a failure stays there, and is logged
            return stop(service).addBoth(stopped)

        stopping[service.name] = DeferredList(dependents).addCallback(go)
    return DeferredList(list(stopping.values()))


class LAppSService(MultiService):
    """The lapps server built from a config path, a config dict (one-file
    form; relative paths against the working directory) or a loaded
    :class:`lapps.config.Config`. Lua modules are loaded here, so a broken
    service raises :class:`lapps.config.ConfigError` before anything starts.

    The Lua services (``lua_services``, in start order) are started and
    stopped by this service itself rather than as named children, so that a
    reload can start a service's new version beside the old one.

    ``worker`` (a :class:`lapps.workers.role.WorkerRole`) makes it one of
    several worker processes: it listens on the supervisor's port beside
    the others and runs only the services that role runs."""

    def __init__(self, config, reactor=None, worker=None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.worker = worker
        self.config = cfg = _as_config(config)
        self._started_with = cfg.server  # what only a restart changes stays as it was
        # as LAppS does, for services that read it (also at module load)
        os.environ["LAPPS_APPS_DIR"] = os.path.join(cfg.apps_dir, "")
        self.connections = {}
        # first, so that /readyz answers while the rest starts; a worker has none (its
        # supervisor does); stopped last, by _stop_all
        self.admin = None if worker else admin.build(cfg.server, admin.ProcessStatus(self),
                                                     reactor)
        if self.admin is not None:
            self.admin.setServiceParent(self)
        self.acl = AclService(cfg.server["acl"], _service_acls(cfg))
        self.acl.setServiceParent(self)
        self.pam_auth = PamAuth(cfg.server["pam_auth"], reactor)
        self.pam_auth.setServiceParent(self)
        try:
            self.bus = bus.build(cfg.server["bus"], cfg.server["mqr"], self.connections, reactor,
                                 host_link=worker.bus_link if worker else None)
        except BusUnavailable as e:
            raise configuration.ConfigError([f"{cfg.source}: bus: {e}"]) from None
        if self.bus.connection is not None:  # before the Lua services, which wait for it
            self.bus.connection.setServiceParent(self)
        self.mqr = self.bus.queues
        self.mqr.setServiceParent(self)
        self.broadcasts = self.bus.broadcasts
        self.broadcasts.setServiceParent(self)
        server = cfg.server
        # the server key, unless a private name it relies on is missing here (logged)
        self.fast = fast.wing(reactor, server["fast_path"])
        self.fast_path = self.fast.enabled
        self.parts = ServerParts(cfg.lua_path, self.connections, self.broadcasts, reactor,
                                 tls.ClientTLS(cfg.ca_file, server["tls_client_version"],
                                               server["tls_client_verify"]),
                                 pam_auth=self.pam_auth, mqr=self.mqr,
                                 fast_path=self.fast_path)
        self.lua_services = _build(cfg, self.parts, self._wanted(cfg))
        self._wire(self.lua_services)
        self.factory = LAppSServerFactory(_routes(self.lua_services), self.connections,
                                          self.broadcasts, acl=self.acl)
        self.factory.fast_path = self.fast_path
        scheme = "wss" if server["tls"] else "ws"
        self.server_tls = tls.ServerTLS(_server_tls(cfg)) if server["tls"] else None
        endpoint = worker.endpoint(server, self.fast) if worker else \
            self.fast.endpoint(server["port"], server["ip"])
        port = worker.port if worker else server["port"]
        self.listener = ListenerService(endpoint, self.factory, f"{scheme}://{server['ip']}:{port}",
                                        reactor, tls=self.server_tls, acl=self.acl,
                                        peer_limits=PeerLimits(server["limits"], reactor))
        if self.fast_path:
            self.listener.tls_clock, self.listener.tls_factory = \
                self.fast.tls_clock, self.fast.tls_factory
        self.listener.setServiceParent(self)
        # a worker deploys nothing: its supervisor does, and reloads it
        self.deployer = None if worker else Deployer(lambda: self.config, self.reload, reactor,
                                                     metrics.deploys)
        if self.deployer is not None:
            self.deployer.setServiceParent(self)
        self.watchdog = Watchdog(server["limits"]["stall_timeout"], server["shutdown_timeout"])
        self._configure_new_connections(cfg)
        self._reloading = DeferredLock()
        self._retiring = succeed(None)  # the services a reload replaced, stopping

    def _wanted(self, cfg):
        """The services to start (a worker runs only those of its role)."""
        return [name for name in services_to_start(cfg)
                if self.worker is None or self.worker.runs(cfg.services[name])]

    def _wire(self, services):
        """Point each service at the ones it depends on, among ``services``."""
        by_name = {s.name: s for s in services}
        for service in services:
            service.dependencies = [by_name[d] for d in service.config.depends
                                    if d in by_name and d != service.name]
            if self.bus.connection is not None:  # the Lua services start once the bus is there
                service.dependencies.append(self.bus.connection)

    def _configure_new_connections(self, cfg):
        """The server settings each new connection is made with (limits),
        set on the factory and the listener here, at start and at every
        reload, so that a reload applies them (see ``lapps.reload.LIVE``)."""
        workers = cfg.server["workers"]
        # the worker count is one a restart changes: the cap uses the started one
        # (a worker process is one of them: its cap is the per-worker one)
        started_workers = 1 if self.worker else max(1, self._started_with["workers"]["workers"])
        self.factory.max_connections = started_workers * workers["max_connections"]
        self.factory.setProtocolOptions(autoFragmentSize=1392 if workers["auto_fragment"] else 0)
        self.factory.access_log = cfg.server["access_log"]
        self.factory.apply_limits(cfg.server["limits"])
        self.listener.peer_limits.configure(cfg.server["limits"])
        self.watchdog.configure(cfg.server["limits"]["stall_timeout"],
                                cfg.server["shutdown_timeout"])

    # Life.

    def startService(self):
        super().startService()
        self.watchdog.start()
        for service in self.lua_services:
            service.startService()
        self.reactor.callWhenRunning(self._log_when_ready)

    def _log_when_ready(self):
        connection = self.bus.connection
        waits = [] if connection is None else [connection.when_ready()]
        if self.worker is not None:  # its supervisor's readiness (READY=1) rests on this line
            waits.append(self.when_ready())
        DeferredList(waits).addCallback(lambda _: self._ready())

    def _ready(self):
        """The reactor runs (so signals are handled), the port is bound and
        the bus, if shared, is available; in a worker process, its Lua services
        have started too (see :meth:`when_ready`)."""
        log.info("lapps ready: {services} services, {description}",
                 lapps_event="server.ready", services=len(self.lua_services),
                 description=self.listener.description)

    def when_ready(self):
        """A Deferred that fires once the service has started (its port is
        bound), the reactor runs and every Lua service has started its
        instances (what ``READY=1`` tells systemd). Ask once started."""
        running = Deferred()
        self.reactor.callWhenRunning(running.callback, None)
        waits = [running] + [s.when_ready() for s in self.lua_services]
        return DeferredList(waits, fireOnOneErrback=True).addCallback(lambda _: None)

    def stopService(self):
        """Stop accepting and close every connection with 1001 (each gets its
        ``onDisconnect``; half the ``shutdown_timeout`` at most, then the
        rest are aborted) before the Lua services stop, each after those
        that depend on it; then mqr, pam_auth and the ACLs. The Deferred
        fires when all that is done or ``shutdown_timeout`` has passed,
        whichever is first; what was cut short is logged
        (``server.stop_cut_short``). Standalone threads that did not stop
        are daemon threads: they do not keep the process alive."""
        Service.stopService(self)
        timeout = self.config.server["shutdown_timeout"]
        unstopped = {s.name for s in self.lua_services}
        stopping = self._stop_all(timeout / 2, unstopped)
        return within(stopping, timeout, self.reactor).addCallback(
            self._stopped, timeout, unstopped).addBoth(self.watchdog.stop)

    @inlineCallbacks
    def _stop_all(self, drain_timeout, unstopped):
        if self.deployer is not None:
            yield self.deployer.stopService()
        self.listener.drain_timeout = min(self.listener.drain_timeout, drain_timeout)
        yield self.listener.stopService()
        yield _stop_in_dependency_order(self.lua_services, lambda s: s.stopService(), unstopped)
        yield self._retiring
        yield self.mqr.stopService()
        if self.bus.connection is not None:
            yield self.bus.connection.stopService()
        yield self.pam_auth.stopService()
        yield self.acl.stopService()
        if self.admin is not None:
            yield self.admin.stopService()

    def _stopped(self, in_time, timeout, unstopped):
        if in_time:
            return
        connections = len(self.factory.protocols)
        services = sorted(unstopped)
        threads = [name for s in self.lua_services if s.config.standalone
                   for name in s.stuck_threads()]
        log.error("stop cut short after {timeout} s: {connections} connections still open; "
                  "services not stopped: {services_text}; threads left running: {threads_text}",
                  lapps_event="server.stop_cut_short", timeout=timeout, connections=connections,
                  services=services, threads=threads,
                  services_text=", ".join(services) or "none",
                  threads_text=", ".join(threads) or "none")

    # Reload.

    def reload(self, config=None):
        """Re-read the configuration from its file (or take ``config``, in
        any form the constructor takes) and apply it without a restart.

        A config that does not validate, or a service module that does not
        load, changes nothing: each error line is logged
        (``config.reload_failed``) and the Deferred fails with
        :class:`lapps.config.ConfigError`. Otherwise the ACLs, the TLS
        certificate (re-read even from unchanged paths) and the connection
        limits apply to new connections at once; services whose descriptor
        changed get a new version (their clients are closed with 1012,
        Service Restart), new ones start, removed ones stop (1001); the
        routes switch in one step, and connections of unchanged services go
        on. Server keys that only a restart applies (the listening address,
        TLS on/off, ...) are logged (``config.reload_needs_restart``). The
        Deferred fires with a :class:`lapps.reload.Reloaded` once the
        replaced services have stopped. Reloads run one at a time."""
        return self._reloading.run(self._reload, config)

    @inlineCallbacks
    def _reload(self, config):
        try:
            if not self.running:
                raise configuration.ConfigError(
                    [f"{self.config.source}: the server is not running; nothing reloaded"])
            if config is None and not os.path.isfile(self.config.source):
                raise configuration.ConfigError(
                    [f"{self.config.source}: not a file to re-read; pass the new config"])
            cfg = _as_config(self.config.source if config is None else config)
            change = self._prepare(cfg)
        except configuration.ConfigError as e:
            for line in e.lines:
                log.error("reload failed, the running configuration stays: {line}",
                          lapps_event="config.reload_failed", line=line)
            self._count_reload("failed")
            raise
        retired, result = self._switch(cfg, *change)
        self._count_reload("ok")
        self._retiring = _stop_in_dependency_order(
            retired, lambda s: self._retire(s, s.name in result.restarted), set())
        yield self._retiring
        return result

    def _count_reload(self, result):
        if self.worker is None:  # a worker's supervisor counts the reloads it orders
            metrics.config_reloads.labels(result).inc()

    def _prepare(self, cfg):
        """Everything that can fail, done before anything changes."""
        running = {s.name: s.config for s in self.lua_services}
        plan = plan_services(running, self._wanted(cfg), cfg.services)
        parts = dataclasses.replace(self.parts, lua_path=cfg.lua_path)
        running_apps_dir = os.environ["LAPPS_APPS_DIR"]
        os.environ["LAPPS_APPS_DIR"] = os.path.join(cfg.apps_dir, "")  # seen at module load
        try:
            built = _build(cfg, parts, plan.start + plan.restart)
        finally:
            os.environ["LAPPS_APPS_DIR"] = running_apps_dir
        options = None
        if cfg.server["tls"] and self.server_tls is not None:
            try:
                options = _server_tls(cfg)
            except (OSError, ValueError, SSL.Error) as e:  # checked at load; files may change
                raise configuration.ConfigError([f"{cfg.cert_file}: {e}"]) from e
        return plan, parts, built, options

    def _switch(self, cfg, plan, parts, built, options):
        """Apply a prepared reload, all in one reactor turn: new connections
        see either the old configuration or the new one, never a mix."""
        old, self.config, self.parts = self.config, cfg, parts
        os.environ["LAPPS_APPS_DIR"] = os.path.join(cfg.apps_dir, "")
        applied, needs_restart = server_changes(self._started_with, old.server, cfg.server)
        acl = self.acl.replace(cfg.server["acl"], _service_acls(cfg))
        certificate = False
        if options is not None:
            certificate = tls.fingerprint(options) != tls.fingerprint(self.server_tls.options)
            self.server_tls.options = options
        self._configure_new_connections(cfg)

        by_name = {s.name: s for s in self.lua_services + built}
        for name in plan.keep:  # the same but for its acl, already swapped
            by_name[name].config = cfg.services[name]
        retired = [s for s in self.lua_services if s.name in plan.stop + plan.restart]
        self.lua_services = [by_name[name] for name in plan.wanted]
        self._wire(self.lua_services)
        for service in built:
            service.startService()
        self.factory.routes = _routes(self.lua_services)

        result = Reloaded(added=plan.start, removed=plan.stop, restarted=plan.restart,
                          applied=applied, needs_restart=needs_restart, acl=acl,
                          certificate=certificate)
        log.info("configuration reloaded from {source}: {text}", lapps_event="config.reloaded",
                 source=cfg.source, text=str(result), **dataclasses.asdict(result))
        if needs_restart:
            log.warn("these changes apply only after a restart: {text}",
                     lapps_event="config.reload_needs_restart", keys=list(needs_restart),
                     text=", ".join(needs_restart))
        return retired, result

    def _retire(self, service, restarted):
        """Close the clients of a service a reload replaced (1012) or removed
        (1001), then stop it: onDisconnect for each client, then onShutdown."""
        code, reason = (SERVICE_RESTART, b"service restart") if restarted else \
            (GOING_AWAY, b"service removed")
        clients = [c for c in self.connections.values() if c.instance.service is service]
        closing = self.factory.close(clients, code, reason, self.listener.drain_timeout,
                                     self.reactor)
        return closing.addCallback(lambda _: service.stopService())
