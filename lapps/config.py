"""Load a lapps configuration, in either of its two forms, and validate all of it.

Form 1 is LAppS's own pair: a services file (``lapps.json``) with the server
keys in ``ws.json`` beside it (the name can be changed with ``WS_CONFIG``).
Form 2 is one file: the services file with the server keys under ``"server"``.
Defaults are deep-merged; every problem is collected and raised at once as a
:class:`ConfigError` whose lines read ``FILE: /json/pointer: message``.
"""

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field, make_dataclass, replace

from lapps import acl as network_acl, config_json, origin, tls
from lapps.deploy import signature, state as deploy_state
from lapps import redis_address as bus_address
from lapps.schema import Anything, Array, MapOf, Nullable, Object, Problems, Scalar, describe, pointer

MiB = 1024 * 1024

#: Modules a service may name in ``preload``: LAppS's list, each installed by
#: :data:`lapps.lua.modules.PRELOAD` (a test keeps the two the same).
PRELOADABLE = frozenset(("nap", "time", "murmur", "cws", "pam_auth", "mqr"))


def _parses(parse):
    """A schema test that holds when ``parse`` accepts the text."""
    def test(text):
        try:
            parse(text)
            return True
        except ValueError:
            return False
    return test


class WorkerCount(Scalar):
    """``workers.workers``: a count, or ``"auto"``, one worker per CPU this
    process may run on (as nginx's ``worker_processes auto``)."""

    def check(self, value, where, source, problems):
        if value == "auto":
            return len(os.sched_getaffinity(0))
        return super().check(value, where, source, problems)


#: A network ACL (spec §6.4); entries are parsed by :mod:`lapps.acl`.
def _acl(help):
    return Object({
        "policy": Scalar(str, "allow", choices=("allow", "deny"),
                         help="the decision for a peer no entry of `exclude` matches."),
        "exclude": Array(Scalar(str, test=_parses(network_acl.parse_entry),
                                expect="an IP address or CIDR network"), [],
                         help="the exceptions to the policy: addresses and CIDR networks, IPv4 "
                         "or IPv6 (see Network ACLs for LAppS's classful reading of an IPv4 "
                         "address ending in 0)."),
    }, help=help)


ACL = _acl("a network ACL")

