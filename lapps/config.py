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
from dataclasses import dataclass, field, replace

from lapps import acl as network_acl, config_json, origin, tls
from lapps.deploy import signature, state as deploy_state
from lapps.bus.redis import address as bus_address
from lapps.lua.modules import PRELOAD
from lapps.schema import Anything, Array, MapOf, Nullable, Object, Problems, Scalar, describe, pointer

MiB = 1024 * 1024

#: Modules a service may name in ``preload`` (LAppS's list: nap, time, murmur, cws, pam_auth, mqr).
PRELOADABLE = frozenset(PRELOAD)


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
ACL = Object({
    "policy": Scalar(str, "allow", choices=("allow", "deny")),
    "exclude": Array(Scalar(str, test=_parses(network_acl.parse_entry),
                               expect="an IP address or CIDR network"), []),
})

#: ``pam_auth`` (spec §6.6): the PAM services Lua may name, failure padding and
#: rate limits; defaults as in :data:`lapps.services.pam_auth.DEFAULTS`.
PAM_AUTH = Object({
    "services": Array(Scalar(str, test=lambda s: re.match(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z", s),
                             expect="a PAM service name (a file name in /etc/pam.d)"),
                      ["lapps"], unique=True),
    "min_failure_seconds": Scalar(float, 1.0, minimum=0, maximum=60),
    "max_failures": Scalar(int, 5, minimum=1),
    "window_seconds": Scalar(float, 60.0, test=lambda v: 0 < v <= 86400,
                             expect="a number of seconds > 0 and <= 86400"),
    "threads": Scalar(int, 2, minimum=1, maximum=32),
})

#: Protection of the accepting side (README "Limits and defaults").
LIMITS = Object({
    "handshake_timeout": Scalar(float, 10.0, test=lambda v: v > 0, expect="a number of seconds > 0"),
    "max_request_line": Scalar(int, 8192, minimum=256),
    "max_header_line": Scalar(int, 8192, minimum=256),
    "max_header_block": Scalar(int, 16384, minimum=1024),
    "peer_max_connections": Scalar(int, 1000, minimum=1),
    "peer_connection_rate": Scalar(float, 100.0, test=lambda v: v > 0,
                                   expect="a number of connections per second > 0"),
    "peer_connection_burst": Scalar(int, 500, minimum=1),
    # The host itself (a benchmark such as LAppS's demo, a local proxy) is not a peer to limit.
    # a Lua call holding the reactor this long past its handler_timeout is stuck in C:
    # the process exits (lapps.watchdog) to be restarted; 0 turns the check off
    "stall_timeout": Scalar(float, 5.0, minimum=0),
    "peer_exempt": Array(Scalar(str, test=_parses(network_acl.parse_entry),
                                expect="an IP address or CIDR network"), ["127.0.0.0/8", "::1"]),
})

#: Where bcast and mqr live (lapps.bus): in this process, between the worker
#: processes of this host, or in Redis for every process and host that names the
#: same URL and prefix. No backend: "host" with workers, else "local" (_check_bus).
BUS = Object({
    "backend": Scalar(str, None, choices=("local", "host", "redis")),
    "url": Scalar(str, None),  # required with "redis"; checked by _check_bus
    "prefix": Scalar(str, "lapps:", test=str.isprintable, expect="a printable string"),
    # a process that has not renewed its presence for this long is dead: the mqr
    # entries it had taken from Redis go to the receivers of other processes
    "consumer_timeout": Scalar(float, 10.0, test=lambda v: 0.5 <= v <= 3600,
                               expect="a number of seconds from 0.5 to 3600"),
})

#: The admin listener (lapps.admin): /metrics, /healthz, /readyz and the
#: status page over plain HTTP, on its own port; port 0 leaves it off.
ADMIN = Object({
    "ip": Scalar(str, "127.0.0.1", test=_parses(ipaddress.ip_address),
                 expect="an IPv4 or IPv6 address"),
    "port": Scalar(int, 0, minimum=0, maximum=65535),
    "acl": ACL,
})

#: Hot deploy (lapps.deploy): what one archive may hold, who may sign it,
#: and how long its service's module may take to load in the check.
DEPLOY = Object({
    "max_archive_bytes": Scalar(int, 64 * MiB, minimum=1024),
    "max_unpacked_bytes": Scalar(int, 256 * MiB, minimum=1024),
    "max_files": Scalar(int, 10000, minimum=1),
    # base64 Ed25519 public keys; when any is set, an archive needs NAME.lar.sig from one
    "trusted_keys": Array(Scalar(str, test=signature.is_public_key,
                                 expect="an Ed25519 public key (base64 of 32 bytes)"),
                          [], unique=True),
    "check_timeout": Scalar(float, 60.0, test=lambda v: v > 0, expect="a number of seconds > 0"),
})

SERVER = Object({
    "listeners": Scalar(int, 2, minimum=0),
    "connection_weight": Scalar(float, 1.0, minimum=0),
    "ip": Scalar(str, "0.0.0.0", test=_parses(ipaddress.ip_address),
                 expect="an IPv4 or IPv6 address"),
    "port": Scalar(int, 5083, minimum=0, maximum=65535),
    "lapps_config_auto_save": Scalar(bool, True),
    "workers": Object({
        "workers": WorkerCount(int, 1, minimum=0, expect='integer >= 0 or "auto"'),
        "max_connections": Scalar(int, 10000, minimum=1),
        "auto_fragment": Scalar(bool, False),
        "max_poll_events": Scalar(int, 300, minimum=1),
        "max_poll_wait_ms": Scalar(int, 10, minimum=0),
        "max_inbounds_skip": Scalar(int, 50, minimum=0),
        "input_buffer_size": Scalar(int, 2048, minimum=1),
    }),
    "acl": ACL,
    "tls": Scalar(bool, False),
    "tls_server_version": Scalar(int, 3, choices=(3, 4)),
    "tls_client_version": Scalar(int, 3, choices=(3, 4)),
    "tls_client_verify": Scalar(bool, True),
    "tls_certificates": Object({
        "ca": Scalar(str, "ssl/localhost.ca.pem"),
        "cert": Scalar(str, "ssl/localhost.crt"),
        "key": Scalar(str, "ssl/localhost.key"),
    }),
    "pam_auth": PAM_AUTH,
    # mqr (spec §6.5): the most messages one named queue holds; a post to a
    # full queue returns false and "queue full"
    "mqr": Object({"max_queue": Scalar(int, 10000, minimum=1, maximum=10_000_000),
                   "max_queue_bytes": Scalar(int, 64 * MiB, minimum=64 * 1024)}),
    "limits": LIMITS,
    # SIGTERM: how long clients, services and threads get before the process exits anyway
    "shutdown_timeout": Scalar(float, 10.0, minimum=0),
    # lapps.protocols.fastpath: the common frame without Autobahn's callback chain, and
    # writes at once; false keeps every connection on Autobahn's and Twisted's own path
    "fast_path": Scalar(bool, True),
    "bus": BUS,
    "admin": ADMIN,
    "deploy": DEPLOY,
})

SERVICE = Object({
    "standalone": Scalar(bool, False),
    "internal": Scalar(bool, False),  # the legacy name of "standalone"
    "auto_start": Scalar(bool, True),
    "instances": Scalar(int, 1, minimum=1),
    "preload": Nullable(Array(Scalar(str), [], unique=True), []),
    "depends": Nullable(Array(Scalar(str), [], unique=True), []),
    "request_target": Scalar(str, None, test=lambda s: s.startswith("/"),
                             expect="a path starting with /"),
    "protocol": Scalar(str, "raw", choices=("raw", "LAppS")),
    "max_inbound_message_size": Scalar(int, 1 * MiB, minimum=1),
    "acl": ACL,
    "extra_headers": MapOf(Scalar(str), {}),
    "proto_alias": Scalar(str, None, test=bool, expect="a non-empty string"),
    "name": Scalar(str, None),
    "max_memory": Scalar(int, 128 * MiB, minimum=1 * MiB),
    "stop_timeout": Scalar(float, 5.0, minimum=0),
    "settings": MapOf(Anything(), None),
    "max_outbound_buffer": Scalar(int, 4 * MiB, minimum=64 * 1024),
    "outbound_stall_timeout": Scalar(float, 30.0, test=lambda v: v > 0,
                                     expect="a number of seconds > 0"),
    "max_instance_queue": Scalar(int, 1000, minimum=1),
    "ping_interval": Scalar(float, 30.0, minimum=0),
    "ping_timeout": Scalar(float, 30.0, test=lambda v: v > 0, expect="a number of seconds > 0"),
    "allowed_origins": Array(Scalar(str, test=_parses(origin.normalise),
                                    expect='an origin "scheme://host[:port]" or "null"'),
                             [], unique=True),
    "permessage_deflate": Scalar(bool, False),
    "handler_timeout": Scalar(float, 1.0, test=lambda v: v > 0, expect="a number of seconds > 0"),
    # standalone services, with several workers: in every worker rather than once per host
    "every_worker": Scalar(bool, False),
})

DIRECTORIES = Object({
    "applications": Scalar(str, "apps"),
    "deploy": Scalar(str, "deploy"),
    "tmp": Scalar(str, "tmp"),
    "app_conf_dir": Scalar(str, "etc"),
    "workdir": Scalar(str, "workdir"),
})


class ConfigError(Exception):
    """The configuration is unusable; ``lines`` says why, one problem per line."""

    def __init__(self, lines):
        super().__init__("\n".join(lines))
        self.lines = list(lines)


@dataclass(frozen=True)
class ServiceConfig:
    """One service descriptor after validation, with its module's location."""

    name: str
    standalone: bool
    auto_start: bool
    instances: int
    preload: tuple
    depends: tuple
    request_target: str | None
    protocol: str
    max_inbound_message_size: int
    extra_headers: dict
    proto_alias: str | None
    max_memory: int
    stop_timeout: float
    settings: dict | None
    directory: str
    acl: dict  # the network ACL: {"policy": ..., "exclude": [...]}
    max_outbound_buffer: int
    outbound_stall_timeout: float
    max_instance_queue: int
    ping_interval: float
    ping_timeout: float
    allowed_origins: frozenset  # normalised; empty: any origin
    permessage_deflate: bool
    handler_timeout: float
    every_worker: bool
    # the SHA-256 of the .lar it was deployed from (lapps.deploy): a new archive is a new
    # version even with the same descriptor, so a reload restarts the service
    archive_sha256: str | None = None


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
    return ServiceConfig(
        name=name, standalone=standalone, auto_start=checked["auto_start"],
        instances=checked["instances"], preload=tuple(checked["preload"]),
        depends=tuple(checked["depends"]), request_target=checked["request_target"],
        protocol=checked["protocol"], max_inbound_message_size=checked["max_inbound_message_size"],
        extra_headers=checked["extra_headers"], proto_alias=checked["proto_alias"],
        max_memory=checked["max_memory"], stop_timeout=checked["stop_timeout"],
        settings=checked["settings"],
        directory=directory, acl=checked["acl"],
        max_outbound_buffer=checked["max_outbound_buffer"],
        outbound_stall_timeout=checked["outbound_stall_timeout"],
        max_instance_queue=checked["max_instance_queue"],
        ping_interval=checked["ping_interval"], ping_timeout=checked["ping_timeout"],
        allowed_origins=frozenset(_normalised(checked["allowed_origins"])),
        permessage_deflate=checked["permessage_deflate"],
        handler_timeout=checked["handler_timeout"], every_worker=checked["every_worker"])


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
