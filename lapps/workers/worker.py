"""A worker process, as the supervisor starts it::

    python -m lapps.workers.worker --config PATH --index I --port P --log-fd 3 --supervisor PID \
        [--bus-fd 4]

One whole ``LAppSService`` (:class:`lapps.workers.role.WorkerRole`) on its
own reactor: it listens on the shared port, logs its events as JSON lines
on ``--log-fd`` for the supervisor to relay, stops on SIGTERM as a single
server does and reloads on SIGHUP. Lua's ``print`` writes to stdout, which
is the supervisor's. On the host bus, ``--bus-fd`` is its link to the
supervisor; a link lost while it runs closes its clients with 1011 and ends
it. Exit status: 0 after a stop, 78 (EX_CONFIG) when the config or a
service does not load, 1 when the port cannot be bound, 75 (EX_TEMPFAIL)
when the bus link was lost, 70 (EX_SOFTWARE) when its watchdog ended it
(:mod:`lapps.watchdog`). Its reactor writes a blank line on the log pipe
every :data:`HEARTBEAT` seconds: the supervisor kills a worker frozen silent."""

import argparse
import ctypes
import os
import signal
import sys

from twisted.application.service import MultiService
from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, globalLogBeginner, jsonFileLogObserver

log = Logger(namespace="lapps.workers")

EX_CONFIG = 78
EX_TEMPFAIL = 75
#: Close code for clients of a worker that lost its bus (RFC 6455: Internal Error).
INTERNAL_ERROR = 1011
_PR_SET_PDEATHSIG = 1
#: Seconds between two heartbeats (blank lines, which the relay skips) on the log pipe.
HEARTBEAT = 1.0


def _die_with(supervisor):
    """Have the kernel send SIGTERM when the supervisor dies, even by
    SIGKILL, so that no worker serves on as an orphan; exit if it is
    already gone."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:
        sys.exit(0)


def _stop_once(reactor):
    """The first SIGTERM or SIGINT stops the worker; later ones are
    ignored (the supervisor forwards a stop that systemd or a terminal may
    also have sent the whole process group, and Twisted's handler would
    fail on the second; a worker that does not stop is killed)."""
    def stop(number, frame):
        for name in (signal.SIGTERM, signal.SIGINT):
            signal.signal(name, signal.SIG_IGN)
        reactor.sigTerm(number, frame)

    for name in (signal.SIGTERM, signal.SIGINT):
        signal.signal(name, stop)


def _log_to(fd):
    os.set_inheritable(fd, False)  # not to what Lua may spawn: the pipe ends with this process
    out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
    globalLogBeginner.beginLoggingTo([jsonFileLogObserver(out, recordSeparator="")],
                                     redirectStandardIO=False)
    return out


def main(argv=None):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the reload handler is there
    parser = argparse.ArgumentParser(prog="lapps.workers.worker")
    for name in ("--index", "--port", "--log-fd", "--supervisor"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--bus-fd", type=int, default=None)
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    _die_with(args.supervisor)
    log_pipe = _log_to(args.log_fd)

    from twisted.internet import reactor

    from lapps.app import LAppSService
    from lapps.collector import FreezeWhenReady
    from lapps.config import ConfigError
    from lapps.hangup import ReloadOnHangup
    from lapps.workers.role import WorkerRole

    try:
        lapps = LAppSService(args.config, reactor,
                             worker=WorkerRole(args.index, args.port, args.bus_fd))
    except ConfigError as e:
        for line in e.lines:
            log.error("worker {index} cannot start: {line}", lapps_event="worker.config_error",
                      index=args.index, line=line)
        return EX_CONFIG
    lapps.fast.install_dispatch()  # as twistd lapps does for one process
    top = MultiService()
    lapps.setServiceParent(top)
    ReloadOnHangup(lapps).setServiceParent(top)
    FreezeWhenReady(lapps.when_ready).setServiceParent(top)
    try:
        top.startService()
    except CannotListenError as e:
        log.error("worker {index} cannot listen: {reason}", lapps_event="worker.listen_failed",
                  index=args.index, reason=str(e.socketError))
        return 1
    lost = []
    if args.bus_fd is not None:  # the host bus
        lapps.bus.connection.lost_hooks.append(lambda: _end_without_bus(lapps, reactor, lost))
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.callWhenRunning(_stop_once, reactor)  # after Twisted's own handlers
    reactor.callWhenRunning(lapps.watchdog.watch_stop_signals)
    heartbeat = LoopingCall(log_pipe.write, "\n")
    heartbeat.clock = reactor
    heartbeat.start(HEARTBEAT)
    reactor.run()
    return EX_TEMPFAIL if lost else 0


def _end_without_bus(lapps, reactor, lost):
    """The host bus link broke: bcast and mqr cannot work here any more.
    Close every client with 1011 (they reconnect, to a worker with a bus),
    then stop; the supervisor starts this worker again."""
    lost.append(True)
    closing = lapps.factory.close(lapps.factory.protocols, INTERNAL_ERROR, b"bus link lost",
                                  lapps.listener.drain_timeout, reactor)
    closing.addBoth(lambda _: reactor.stop())


if __name__ == "__main__":
    sys.exit(main())
