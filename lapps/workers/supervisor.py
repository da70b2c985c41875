"""The supervisor: the parent of the worker processes, and nothing more
(nginx's master, crossbar's node). It holds no Lua and no client.

- It reserves the port (:func:`lapps.workers.reuseport.reserve`) and has
  ``lapps check`` load every service module in a child process, so a busy
  port, a broken module or an unreachable Redis stop the start with one
  line each, as for a single process.
- It starts ``workers.workers`` processes (``python -m
  lapps.workers.worker``) with ``worker_env`` as their environment and
  relays their log events (:mod:`lapps.workers.relay`). It logs
  ``server.ready`` once every worker has logged its own.
- On the host bus it runs the hub (:mod:`lapps.bus.host.hub`) and gives
  each worker it starts a new link to it.
- A worker that exits while the server runs is started again after a
  delay: 0.5 s, doubling at each exit in a row up to 30 s, back to 0.5 s
  once a worker has lived ``STABLE_AFTER`` seconds (``worker.exit``,
  ``worker.restart``). ``exit_hooks`` are called with the pid of every
  worker that exits (e.g. to mark a metrics process dead).
- ``stopService`` (twistd's SIGTERM) sends SIGTERM to every worker, which
  stops as a single server does (1001 to its clients), and waits for them
  up to ``shutdown_timeout`` plus ``KILL_MARGIN``; one still running then
  gets SIGKILL (``worker.killed``). ``reload`` (twistd's SIGHUP) re-reads
  the config and sends SIGHUP to every worker, which reloads itself.
- A worker's reactor writes a blank line on its log pipe every
  :data:`lapps.workers.worker.HEARTBEAT` seconds. One that has been ready
  and then stays silent past its watchdog's limit (the longest
  ``handler_timeout`` + ``limits.stall_timeout``, plus
  :data:`SILENCE_MARGIN`) is frozen in a way its own watchdog could not
  end: it gets SIGKILL (``worker.unresponsive``) and is started again.

Metrics: the workers write theirs to files in a directory the supervisor
makes for its life (prometheus_client's multiprocess mode, see
:func:`lapps.metrics.multiprocess_env`), which its ``/metrics`` adds up;
a dead worker's gauges are dropped and restarts are counted.

A worker re-reads the config file when it starts, so a restarted worker
runs the file as it is then (as a reloaded one does).
"""

import os
import shutil
import signal
import sys
import tempfile

from twisted.application.service import Service
from twisted.internet import error, protocol
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from lapps import config as configuration, metrics
from lapps.child_check import check_in_child_process
from lapps.bus.host.hub import Hub
from lapps.deadline import within
from lapps.workers import reuseport
from lapps.workers.relay import EventRelay
from lapps.workers.worker import HEARTBEAT

log = Logger(namespace="lapps.workers")

#: The worker's end of its log pipe, and of its host bus link.
LOG_FD, BUS_FD = 3, 4
#: Restart delays (seconds): the first, and the cap of the doubling.
FIRST_DELAY, MAX_DELAY = 0.5, 30.0
#: A worker that lived this long (seconds) is restarted after FIRST_DELAY again.
STABLE_AFTER = 60.0
#: Seconds past ``shutdown_timeout`` before a worker that has not stopped is killed.
KILL_MARGIN = 5.0
#: Seconds of silence past a worker's own watchdog limit before it is killed.
SILENCE_MARGIN = 3.0


def silence_limit(config):
    """Seconds a ready worker may stay silent, or None (``stall_timeout`` 0: off)."""
    stall = config.server["limits"]["stall_timeout"]
    if stall == 0:
        return None
    longest = max((s.handler_timeout for s in config.services.values()), default=1.0)
    return longest + stall + SILENCE_MARGIN


class Worker:
    """One worker slot: its current process, if any, and its history."""

    def __init__(self, index):
        self.index = index
        self.pid = None        # None while no process runs
        self.ready = False     # logged server.ready since its last start
        self.restarts = 0
        self.process = None    # the IProcessTransport
        self.started_at = None
        self.heard_at = None   # when its log pipe last carried anything (its heartbeat)
        self.ended = None      # fires when the running process has ended
        self.delay = FIRST_DELAY
        self.restart_call = None