#: ``pam_auth`` (spec §6.6): the PAM services Lua may name, failure padding and
#: rate limits; defaults as in :data:`lapps.services.pam_auth.DEFAULTS`.
PAM_AUTH = Object({
    "services": Array(Scalar(str, test=lambda s: re.match(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z", s),
                             expect="a PAM service name (a file name in /etc/pam.d)"),
                      ["lapps"], unique=True,
                      help="lapps addition: the PAM service names (files in `/etc/pam.d`) that "
                      "`pam_auth:login` may use; any other is refused without calling PAM."),
    "min_failure_seconds": Scalar(float, 1.0, minimum=0, maximum=60,
                                  help="a failed login is answered no sooner than this after it "
                                  "began. Keep it above the slowest failure of the PAM stack, or "
                                  "the timing tells failures apart again."),
    "max_failures": Scalar(int, 5, minimum=1,
                           help="the rate limit, per peer address and per user name: with this "
                           "many failed logins (calls under way included) in the last "
                           "`window_seconds`, further logins are refused without calling PAM."),
    "window_seconds": Scalar(float, 60.0, test=lambda v: 0 < v <= 86400,
                             expect="a number of seconds > 0 and <= 86400",
                             help="the sliding window of `max_failures`."),
    "threads": Scalar(int, 2, minimum=1, maximum=32,
                      help="the PAM thread pool: that many PAM calls run at once; more wait "
                      "their turn."),
}, help="who may log in through `pam_auth`, and how often")

#: Protection of the accepting side (docs/operations.md, "Limits and defaults").
LIMITS = Object({
    "handshake_timeout": Scalar(float, 10.0, test=lambda v: v > 0, expect="a number of seconds > 0",
                                help="seconds a client has to finish its handshake, TLS "
                                "included: real clients take milliseconds; this cuts slowloris "
                                "clients and TLS handshakes that never finish."),
    "max_request_line": Scalar(int, 8192, minimum=256,
                               help="bytes of the request line; longer gets 414 (nginx's header "
                               "buffer size; no WebSocket target is longer)."),
    "max_header_line": Scalar(int, 8192, minimum=256,
                              help="bytes of one header line; longer gets 431 (large cookies "
                              "fit; an endless header line does not eat memory)."),
    "max_header_block": Scalar(int, 16384, minimum=1024,
                               help="bytes of the whole header block; more gets 431 (caps what "
                               "each unfinished handshake holds)."),
    "peer_max_connections": Scalar(int, 1000, minimum=1,
                                   help="connections one address may have open: one address "
                                   "cannot take the whole server; an office behind NAT still "
                                   "fits. Over it, the connection is closed at accept."),
    "peer_connection_rate": Scalar(float, 100.0, test=lambda v: v > 0,
                                   expect="a number of connections per second > 0",
                                   help="new connections per second per address (a token "
                                   "bucket with `peer_connection_burst`): stops accept floods."),
    "peer_connection_burst": Scalar(int, 500, minimum=1,
                                    help="the bucket's size: a NAT reconnecting after a restart "
                                    "fits in it."),
    # a Lua call holding the reactor this long past its handler_timeout is stuck in C:
    # the process exits (lapps.watchdog) to be restarted; 0 turns the check off
    "stall_timeout": Scalar(float, 5.0, minimum=0,
                            help="seconds past its `handler_timeout` after which a reactive "
                            "callback still running is stuck inside a C function, where the "
                            "timeout's hook cannot stop it: the process logs `lua.stalled` and "
                            "exits with status 70, to be restarted by its supervisor or by "
                            "systemd. A worker that goes silent that long plus 3 s gets SIGKILL "
                            "from the supervisor. `0` turns both off."),
    # The host itself (a benchmark such as LAppS's demo, a local proxy) is not a peer to limit.
    "peer_exempt": Array(Scalar(str, test=_parses(network_acl.parse_entry),
                                expect="an IP address or CIDR network"), ["127.0.0.0/8", "::1"],
                         help="addresses the per-peer limits do not count (ACL entry syntax): "
                         "the host itself, so LAppS's demo (4 × 800 `cws` sockets from loopback) "
                         "and a local proxy are not cut. `[]` limits loopback too."),
}, help="lapps addition: protection of the accepting side")

#: Where bcast and mqr live (lapps.bus): in this process, between the worker
#: processes of this host, or in Redis for every process and host that names the
#: same URL and prefix. No backend: "host" with workers, else "local" (_check_bus).
BUS = Object({
    "backend": Scalar(str, None, choices=("local", "host", "redis"),
                      help='where `bcast` channels and `mqr` queues live. `"local"`: in this '
                      'process. `"host"`: in the supervisor, shared by the worker processes of '
                      'this host (the default with `workers.workers` > 1). `"redis"`: in the '
                      "Redis at `bus.url`, shared by every process and host that uses the same "
                      'Redis and `bus.prefix`. Lua services run unchanged on all three; `"local"` '
                      "with more than one worker is refused."),
    "url": Scalar(str, None,  # required with "redis"; checked by _check_bus
                  help="`redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` (`rediss://` is refused: "
                  'Redis\'s TLS is not supported); required with `"redis"`. Redis unreachable '
                  "at start stops the server with one line naming the address."),
    "prefix": Scalar(str, "lapps:", test=str.isprintable, expect="a printable string",
                     help="the prefix of every Redis key and channel lapps uses, so several "
                     "lapps deployments can share one Redis."),
    # a process that has not renewed its presence for this long is dead: the mqr
    # entries it had taken from Redis go to the receivers of other processes
    "consumer_timeout": Scalar(float, 10.0, test=lambda v: 0.5 <= v <= 3600,
                               expect="a number of seconds from 0.5 to 3600",
                               help="seconds after which a process that stopped renewing its "
                               "presence key in Redis counts as dead: the `mqr` messages it had "
                               "taken but not finished go to the other receivers. Keep it well "
                               "above a GC or swap pause."),
    # (at most 32 MiB: a recovery's messages travel in one host-bus message,
    # which must stay well under what a link may queue)
    "history_max_bytes": Scalar(int, 16 * 1024 * 1024, minimum=1024, maximum=32 * 1024 * 1024,
                                help="the bytes of messages one `bcast` history channel keeps "
                                "at most (up to 32 MiB), beside its `history_size`: the oldest "
                                "go first. "
                                "(With Redis, each process enforces it for what it sends.)"),
}, help="lapps addition: where `bcast` and `mqr` live")

#: The admin listener (lapps.admin): /metrics, /healthz, /readyz and the
#: status page over plain HTTP, on its own port; port 0 leaves it off.
ADMIN = Object({
    "ip": Scalar(str, "127.0.0.1", test=_parses(ipaddress.ip_address),
                 expect="an IPv4 or IPv6 address",
                 help="the admin listener's bind address. Keep it on loopback or a private "
                 "network: it has no TLS and no authentication."),
    "port": Scalar(int, 0, minimum=0, maximum=65535,
                   help="the admin listener's port (plain HTTP: `/metrics`, `/healthz`, "
                   "`/readyz`, the status page); `0` leaves it off. It may not be the WebSocket "
                   "port, which stays WebSocket-only."),
    "acl": _acl("the admin listener's own network ACL: a denied peer is closed at accept"),
}, help="lapps addition: the admin listener")

#: Hot deploy (lapps.deploy): what one archive may hold, who may sign it,
#: and how long its service's module may take to load in the check.
DEPLOY = Object({
    "max_archive_bytes": Scalar(int, 64 * MiB, minimum=1024,
                                help="the largest `.lar` accepted."),
    "max_unpacked_bytes": Scalar(int, 256 * MiB, minimum=1024,
                                 help="the most bytes an archive's files may unpack to, checked "
                                 "against its TOC before anything is written and again as each "
                                 "file decompresses: a bzip2 bomb stops at its declared size."),
    "max_files": Scalar(int, 10000, minimum=1, help="the most files in one archive."),
    # base64 Ed25519 public keys; when any is set, an archive needs NAME.lar.sig from one
    "trusted_keys": Array(Scalar(str, test=signature.is_public_key,
                                 expect="an Ed25519 public key (base64 of 32 bytes)"),
                          [], unique=True,
                          help="Ed25519 public keys (as `lapps lar keygen` prints them). When "
                          "any is set, an archive is deployed only with a signature "
                          "`NAME.lar.sig` by one of them."),
    "check_timeout": Scalar(float, 60.0, test=lambda v: v > 0, expect="a number of seconds > 0",
                            help="seconds the deploy's `lapps check` of a new service (in a "
                            "child process) may take; a module that loads longer is refused."),
}, help="lapps addition: hot deploy of `.lar` archives")

_ACCEPTED = "accepted, no effect"

SERVER = Object({
    "listeners": Scalar(int, 2, minimum=0, help=f"{_ACCEPTED} (LAppS's accept threads)."),
    "connection_weight": Scalar(float, 1.0, minimum=0,
                                help=f"{_ACCEPTED} (unused in LAppS too)."),
    "ip": Scalar(str, "0.0.0.0", test=_parses(ipaddress.ip_address),
                 expect="an IPv4 or IPv6 address",
                 help='the bind address; IPv6 literals work (`"::"`, `"::1"`).'),
    "port": Scalar(int, 5083, minimum=0, maximum=65535, help="the bind port (`0`: any free port)."),
    "lapps_config_auto_save": Scalar(bool, True,
                                     help=f"{_ACCEPTED}: a hot deploy never rewrites the config "
                                     "files (LAppS did); deployed descriptors live in "
                                     "`deploy/deployed.json`."),
    "workers": Object({
        "workers": WorkerCount(int, 1, minimum=0, expect='integer >= 0 or "auto"',
                               help="worker processes (LAppS's IO worker threads, so LAppS's `3` "
                               "starts 3 processes). `0` or `1`: one process. More: a supervisor "
                               "and that many worker processes on one port, each running every "
                               "reactive service with its `instances`, on the host bus unless "
                               '`bus` says otherwise. `"auto"`: as many as the CPUs this process '
                               "may use. A restart applies a change."),
        "max_connections": Scalar(int, 10000, minimum=1,
                                  help="the connection limit (times `workers.workers`, as in "
                                  "LAppS); a connection over it gets HTTP 403 before any "
                                  "upgrade."),
        "auto_fragment": Scalar(bool, False,
                                help="send outbound messages in frames of at most 1392 bytes "
                                "(LAppS fragmented only messages of 2784 bytes or more; here "
                                "every message over 1392 is split)."),
        "max_poll_events": Scalar(int, 300, minimum=1,
                                  help=f"{_ACCEPTED} (epoll tuning of LAppS's workers)."),
        "max_poll_wait_ms": Scalar(int, 10, minimum=0, help=f"{_ACCEPTED} (as above)."),
        "max_inbounds_skip": Scalar(int, 50, minimum=0, help=f"{_ACCEPTED} (as above)."),
        "input_buffer_size": Scalar(int, 2048, minimum=1, help=f"{_ACCEPTED} (as above)."),
    }, help="processes and connections"),
    "acl": _acl("the global network ACL, applied when a TCP connection is accepted: a denied "
                "peer is closed at once, before a byte is read (no HTTP answer, no TLS "
                "handshake)"),
    "tls": Scalar(bool, False, help="serve `wss` on the port instead of `ws`."),
    "tls_server_version": Scalar(int, 3, choices=(3, 4),
                                 help="`3`: TLS 1.2 minimum (1.3 preferred); `4`: TLS 1.3 only. "
                                 "Renegotiation is always refused."),
    "tls_client_version": Scalar(int, 3, choices=(3, 4),
                                 help="the same for outbound `wss` connections of `cws`."),
    "tls_client_verify": Scalar(bool, True,
                                help="lapps addition: `cws` verifies a `wss` server's certificate "
                                "against `tls_certificates.ca` (if the file exists) plus the "
                                "system trust store, and its name. `false` verifies nothing, as "
                                "LAppS did."),
    "tls_certificates": Object({
        "ca": Scalar(str, "ssl/localhost.ca.pem",
                     help="the CA file trusted by `cws` for `wss` (besides the system store), "
                     "and where `lapps devcert` writes its CA. The server verifies no client "
                     "certificates."),
        "cert": Scalar(str, "ssl/localhost.crt",
                       help="the PEM server certificate; may be followed by its chain."),
        "key": Scalar(str, "ssl/localhost.key",
                      help="the PEM private key, unencrypted; must match the certificate "
                      "(checked at start)."),
    }, help="certificate files, relative to the file that names them"),
    "pam_auth": PAM_AUTH,
    "mqr": Object({
        "max_queue": Scalar(int, 10000, minimum=1, maximum=10_000_000,
                            help="lapps addition: the most messages one `mqr` queue holds "
                            "(LAppS's queues were unbounded). A post to a full queue returns "
                            '`false, "queue full"`; what is queued is kept.'),
        "max_queue_bytes": Scalar(int, 64 * MiB, minimum=64 * 1024,
                                  help="lapps addition: the most bytes one queue holds: each "
                                  "message counts its string's bytes or its table's CBOR form, "
                                  "plus a type byte. A post that would go over it returns "
                                  '`false, "queue full"` too.'),
    }, help="`mqr` queues"),
    "limits": LIMITS,
    "shutdown_timeout": Scalar(float, 10.0, minimum=0,
                               help="seconds the whole stop may take: a client that never "
                               "answers its close, or a standalone service stuck in Lua, cannot "
                               "keep the process alive; what was cut short is logged. Even with "
                               "the reactor stuck in a C function, SIGTERM and SIGINT end the "
                               "process this long plus 3 s after they come (exit status 70)."),
    "access_log": Scalar(bool, True,
                         help="lapps addition: log each WebSocket connection as it opens "
                         "(`connection.open`) and as it closes (`connection.close`, with its "
                         "peer, target, codes, duration and bytes: the access log). `false` "
                         "logs neither, as nginx's `access_log off`: the two lines cost about a "
                         "quarter of a handshake's CPU. A reload applies it."),
    "fast_path": Scalar(bool, True,
                        help="lapps addition: a whole, masked text or binary message on a "
                        "connection without permessage-deflate is read and written without "
                        "Autobahn's per-frame callbacks, and plain `ws` writes go to the socket "
                        "at once instead of on the reactor's next turn. Messages and close codes "
                        "are the same either way; `false` keeps every connection on Autobahn's "
                        "and Twisted's own path, as does an Autobahn or Twisted without a private "
                        "name the fast path relies on (logged as `fast_path.unavailable`)."),
    "bus": BUS,
    "admin": ADMIN,
    "deploy": DEPLOY,
}, help="the server keys: `ws.json`, or `\"server\"` in the one-file form")

SERVICE = Object({
    "standalone": Scalar(bool, False,
                         help="`false`: a reactive service that answers WebSocket clients; "
                         "`true`: a standalone service (`init`/`run` in a thread per instance)."),
    "internal": Scalar(bool, False, help="the legacy name of `standalone`."),
    "auto_start": Scalar(bool, True,
                         help="start with the server. A service that is not auto-started is "
                         "still started when an auto-started one `depends` on it."),
    "instances": Scalar(int, 1, minimum=1,
                        help="the number of Lua states of the service; connections are spread "
                        "over them round-robin."),
    "preload": Nullable(Array(Scalar(str), [], unique=True), [],
                        help="optional Lua modules to install as globals: `nap`, `time`, "
                        "`murmur`, `cws`, `pam_auth`, `mqr` (LAppS's full list). Naming "
                        "anything else is a config error rather than a nil global at run time."),
    "depends": Nullable(Array(Scalar(str), [], unique=True), [],
                        help="services to start first, recursively: a service's instances start "
                        "only once those of every service it depends on have run "
                        "`onStart`/`init`. A name without a descriptor is logged and ignored; a "
                        "cycle is a config error; services stop in the reverse order."),
    "request_target": Scalar(str, None, test=lambda s: s.startswith("/"),
                             expect="a path starting with /",
                             help="required for a reactive service: the path that selects it. "
                             "Exact, case-sensitive match on the path; the query string is not "
                             "part of the match (`/echo?x=1` reaches `/echo`), so a target "
                             "holding `?` is a config error."),
    "protocol": Scalar(str, "raw", choices=("raw", "LAppS"),
                       help='`"raw"` (messages as they are) or `"LAppS"` (the CBOR protocol).'),
    "max_inbound_message_size": Scalar(int, 1 * MiB, minimum=1,
                                       help="the limit on a whole inbound message, fragments "
                                       "included; over it the connection is closed with 1009."),
    "acl": _acl("the service's network ACL, applied in the handshake: a denied peer gets HTTP "
                "403 before any upgrade. No effect on a standalone service"),
    "extra_headers": MapOf(Scalar(str), {},
                           help="header name → value, added to the 101 response. Names must be "
                           "HTTP tokens and values free of CR/LF; the handshake's own headers "
                           "(`Upgrade`, `Connection`, `Sec-WebSocket-*`, `Server`) cannot be "
                           "replaced."),
    "proto_alias": Scalar(str, None, test=bool, expect="a non-empty string",
                          help="the subprotocol name of the service (else the `protocol` "
                          "value). It is answered in `Sec-WebSocket-Protocol` only when the "
                          "client offered it."),
    "name": Scalar(str, None, help="required in a deployed archive's descriptor (the service's "
                   "name); accepted elsewhere."),
    "max_memory": Scalar(int, 128 * MiB, minimum=1 * MiB,
                         help="lapps addition: the memory cap of each instance's Lua heap, in "
                         "bytes; a callback that exhausts it closes its connection with 1011 "
                         "and the instance's Lua state is rebuilt (`onStart` runs again; its "
                         "other connections get 1012)."),
    "stop_timeout": Scalar(float, 5.0, minimum=0,
                           help="lapps addition, standalone services: seconds to wait at stop "
                           "for the instance threads to leave `run()`; a thread still running "
                           "then is logged by name (`instance.stuck`)."),
    "settings": MapOf(Anything(), None,
                      help="lapps addition: any JSON object, given to every instance of the "
                      "service as the global `settings` (an `nljson` value). The global exists "
                      "only when the key does."),
    "max_outbound_buffer": Scalar(int, 4 * MiB, minimum=64 * 1024,
                                  help="lapps addition: bytes one client may have queued beyond "
                                  "the transport's 64 KiB before it is closed with 1008, so a "
                                  "client that does not read cannot grow the server. A message "
                                  "is never cut: the write that fills the buffer goes whole."),
    "outbound_stall_timeout": Scalar(float, 30.0, test=lambda v: v > 0,
                                     expect="a number of seconds > 0",
                                     help="lapps addition: a client whose buffer has not "
                                     "drained for this long is closed with 1008, even under "
                                     "the cap."),
    "max_instance_queue": Scalar(int, 1000, minimum=1,
                                 help="lapps addition: events queued for one instance; past it "
                                 "the server stops reading from the client that sent the event "
                                 "until the queue is down to half, so a suspended instance "
                                 "cannot be flooded."),
    "ping_interval": Scalar(float, 30.0, minimum=0,
                            help="lapps addition: seconds between pings to an idle client "
                            "(dead peers are found within a minute; keeps NAT and proxy idle "
                            "timers open); `0` sends no pings."),
    "ping_timeout": Scalar(float, 30.0, test=lambda v: v > 0, expect="a number of seconds > 0",
                           help="lapps addition: seconds a ping may go unanswered before the "
                           "connection is closed."),
    "allowed_origins": Array(Scalar(str, test=_parses(origin.normalise),
                                    expect='an origin "scheme://host[:port]" or "null"'),
                             [], unique=True,
                             help='lapps addition: `"scheme://host[:port]"` entries (normalised: '
                             "`https://Example.com` is `https://example.com:443`); a non-empty "
                             "list requires a matching `Origin` (list `\"null\"` to admit "
                             "`file://` pages), else 403: protects browser-facing services from "
                             "cross-site WebSocket hijacking. `[]`: any origin."),
    "permessage_deflate": Scalar(bool, False,
                                 help="lapps addition: offer permessage-deflate; compression "
                                 "costs CPU and memory per connection, so it is opt-in per "
                                 "service."),
    "handler_timeout": Scalar(float, 1.0, test=lambda v: v > 0, expect="a number of seconds > 0",
                              help="lapps addition: a callback that runs longer is stopped (also "
                              "inside `pcall` or a coroutine of its own) and its connection "
                              "closed with 1011, so one buggy handler cannot freeze every other "
                              "connection. Time suspended in `nap`, `mqr`, `pam_auth` or `cws` "
                              "does not count."),
    # standalone services, with several workers: in every worker rather than once per host
    "every_worker": Scalar(bool, False,
                           help="lapps addition, standalone services with `workers.workers` > 1: "
                           "`true` runs the service in every worker process; `false` runs it "
                           "once per host, in worker 0."),
}, help="one service descriptor, under `services.<name>`")

DIRECTORIES = Object({
    "applications": Scalar(str, "apps",
                           help="the folder holding `<name>/<name>.lua` for each service; "
                           "relative to `LAPPS_HOME` when that is set, else to the config "
                           "file's folder."),
    "deploy": Scalar(str, "deploy",
                     help="the folder watched for `.lar` archives (hot deploy). When it does "
                     "not exist, hot deploy is off (`deploy.off` is logged; LAppS refused to "
                     "start)."),
    "tmp": Scalar(str, "tmp", help="where archives are copied, unpacked and checked (one new "
                  "folder per archive, removed afterwards; created if missing)."),
    "app_conf_dir": Scalar(str, "etc", help=f"{_ACCEPTED} (LAppS did not use it either)."),
    "workdir": Scalar(str, "workdir", help=f"{_ACCEPTED} (LAppS did not use it either)."),
}, help="where services, archives and scratch files live")


class ConfigError(Exception):
    """The configuration is unusable; ``lines`` says why, one problem per line."""

    def __init__(self, lines):
        super().__init__("\n".join(lines))
        self.lines = list(lines)


def _python_type(node):
    return getattr(node, "kind", object)


#: One service descriptor after validation: a field per key of :data:`SERVICE`
#: (``internal`` is folded into ``standalone``; ``name`` is the service's name;
#: ``preload`` and ``depends`` are tuples, ``allowed_origins`` a frozenset of
#: normalised origins), plus ``directory``, its module's folder, and
#: ``archive_sha256``, the SHA-256 of the .lar it was deployed from
#: (lapps.deploy): a new archive is a new version even with the same
#: descriptor, so a reload restarts the service.
ServiceConfig = make_dataclass(
    "ServiceConfig",
    [(key, _python_type(node)) for key, node in SERVICE.fields.items() if key != "internal"]
    + [("directory", str), ("archive_sha256", str | None, field(default=None))],
    frozen=True)
ServiceConfig.__module__ = __name__


@dataclass(frozen=True)
class Config:
    """A whole validated configuration."""

    source: str
    server: dict
    services: dict
    apps_dir: str
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    lua_path: str = field(default="", repr=False)
    deploy_dir: str = ""   # watched for .lar archives when it exists (lapps.deploy)
    tmp_dir: str = ""      # where archives are unpacked and checked
    deployed: dict = field(default_factory=dict)  # lapps.deploy.state: name -> entry
    # what the config was built from, before the deployed services were merged in
    # (a deploy re-validates it with a new descriptor): see :func:`rebuild`
    raw: dict = field(default_factory=dict, repr=False)
    base_dir: str = ""
    server_source: str = ""


def _read_json(path: str, problems: Problems):
    try:
        with open(path, "rb") as f:
            data, unusable = config_json.loads(f.read())
    except FileNotFoundError:
        problems.add(path, "", "no such file")
    except json.JSONDecodeError as e:
        problems.add(path, "", f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}")
    except (OSError, UnicodeDecodeError) as e:
        problems.add(path, "", f"cannot read: {e}")
    else:
        for where, message in unusable:
            problems.add(path, where, message)
        return data
    return None


def load(path: str, environ=os.environ, check_certificates=True) -> Config:
    """Read and validate the configuration at ``path`` (either form)."""
    problems = Problems()
    data = _read_json(path, problems)
    if problems.lines:  # (not ``data is None``: a file may hold JSON's null)
        raise ConfigError(problems.lines)
    server_source = path
    if isinstance(data, dict) and "server" not in data:
        ws_path = os.path.join(os.path.dirname(path), environ.get("WS_CONFIG", "ws.json"))
        if os.path.exists(ws_path):
            server = _read_json(ws_path, problems)
            if problems.lines:
                raise ConfigError(problems.lines)
            data = dict(data, server=server)
            server_source = ws_path
    return from_dict(data, os.path.dirname(os.path.abspath(path)), path, server_source, environ,
                     check_certificates)


def from_dict(data, base_dir: str, source: str = "<config>", server_source: str | None = None,
              environ=os.environ, check_certificates=True, deployed=None,
              locations=None) -> Config:
    """Validate a configuration given as a dict (the one-file form, or without
    ``"server"`` for all server defaults). Relative paths resolve against
    ``base_dir``; the ``directories`` against ``LAPPS_HOME`` if set.

    The deployed services (``deployed``, else those of the deploy folder's
    state file) are merged over ``services``; ``locations`` (name → folder)
    puts a service's module somewhere other than the applications folder
    (a deploy's check, before the move)."""
    problems = Problems()
    server_source = server_source or source
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: /: expected an object, got {describe(data)}"])
    raw, data = data, dict(data)
    server_where = "/server" if server_source == source else ""
    server = SERVER.check(data.pop("server", {}), server_where, server_source, problems)
    for key in data:
        if key not in ("directories", "services"):
            problems.add(source, pointer("", key), "unknown key")
    directories = DIRECTORIES.check(data.get("directories", {}), "/directories", source, problems)
    raw_services = data.get("services", {})
    if not isinstance(raw_services, dict):
        problems.add(source, "/services", f"expected an object, got {describe(raw_services)}")
        raw_services = {}

    home = environ.get("LAPPS_HOME")
    apps_dir, deploy_dir, tmp_dir = (os.path.join(home or base_dir, directories[key])
                                     for key in ("applications", "deploy", "tmp"))
    if deployed is None:
        try:
            deployed = deploy_state.read(deploy_dir)
        except ValueError as e:
            problems.add(deploy_state.path(deploy_dir), "", str(e))
            deployed = {}
    raw_services = deploy_state.merged(raw_services, deployed)
    services = {}
    for name, desc in raw_services.items():
        # a deployed service's problems point into the state file, where its descriptor is
        origin_file, where = (deploy_state.path(deploy_dir),
                              pointer(pointer("/services", name), "descriptor")) \
            if name in deployed else (source, None)
        if isinstance(desc, dict):
            services[name] = _service(name, desc, apps_dir, origin_file, problems, where=where,
                                      directory=(locations or {}).get(name))
            if name in deployed:
                services[name] = replace(
                    services[name], archive_sha256=deployed[name].get("sha256"))
        else:
            problems.add(source, pointer("/services", name),
                         f"expected an object, got {describe(desc)}")
    _check_targets(services, source, problems)
    _check_cycles(services, source, problems)

    _check_bus(server, server_source, server_where, problems)
    _check_admin(server, server_source, server_where, problems)

    certs = server["tls_certificates"]
    certs_base = base_dir if server_source == source else \
        os.path.dirname(os.path.abspath(server_source))
    paths = {k: os.path.join(certs_base, certs[k]) for k in ("ca", "cert", "key")}
    if server["tls"] and check_certificates:
        for key, text in tls.check_pair(paths["cert"], paths["key"]):
            problems.add(server_source, f"{server_where}/tls_certificates/{key}", text)

    if problems.lines:
        raise ConfigError(problems.lines)
    service_dirs = [s.directory for s in services.values()]
    return Config(source=source, server=server, services=services, apps_dir=apps_dir,
                  cert_file=paths["cert"], key_file=paths["key"], ca_file=paths["ca"],
                  lua_path=";".join(os.path.join(d, "?.lua") for d in service_dirs),
                  deploy_dir=deploy_dir, tmp_dir=tmp_dir, deployed=deployed, raw=raw,
                  base_dir=base_dir, server_source=server_source)


def rebuild(config, deployed, locations=None, environ=os.environ):
    """``config`` validated again from what it was built from, with other
    deployed services (a deploy's check and its result)."""
    return from_dict(config.raw, config.base_dir, config.source, config.server_source, environ,
                     deployed=deployed, locations=locations)


def check_descriptor(name, descriptor, directory, source):
    """The problems of one deployed descriptor on its own (pointers inside
    it), its module looked for in ``directory``."""
    problems = Problems()
    _service(name, descriptor, os.path.dirname(directory), source, problems, where="",
             directory=directory)
    return problems.lines


def _check_bus(server, source, where, problems):
    """What the schema cannot say alone: the backend when none is given
    (worker processes share the host bus, as LAppS's configs with several IO
    workers expect), the URL (required with Redis), and that several workers
    need a bus they can share."""
    bus, workers = server["bus"], server["workers"]["workers"]
    several = isinstance(workers, int) and workers > 1
    if bus["backend"] is None:
        bus["backend"] = "host" if several else "local"
    url = bus["url"]
    if url is None and bus["backend"] == "redis":
        problems.add(source, f"{where}/bus/url", 'required when "backend" is "redis" '
                     '(redis://HOST[:PORT][/DB])')
    elif url is not None:
        try:
            bus_address.parse(url)
        except ValueError as e:
            problems.add(source, f"{where}/bus/url",
                         f"{e} (expected redis://HOST[:PORT][/DB]), got {describe(url)}")
    if several and bus["backend"] == "local":
        problems.add(source, f"{where}/workers/workers",
                     f"{workers} worker processes cannot share the local bus (bcast channels "
                     'and mqr queues would be separate in each process); set "bus": '
                     '{"backend": "host"} (the default with workers) or "redis", or "workers": 1')


def _check_admin(server, source, where, problems):
    """The admin listener needs a port of its own: the WebSocket port stays WebSocket-only."""
    admin, wildcards = server["admin"], {"0.0.0.0", "::"}
    if admin["port"] != 0 and admin["port"] == server["port"] and (
            admin["ip"] == server["ip"] or {admin["ip"], server["ip"]} & wildcards):
        problems.add(source, f"{where}/admin/port",
                     f"{admin['port']} is the WebSocket port; give the admin listener its own")


_LUA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def is_service_name(name):
    """A service name is a Lua identifier: it names the module, its folder and a global."""
    return bool(_LUA_NAME.match(name))
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
#: Headers of the handshake itself, which ``extra_headers`` may not replace.
_HANDSHAKE_HEADERS = {"upgrade", "connection", "sec-websocket-accept",
                      "sec-websocket-protocol", "sec-websocket-extensions", "server"}


def _check_headers(headers, source, where, problems):
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            problems.add(source, pointer(where, name), "not a valid HTTP header name")
        elif name.lower() in _HANDSHAKE_HEADERS:
            problems.add(source, pointer(where, name), "is set by the WebSocket handshake itself")
        elif isinstance(value, str) and any(c in value for c in "\r\n\0"):
            problems.add(source, pointer(where, name), "a header value cannot hold CR, LF or NUL")


def _service(name, desc, apps_dir, source, problems, where=None, directory=None) -> ServiceConfig:
    where = pointer("/services", name) if where is None else where
    if not _LUA_NAME.match(name):
        problems.add(source, where, "a service name must be a Lua identifier "
                     "(it names the module, its folder and a global)")
    checked = SERVICE.check(desc, where, source, problems)
    _check_headers(checked["extra_headers"], source, pointer(where, "extra_headers"), problems)
    target = checked["request_target"]
    if target is not None and "?" in target:
        problems.add(source, pointer(where, "request_target"),
                     "the query string is not part of the match; give the path only")
    kind_key = "standalone" if "standalone" in desc or "internal" not in desc else "internal"
    if "standalone" in desc and "internal" in desc and checked["standalone"] != checked["internal"]:
        problems.add(source, pointer(where, "internal"),
                     'contradicts "standalone" (internal is its legacy name)')
    standalone = bool(checked[kind_key])
    directory = directory or os.path.join(apps_dir, name)
    module = os.path.join(directory, f"{name}.lua")
    if not os.path.isfile(module):
        problems.add(source, where, f"no service module at {module}")
    if not standalone and "request_target" not in desc:
        problems.add(source, pointer(where, "request_target"), "required for a reactive service")
    for i, module_name in enumerate(checked["preload"]):
        if isinstance(module_name, str) and module_name not in PRELOADABLE:
            problems.add(source, pointer(pointer(where, "preload"), i),
                         f"module {json.dumps(module_name)} is not provided by this version of lapps")
    checked.update(name=name, standalone=standalone, preload=tuple(checked["preload"]),
                   depends=tuple(checked["depends"]), directory=directory,
                   allowed_origins=frozenset(_normalised(checked["allowed_origins"])))
    del checked["internal"]
    return ServiceConfig(**checked)


def _normalised(origins):
    """Valid origins in canonical form (invalid ones are already reported)."""
    for text in origins:
        try:
            if isinstance(text, str):
                yield origin.normalise(text)
        except ValueError:
            pass


def _check_targets(services, source, problems):
    owners = {}
    for name, service in services.items():
        if service.standalone or service.request_target is None:
            continue
        if service.request_target in owners:
            problems.add(source, pointer(pointer("/services", name), "request_target"),
                         f"{json.dumps(service.request_target)} is already the target of service "
                         f"{json.dumps(owners[service.request_target])}")
        else:
            owners[service.request_target] = name


def _check_cycles(services, source, problems):
    """A ``depends`` cycle can never start: report each one once, by its path."""
    reported = set()

    def visit(name, path):
        if name in path:
            cycle = path[path.index(name):] + [name]
            if frozenset(cycle) not in reported:
                reported.add(frozenset(cycle))
                problems.add(source, pointer(pointer("/services", cycle[0]), "depends"),
                             "dependency cycle " + " -> ".join(cycle))
            return
        for dep in services[name].depends:
            if isinstance(dep, str) and dep in services and dep != name:
                visit(dep, path + [name])

    for name in services:
        visit(name, [])
