"""Every lapps metric. They live in :data:`registry`, not in
prometheus_client's global registry, so that a program embedding lapps
keeps its own metrics apart; the supervisor of worker processes has its
own, :data:`supervisor_registry`. A gauge's ``multiprocess_mode`` says how
the values of several workers add up."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from lapps.metrics.latency import BOUNDS

registry = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=registry)

connections_open = Gauge(
    "lapps_connections_open", "WebSocket connections open (after the 101), by service",
    ["service"], registry=registry, multiprocess_mode="livesum")
handshakes = Counter(
    "lapps_handshakes", "Opening handshakes by result: the HTTP status answered (101 "
    "accepted, 4xx/5xx refused), acl_denied (by the server's ACL at accept or a "
    "service's with 403), peer_limit (closed at accept), timeout (handshake_timeout, "
    "TLS included), tls_failed, dropped (the client left first)",
    ["result"], registry=registry)
close_codes_sent = Counter(
    "lapps_close_codes_sent", "Closed connections by the close code the server sent "
    "(none: it sent no close frame)", ["service", "code"], registry=registry)
close_codes_received = Counter(
    "lapps_close_codes_received", "Closed connections by the close code the client sent "
    "(none: no close frame, or one without a code)", ["service", "code"], registry=registry)
messages_received = Counter(
    "lapps_messages_received", "WebSocket messages received", ["service"], registry=registry)
messages_sent = Counter(
    "lapps_messages_sent", "WebSocket messages sent (bcast deliveries included)",
    ["service"], registry=registry)
bytes_received = Counter(
    "lapps_bytes_received", "Bytes received after the handshake, as on the wire "
    "(frames; the access log's bytes_in)", ["service"], registry=registry)
bytes_sent = Counter(
    "lapps_bytes_sent", "Bytes sent after the handshake, as on the wire "
    "(frames; the access log's bytes_out)", ["service"], registry=registry)
lua_errors = Counter(
    "lapps_lua_errors", "Errors raised by a service's Lua callbacks (lua.error)",
    ["service"], registry=registry)
lua_timeouts = Counter(
    "lapps_lua_timeouts", "Lua callbacks stopped after handler_timeout (lua.timeout)",
    ["service"], registry=registry)
memory_cap_hits = Counter(
    "lapps_memory_cap_hits", "An instance reached max_memory: a message refused (1009, "
    "instance.memory) or a callback out of memory", ["service"], registry=registry)
instance_rebuilds = Counter(
    "lapps_instance_rebuilds", "Lua runtimes rebuilt (instance.rebuild)",
    ["service"], registry=registry)
handler_seconds = Histogram(
    "lapps_message_handler_seconds", "Time in a service's Lua onMessage, per message, "
    "until it returns or suspends (bounds are powers of two of nanoseconds)",
    ["service"], registry=registry, buckets=BOUNDS)
pam_logins = Counter(
    "lapps_pam_logins", "pam_auth login answers, by result", ["result"], registry=registry)
mqr_depth = Gauge(
    "lapps_mqr_queue_depth", "Entries in an mqr queue (with the redis bus: those this "
    "process has fetched and not handed out yet)", ["queue"], registry=registry,
    multiprocess_mode="livesum")
bcast_subscribers = Gauge(
    "lapps_bcast_subscribers", "Connections subscribed to a bcast channel",
    ["channel"], registry=registry, multiprocess_mode="livesum")
outbound_buffer = Gauge(
    "lapps_outbound_buffer_bytes", "Bytes written to connections and not yet taken by "
    "their sockets", registry=registry, multiprocess_mode="livesum")
bus_up = Gauge(
    "lapps_bus_up", "1 while the Redis bus is available (in every worker), else 0",
    ["backend"], registry=registry, multiprocess_mode="livemin")

_RELOADS = ("Configuration reloads (SIGHUP or reload()) by result: ok, or failed (the file "
            "does not validate or a service module does not load; nothing changed); with "
            "workers the supervisor counts, by the file's validation")
config_reloads = Counter("lapps_config_reloads", _RELOADS, ["result"], registry=registry)

_DEPLOYS = ("Archives of the deploy folder by result: ok (the service runs the new "
            "version), refused (kept as NAME.lar.failed beside NAME.lar.log)")
deploys = Counter("lapps_deploys", _DEPLOYS, ["result"], registry=registry)

supervisor_registry = CollectorRegistry(auto_describe=True)
supervisor_config_reloads = Counter("lapps_config_reloads", _RELOADS, ["result"],
                                    registry=supervisor_registry)
supervisor_deploys = Counter("lapps_deploys", _DEPLOYS, ["result"], registry=supervisor_registry)
worker_restarts = Counter(
    "lapps_worker_restarts", "Worker processes restarted by the supervisor",
    registry=supervisor_registry)
