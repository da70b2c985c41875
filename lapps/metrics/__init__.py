"""The server's Prometheus metrics (``prometheus_client``), served by the
admin listener's ``/metrics`` from :func:`exposition`; the list is in
:mod:`lapps.metrics.definitions` and docs/operations.md ("Metrics").

Nothing here may slow the per-message path, where prometheus_client's
``inc`` (a lock; a file write in multiprocess mode) would cost more than
the rest of lapps's own work. So:

- events of a connection or rarer (handshakes, closes, Lua errors, PAM
  answers, worker restarts) increment their counters where they happen;
- per-message numbers are never counted here: messages and bytes are read
  from the traffic counters Autobahn and the fast path keep on every
  connection anyway, and Lua call times go to a plain per-service
  :class:`lapps.metrics.latency.Latency`;
- levels (open connections, mqr depths, bcast subscribers, outbound
  buffers, the bus) are read when wanted.

:func:`refresh` (:mod:`lapps.metrics.sources`) folds and reads all that at
each :func:`exposition`, on the reactor thread.

Worker processes: the supervisor gives each worker the environment of
:func:`multiprocess_env` (it must be there before this module is first
imported: prometheus_client picks file-backed values then), so the workers
write their metrics to files in that directory, and :func:`refresh` runs
there every :data:`FOLD_INTERVAL` seconds (and at shutdown); the supervisor's :func:`exposition`
adds up the files (``MultiProcessCollector``) and its own
:data:`worker_restarts`, and :func:`worker_exited` drops a dead worker's
gauges.
"""

import os
import ssl

from OpenSSL import SSL
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as _multiprocess
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from lapps.metrics import sources
from lapps.metrics.definitions import (
    bcast_subscribers, bus_up, bytes_received, bytes_sent, close_codes_received,
    close_codes_sent, config_reloads, connections_open, deploys, handler_seconds, handshakes,
    instance_rebuilds, lua_errors, lua_timeouts, memory_cap_hits, messages_received,
    messages_sent, mqr_depth, outbound_buffer, pam_logins, registry, supervisor_config_reloads,
    supervisor_deploys, supervisor_registry, worker_restarts)
from lapps.metrics.sources import latency_for, watch_broadcasts, watch_bus, watch_queues

__all__ = [
    # the metrics (the hooks count with them; embedders may read them)
    "bcast_subscribers", "bus_up", "bytes_received", "bytes_sent", "close_codes_received",
    "close_codes_sent", "config_reloads", "connections_open", "deploys", "handler_seconds",
    "handshakes",
    "instance_rebuilds", "lua_errors", "lua_timeouts", "memory_cap_hits", "messages_received",
    "messages_sent", "mqr_depth", "outbound_buffer", "pam_logins", "registry",
    "supervisor_config_reloads", "supervisor_deploys", "supervisor_registry", "worker_restarts",
    # the hooks of the server's parts
    "watch_server", "watch_broadcasts", "watch_queues", "watch_bus", "latency_for",
    "handshake_result", "refused_at_accept", "connection_lost", "connection_closed",
    # for the supervisor, the admin listener and embedders
    "multiprocess_env", "worker_exited", "worker_restarted", "exposition", "open_connections",
    "refresh"]

log = Logger(namespace="lapps.metrics")

#: The variable prometheus_client's multiprocess mode reads.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: How often a worker process folds its numbers into its files (seconds).
FOLD_INTERVAL = 5.0

_workers_dir = None   # set in a supervisor by multiprocess_env()
_folding = None       # the LoopingCall of a worker process


def _writes_files():
    """Whether this process is a worker writing its metrics for a supervisor."""
    return MULTIPROC_DIR in os.environ


def refresh():
    """Bring the folded and read metrics up to date (on the reactor thread)."""
    sources.refresh(_writes_files())


def watch_server(factory):
    """Read ``factory``'s connections at each refresh (the WebSocket server
    factory calls this); in a worker process, also fold every :data:`FOLD_INTERVAL`
    seconds (a walk over its connections: ~1.2 ms per 1,000)."""
    global _folding
    sources.watch_server(factory)
    if _writes_files() and _folding is None:
        _folding = LoopingCall(refresh)
        _folding.clock = factory.reactor
        _folding.start(FOLD_INTERVAL, now=False).addErrback(
            lambda failure: log.failure("metrics stopped folding", failure,
                                        lapps_event="metrics.fold_failed"))
        factory.reactor.addSystemEventTrigger("during", "shutdown", refresh)


# Hooks of the connection's life (lapps.protocols).

def handshake_result(protocol, result):
    """Count how ``protocol``'s opening handshake ended: the first result
    given for a connection is the one counted."""
    if protocol.handshake_result is None:
        protocol.handshake_result = result
        handshakes.labels(result).inc()


def refused_at_accept(result):
    """A connection closed at accept, before it had a protocol (ACL, peer limits)."""
    handshakes.labels(result).inc()


def connection_lost(protocol, reason):
    """A connection is gone: if its handshake had not ended, it ends now,
    as ``tls_failed`` or ``dropped``."""
    if protocol.handshake_result is None:
        handshake_result(protocol, "tls_failed" if reason.check(SSL.Error, ssl.SSLError) else "dropped")


def connection_closed(protocol, service):
    """An open connection of ``service`` has closed (once, after it left
    its server's ``connections``): its close codes and its traffic."""
    close_codes_sent.labels(service, _code(protocol.localCloseCode)).inc()
    close_codes_received.labels(service, _code(protocol.remoteCloseCode)).inc()
    sources.add_closed(service, protocol.trafficStats)


def _code(code):
    return "none" if code is None else str(code)


# Worker processes.

def multiprocess_env(directory):
    """The environment entries a supervisor gives its workers so that they
    write their metrics to files in ``directory`` (which the supervisor
    creates, empty, and removes); from now on this process's
    :func:`exposition` adds up the workers' files."""
    global _workers_dir
    _workers_dir = os.fspath(directory)
    return {MULTIPROC_DIR: _workers_dir}


def worker_exited(pid):
    """A worker process is gone: its live gauges no longer count."""
    _multiprocess.mark_process_dead(pid, _workers_dir)


def worker_restarted():
    worker_restarts.inc()


# Reading them.

def exposition():
    """``(body, content type)`` of the Prometheus text format: in a
    supervisor the workers' metrics added up, with its own; otherwise this
    process's, brought up to date. Call it on the reactor thread."""
    if _workers_dir is not None:
        body = generate_latest(_aggregate()) + generate_latest(supervisor_registry)
    else:
        refresh()
        body = generate_latest(registry)
    return body, CONTENT_TYPE_LATEST


def open_connections():
    """Service name → WebSocket connections open (for the status page): in a
    supervisor, as the workers last reported them (within :data:`FOLD_INTERVAL`)."""
    if _workers_dir is None:
        return sources.open_connections()
    counts = {}
    for family in _aggregate().collect():
        if family.name == "lapps_connections_open":  # metrics.connections_open
            for sample in family.samples:
                counts[sample.labels["service"]] = int(sample.value)
    return counts


def _aggregate():
    aggregate = CollectorRegistry(auto_describe=True)
    _multiprocess.MultiProcessCollector(aggregate, path=_workers_dir)
    return aggregate