class _WorkerProtocol(protocol.ProcessProtocol):
    def __init__(self, supervisor, worker):
        self.supervisor, self.worker = supervisor, worker
        self.relay = None

    def connectionMade(self):
        self.transport.closeStdin()
        self.relay = EventRelay(self.worker.index, self.transport.pid, self._event)

    def _event(self, event):
        if event.get("lapps_event") == "server.ready":
            self.supervisor._worker_ready(self.worker)

    def childDataReceived(self, fd, data):
        if fd == LOG_FD:
            self.worker.heard_at = self.supervisor.reactor.seconds()
            self.relay.data_received(data)

    def processEnded(self, reason):
        self.relay.flush()
        self.supervisor._worker_ended(self.worker, reason.value)


def _how(reason):
    """(exit code, signal name) of an ended process; one of them is None."""
    code, number = getattr(reason, "exitCode", None), getattr(reason, "signal", None)
    return code, None if number is None else signal.Signals(number).name


class Supervisor(Service):
    """Runs ``config.server["workers"]["workers"]`` worker processes of the
    loaded :class:`lapps.config.Config` ``config`` on one port; see the
    module docstring. Raises :class:`ConfigError` if the port cannot be had
    or the services do not load."""

    name = "supervisor"

    def __init__(self, config, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor, self.config = reactor, config
        server = config.server
        try:
            self._reserved = reuseport.reserve(server["ip"], server["port"])
        except OSError as e:
            raise configuration.ConfigError(
                [f"{config.source}: cannot listen on {server['ip']} port {server['port']}: "
                 f"{e.strerror or e}"]) from None
        self.port = self._reserved.getsockname()[1]
        try:
            check_in_child_process(config.source)
        except configuration.ConfigError:
            self._reserved.close()
            raise
        scheme = "wss" if server["tls"] else "ws"
        self.description = f"{scheme}://{server['ip']}:{self.port}"
        self._metrics_dir = tempfile.mkdtemp(prefix="lapps-metrics-")
        self.worker_env = dict(os.environ, **metrics.multiprocess_env(self._metrics_dir))
        self.exit_hooks = [metrics.worker_exited]
        self.workers = [Worker(i) for i in range(server["workers"]["workers"])]
        self.hub = Hub(server["mqr"]["max_queue"], reactor, server["mqr"]["max_queue_bytes"]) \
            if server["bus"]["backend"] == "host" else None
        self._ready = []  # Deferreds of when_ready(); None once all were ready

    def when_ready(self):
        """Fires (with this supervisor) once every worker has first been ready."""
        if self._ready is None:
            return succeed(self)
        d = Deferred()
        self._ready.append(d)
        return d

    # Life.

    def startService(self):
        super().startService()
        self.reactor.callWhenRunning(self._start_all)
        self._listening = LoopingCall(self._listen_for_heartbeats)
        self._listening.clock = self.reactor
        self._listening.start(HEARTBEAT, now=False)

    def _listen_for_heartbeats(self):
        limit, now = silence_limit(self.config), self.reactor.seconds()
        for worker in self.workers:
            if limit is None or not worker.ready or now - worker.heard_at <= limit:
                continue
            log.error("worker {index} (pid {pid}) has been silent for {silent:.1f} s "
                      "(over {limit} s): killed", lapps_event="worker.unresponsive",
                      index=worker.index, pid=worker.pid, silent=now - worker.heard_at,
                      limit=limit)
            worker.ready = False  # killed once; it is started again when it has ended
            self._signal([worker], "KILL")

    def _start_all(self):
        if self.running:
            for worker in self.workers:
                self._spawn(worker)

    def _spawn(self, worker):
        worker.restart_call = None
        args = [sys.executable, "-m", "lapps.workers.worker",
                "--config", os.path.abspath(self.config.source), "--index", str(worker.index),
                "--port", str(self.port), "--log-fd", str(LOG_FD), "--supervisor", str(os.getpid())]
        child_fds = {0: "w", 1: 1, 2: 2, LOG_FD: "r"}
        bus_link = None
        try:
            if self.hub is not None:
                bus_link = self.hub.socket_for(worker.index)
                child_fds[BUS_FD] = bus_link.fileno()
                args += ["--bus-fd", str(BUS_FD)]
            worker.process = self.reactor.spawnProcess(
                _WorkerProtocol(self, worker), sys.executable, args, env=self.worker_env,
                childFDs=child_fds)
        except OSError as e:  # no fork, no descriptors left, ...: tried again, with backoff
            log.error("worker {index} could not be started: {reason}",
                      lapps_event="worker.spawn_failed", index=worker.index, reason=str(e))
            self._schedule_restart(worker, lived=0)
            return
        finally:
            if bus_link is not None:
                bus_link.close()  # the worker has its own copy (or never came: the hub sees EOF)
        worker.pid, worker.ready = worker.process.pid, False
        worker.started_at, worker.ended = self.reactor.seconds(), Deferred()
        worker.heard_at = worker.started_at
        log.info("worker {index} started: pid {pid}", lapps_event="worker.start",
                 index=worker.index, pid=worker.pid, restarts=worker.restarts)

    def _worker_ready(self, worker):
        worker.ready = True
        if self._ready is not None and all(w.ready for w in self.workers):
            log.info("lapps ready: {workers} workers, {description}", lapps_event="server.ready",
                     workers=len(self.workers), description=self.description,
                     pids=[w.pid for w in self.workers])
            ready, self._ready = self._ready, None
            for d in ready:
                d.callback(self)

    def _worker_ended(self, worker, reason):
        pid, lived = worker.pid, self.reactor.seconds() - worker.started_at
        worker.pid = worker.process = None
        worker.ready = False
        code, signame = _how(reason)
        how = f"exit code {code}" if signame is None else f"signal {signame}"
        (log.warn if self.running else log.info)(
            "worker {index} (pid {pid}) ended: {how}", lapps_event="worker.exit",
            index=worker.index, pid=pid, exit_code=code, signal=signame, how=how,
            lived=round(lived, 3))
        for hook in self.exit_hooks:
            try:
                hook(pid)
            except Exception:
                log.failure("exit hook {hook!r} failed for pid {pid}", hook=hook, pid=pid,
                            lapps_event="worker.exit_hook_failed")
        ended, worker.ended = worker.ended, None
        ended.callback(None)
        if self.running:
            self._schedule_restart(worker, lived)

    def _schedule_restart(self, worker, lived):
        if lived >= STABLE_AFTER:
            worker.delay = FIRST_DELAY
        delay, worker.delay = worker.delay, min(MAX_DELAY, worker.delay * 2)
        log.info("worker {index} restarts in {delay} s", lapps_event="worker.restart",
                 index=worker.index, delay=delay)
        worker.restart_call = self.reactor.callLater(delay, self._restart, worker)

    def _restart(self, worker):
        worker.restarts += 1
        metrics.worker_restarted()
        self._spawn(worker)

    def _signal(self, workers, name):
        for worker in workers:
            try:
                worker.process.signalProcess(name)
            except error.ProcessExitedAlready:  # its end is on its way
                pass

    def stopService(self):
        super().stopService()
        self._listening.stop()  # a stop has its own limit
        for worker in self.workers:
            if worker.restart_call is not None:
                worker.restart_call.cancel()
                worker.restart_call = None
        running = [w for w in self.workers if w.process is not None]
        self._signal(running, "TERM")
        timeout = self.config.server["shutdown_timeout"] + KILL_MARGIN
        ended = DeferredList([w.ended for w in running])
        return within(ended, timeout, self.reactor).addCallback(self._stopped, timeout)

    def _stopped(self, in_time, timeout):
        late = [w for w in self.workers if w.process is not None]
        if in_time or not late:
            return self._closed()
        log.error("workers {pids} did not stop within {timeout} s: killed",
                  lapps_event="worker.killed", pids=[w.pid for w in late], timeout=timeout)
        ended = DeferredList([w.ended for w in late])
        self._signal(late, "KILL")
        return ended.addCallback(lambda _: self._closed())

    def _closed(self):
        self._reserved.close()
        shutil.rmtree(self._metrics_dir, ignore_errors=True)
        log.info("all workers stopped", lapps_event="workers.stopped")

    # Reload.

    def reload(self):
        """Re-read the config (``config`` is then the new one) and send
        SIGHUP to every worker, which reloads itself and logs the outcome.
        A config that does not validate changes nothing and reaches no
        worker: its lines are logged and the Deferred fails with
        :class:`ConfigError`."""
        try:
            cfg = configuration.load(self.config.source)
        except configuration.ConfigError as e:
            for line in e.lines:
                log.error("reload failed, the running configuration stays: {line}",
                          lapps_event="config.reload_failed", line=line)
            metrics.supervisor_config_reloads.labels("failed").inc()
            return fail(e)
        metrics.supervisor_config_reloads.labels("ok").inc()
        self.config = cfg
        if self.hub is not None:
            self.hub.max_queue = cfg.server["mqr"]["max_queue"]
        running = [w for w in self.workers if w.process is not None]
        log.info("reloading: SIGHUP to workers {pids}", lapps_event="workers.reload",
                 pids=[w.pid for w in running])
        self._signal(running, "HUP")
        return succeed(cfg)
