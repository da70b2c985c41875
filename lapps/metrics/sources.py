"""What the metrics read rather than count: the servers' open connections
(their service, the traffic counters Autobahn and the fast path keep on each
of them, their transports' buffers), the bcast channels, the mqr queues, the
Redis bus, and the Lua call times of :mod:`lapps.metrics.latency`.

Each owner registers itself once, from its constructor (``watch_*``); it is
held weakly, and only while it runs (a Twisted service) is it read.
:func:`refresh` reads them all and brings the metrics up to date: at each
scrape, and every few seconds in a worker process (whose metrics the supervisor
reads from their files). It runs on the reactor thread, as everything it
reads is written there (bcast and mqr tables are copied, as threads touch them).
"""

import collections
import weakref

from lapps.metrics import definitions as m
from lapps.metrics.latency import Latency, fold

_servers = weakref.WeakSet()      # LAppSServerFactory
_broadcasts = weakref.WeakSet()   # lapps.bus.local.bcast.Broadcasts (and its subclasses)
_queues = weakref.WeakSet()       # MessageQueues, HostQueues, RedisQueues
_buses = weakref.WeakSet()        # RedisBus, HostLink

#: The traffic counters folded in, in the order of :func:`traffic`.
_TRAFFIC = (m.messages_received, m.bytes_received, m.messages_sent, m.bytes_sent)
_closed = collections.defaultdict(lambda: [0] * len(_TRAFFIC))  # service -> closed connections'
_folded = collections.defaultdict(lambda: [0] * len(_TRAFFIC))  # service -> in the counters
_latencies = {}                   # service name -> Latency
_shown = {}                       # gauge -> the label tuples it was given at the last refresh


def watch_server(factory):
    _servers.add(factory)


def watch_broadcasts(broadcasts):
    _broadcasts.add(broadcasts)


def watch_queues(queues):
    _queues.add(queues)


def watch_bus(bus):
    _buses.add(bus)


def latency_for(service):
    """The :class:`Latency` of the service called ``service`` (one per name,
    kept across reloads and rebuilds)."""
    found = _latencies.get(service)
    if found is None:
        found = _latencies[service] = Latency()
    return found


def traffic(stats):
    """A connection's messages and wire bytes in and out (Autobahn's TrafficStats)."""
    return (stats.incomingWebSocketMessages, stats.incomingOctetsWireLevel,
            stats.outgoingWebSocketMessages, stats.outgoingOctetsWireLevel)


def add_closed(service, stats):
    """A connection of ``service`` has closed (and left its server's
    ``connections``): its traffic is kept here from now on."""
    totals = _closed[service]
    for i, n in enumerate(traffic(stats)):
        totals[i] += n


def queued_bytes(transport):
    """Bytes a connection's TCP transport holds that its socket has not
    taken (under TLS, the TCP transport beneath it). Twisted's
    FileDescriptor keeps them in ``dataBuffer`` past ``offset`` and in
    ``_tempDataBuffer`` (``_tempDataLen`` bytes): no public call tells it."""
    tcp = getattr(transport, "transport", None) or transport
    return len(tcp.dataBuffer) - tcp.offset + tcp._tempDataLen


def open_connections():
    """Service name → connections open, in this process."""
    counts = collections.Counter()
    for server in _servers:
        for service in server.routes.values():
            counts[service.name] += 0
        for connection in list(server.connections.values()):
            counts[connection.instance.service.name] += 1
    return dict(counts)


def refresh(multiprocess):
    """Bring every read and folded metric up to date. ``multiprocess``:
    this process writes its metrics to files for a supervisor."""
    totals = {name: list(t) for name, t in _closed.items()}
    outbound = 0
    for server in list(_servers):
        for connection in list(server.connections.values()):
            service_totals = totals.setdefault(connection.instance.service.name,
                                               [0] * len(_TRAFFIC))
            for i, n in enumerate(traffic(connection.trafficStats)):
                service_totals[i] += n
        for protocol in list(server.protocols):
            if protocol.transport is not None:
                outbound += queued_bytes(protocol.transport)
    for service, service_totals in totals.items():
        folded = _folded[service]
        for i, total in enumerate(service_totals):
            if total > folded[i]:
                _TRAFFIC[i].labels(service).inc(total - folded[i])
                folded[i] = total
    for service, service_latency in _latencies.items():
        fold(service_latency, m.handler_seconds.labels(service))
    m.outbound_buffer.set(outbound)
    _publish(m.connections_open, {(name,): n for name, n in open_connections().items()},
             multiprocess)
    _publish(m.bcast_subscribers, _subscribers(), multiprocess)
    _publish(m.mqr_depth, _depths(), multiprocess)
    for bus in list(_buses):
        if bus.running:
            m.bus_up.labels(bus.backend).set(1 if bus.available else 0)


def _subscribers():
    counts = collections.Counter()
    for broadcasts in list(_broadcasts):
        if broadcasts.running:
            for channel, handlers in broadcasts._channels.copy().items():
                counts[(str(channel),)] += len(handlers)
    return counts


def _depths():
    counts = collections.Counter()
    for queues in list(_queues):
        if queues.running:
            for name, queue in queues._queues.copy().items():
                counts[(name.decode("utf-8", "replace"),)] += len(queue)
    return counts


def _publish(gauge, values, multiprocess):
    """Give ``gauge`` these values (label tuple → number). Label sets given
    before and absent now are removed; in multiprocess mode they are set to
    0 instead, since a removed child's last value stays in the file."""
    gone = _shown.get(gauge, set()) - values.keys()
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    for labels in gone:
        if multiprocess:
            gauge.labels(*labels).set(0)
        else:
            gauge.remove(*labels)
    _shown[gauge] = set(values) | (gone if multiprocess else set())
