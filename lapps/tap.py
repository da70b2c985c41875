"""``twistd lapps``: options validated up front, then the service, with
SIGHUP reloading the configuration (an embedded ``LAppSService`` touches
no signal: its host calls ``reload()`` when it wants)."""

import sys

from twisted.application.service import MultiService
from twisted.python import usage

from lapps import admin, config as configuration, metrics
from lapps.app import LAppSService
from lapps.child_check import check_in_child
from lapps.collector import FreezeWhenReady
from lapps.config import ConfigError
from lapps.deploy.deployer import Deployer
from lapps.hangup import ReloadOnHangup
from lapps.systemd import SystemdNotifier
from lapps.workers import reuseport


class Options(usage.Options):
    synopsis = "--config PATH"
    longdesc = ("Serve the Lua services described by a lapps config (LAppS's lapps.json "
                "with ws.json beside it, or one file with the server keys under \"server\"). "
                "SIGHUP reloads the config; SIGTERM stops within its shutdown_timeout.")
    optParameters = [["config", "c", "etc/lapps.json", "The lapps config file."]]

    def postOptions(self):
        """Load and check everything now, so a bad config stops ``twistd``
        with one line per problem and no traceback."""
        try:
            self.service = _server(self["config"])
        except ConfigError as e:
            for line in e.lines:
                print(line, file=sys.stderr)
            raise SystemExit(1)


def _server(path):
    """One process (``workers.workers`` 0 or 1), or a supervisor of worker
    processes (:mod:`lapps.workers`)."""
    cfg = configuration.load(path)
    supervised = cfg.server["workers"]["workers"] > 1
    _refuse_ports_in_use(cfg, ws_port=not supervised)  # the supervisor reserves its own
    if supervised:
        from lapps.workers.supervisor import Supervisor
        return Supervisor(cfg)
    return LAppSService(cfg)


def _refuse_ports_in_use(cfg, ws_port):
    """A port already in use stops ``twistd`` here with one line, rather
    than with a traceback once the service starts."""
    server, problems = cfg.server, []
    wanted = [(server["admin"]["ip"], server["admin"]["port"])]
    if ws_port:
        wanted.insert(0, (server["ip"], server["port"]))
    for ip, port in wanted:
        try:
            reuseport.check_free(ip, port)
        except OSError as e:
            problems.append(f"{cfg.source}: cannot listen on {ip} port {port}: {e.strerror or e}")
    if problems:
        raise ConfigError(problems)


def _check_and_reload(supervisor):
    """A deploy's new config, for worker processes: every module loaded by
    ``lapps check`` as a worker would load it (the supervisor cannot see a
    worker's reload fail), then the reload."""
    config = supervisor.config
    return check_in_child(config.source, config.server["deploy"]["check_timeout"],
                          supervisor.reactor).addCallback(lambda _: supervisor.reload())


def makeService(options):
    fast = getattr(options.service, "fast", None)
    if fast is not None:  # the epoll reactor's cheaper dispatch
        fast.install_dispatch()
    top = MultiService()
    served = options.service  # a single process has its admin listener inside
    if isinstance(served, LAppSService):  # its watchdog sees SIGTERM even with Lua stuck in C
        served.reactor.callWhenRunning(served.watchdog.watch_stop_signals)
    else:  # a supervisor: around it; it deploys, and its reload reaches the workers
        supervisor = served
        served = admin.for_supervisor(supervisor)
        Deployer(lambda: supervisor.config, lambda _config: _check_and_reload(supervisor),
                 supervisor.reactor, metrics.supervisor_deploys).setServiceParent(top)
    served.setServiceParent(top)
    ReloadOnHangup(options.service).setServiceParent(top)
    SystemdNotifier(options.service.when_ready).setServiceParent(top)  # after: asks at start
    FreezeWhenReady(options.service.when_ready).setServiceParent(top)
    return top
