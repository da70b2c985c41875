"""Config loading and validation (spec §0.3, §1, §2; DESIGN "Config").

Every bad config is a real file in ``tmp_path`` checked by the real
``lapps check`` (and, for some, by ``twistd lapps``); the expected error lines
are verbatim. ``{dir}`` in an expected line stands for the config's folder.
"""

import asyncio
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from conftest import REPO, Server
from lapps import config as configuration, devcert

BIN = Path(sys.executable).parent
LAPPS = BIN / "lapps"
TWISTD = BIN / "twistd"
ECHO_LUA = Path(__file__).resolve().parents[1] / "apps" / "echo" / "echo.lua"

#: The subprocesses must not see an operator's environment overrides.
ENV = {k: v for k, v in os.environ.items() if k not in ("LAPPS_HOME", "WS_CONFIG")}


# --- building configs ------------------------------------------------------

def service(target, **extra):
    """A reactive service descriptor (the module is installed separately)."""
    return {"standalone": False, "auto_start": True, "instances": 1, "protocol": "raw",
            "request_target": target, **extra}


def one_file(services=None, server=None, **top):
    """A one-file config on an ephemeral loopback port, apps in ``apps/``."""
    return {"server": {"ip": "127.0.0.1", "port": 0, **(server or {})},
            "directories": {"applications": "apps"},
            "services": {"echo": service("/echo")} if services is None else services,
            **top}


def services_file(services=None):
    """The services half of the LAppS two-file form (no ``"server"``)."""
    return {"directories": {"applications": "apps"},
            "services": {"echo": service("/echo")} if services is None else services}


@functools.cache
def pems():
    """Two server certificates from one CA, each with its own key."""
    ca_cert, ca_key = devcert.make_ca()
    cert_a, key_a = devcert.make_server_cert(ca_cert, ca_key)
    cert_b, key_b = devcert.make_server_cert(ca_cert, ca_key)
    return {"CERT_A": devcert.pem_cert(cert_a), "KEY_A": devcert.pem_key(key_a),
            "CERT_B": devcert.pem_cert(cert_b), "KEY_B": devcert.pem_key(key_b)}


def install(directory, names):
    """Put the shipped echo module at ``apps/<name>/<name>.lua`` for each name."""
    for name in names:
        target = Path(directory) / "apps" / name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(ECHO_LUA, target / f"{name}.lua")


def write(directory, name, content):
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str) and content in ("CERT_A", "KEY_A", "CERT_B", "KEY_B"):
        content = pems()[content]
    if isinstance(content, (dict, list)):
        content = json.dumps(content, indent=2)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def lay_out(directory, config, files=None, apps=("echo",), config_name="lapps.json"):
    """Write the config (dict → JSON, str → raw text, None → no file), the
    extra files and the service modules."""
    if config is not None:
        write(directory, config_name, config)
    for name, content in (files or {}).items():
        write(directory, name, content)
    install(Path(directory) / Path(config_name).parent, apps)


def run(command, cwd):
    return subprocess.run([str(c) for c in command], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=60)


def lapps_check(cwd, path="lapps.json"):
    return run([LAPPS, "check", path], cwd)


def expand(lines, directory):
    real = os.path.realpath(directory)
    return [line.replace("{dir}", real) for line in lines]


def assert_no_traceback(process):
    assert "Traceback" not in process.stdout + process.stderr, process.stdout + process.stderr


# --- the table of bad configs ---------------------------------------------

def raw_config(server, echo):
    """A one-file config as text: ``server`` and ``echo`` are the insides of
    the server object and of the echo service's descriptor."""
    return ('{"server": {"ip": "127.0.0.1", ' + server + '}, "directories": {"applications": '
            '"apps"}, "services": {"echo": {' + echo + "}}}")


E = "lapps.json"  # every case is checked as ``lapps check lapps.json`` from its folder

MULTI_ERROR = {
    "server": {"ip": "127.0.0.1", "port": 70000, "workers": {"workers": "2"},
               "tls_server_version": 5},
    "directories": {"applications": "apps"},
    "services": {
        "echo": {"standalone": False, "instances": 0, "protocol": "json",
                 "request_target": "/echo", "bogus": 1},
        "second": {"standalone": False, "instances": 1},
    },
    "extra": True,
}

BAD = [
    # unknown keys, at every level
    pytest.param(one_file(bogus=1), None, ("echo",),
                 [f"{E}: /bogus: unknown key"], id="unknown-top-level-key"),
    pytest.param(one_file(server={"prot": 80}), None, ("echo",),
                 [f"{E}: /server/prot: unknown key"], id="unknown-server-key"),
    pytest.param(one_file(server={"workers": {"max_poll_event": 256}}), None, ("echo",),
                 [f"{E}: /server/workers/max_poll_event: unknown key"], id="unknown-workers-key"),
    pytest.param(one_file({"echo": service("/echo", instance=4)}), None, ("echo",),
                 [f"{E}: /services/echo/instance: unknown key"], id="unknown-service-key"),
    pytest.param(one_file(server={"a/b~c": 1}), None, ("echo",),
                 [f"{E}: /server/a~1b~0c: unknown key"], id="pointer-escapes-slash-and-tilde"),
    pytest.param(one_file(server={"bus": {"history_max_bytes": 2**64}}), None, ("echo",),
                 [f"{E}: /server/bus/history_max_bytes: expected integer from 1024 to 33554432, "
                  f"got {2**64}"], id="history-bytes-over-its-maximum"),
    # wrong types
    pytest.param(one_file(server={"port": "5083"}), None, ("echo",),
                 [f"{E}: /server/port: expected integer from 0 to 65535, got string \"5083\""],
                 id="string-for-integer"),
    pytest.param(one_file({"echo": service("/echo", instances=True)}), None, ("echo",),
                 [f"{E}: /services/echo/instances: expected integer >= 1, got true"],
                 id="boolean-for-integer"),
    pytest.param(one_file({"echo": service("/echo", instances=2.5)}), None, ("echo",),
                 [f"{E}: /services/echo/instances: expected integer >= 1, got 2.5"],
                 id="float-for-integer"),
    pytest.param(one_file(server={"tls": "yes"}), None, ("echo",),
                 [f"{E}: /server/tls: expected boolean, got string \"yes\""],
                 id="string-for-boolean"),
    pytest.param(one_file(server={"ip": "localhost"}), None, ("echo",),
                 [f"{E}: /server/ip: expected an IPv4 or IPv6 address, got string \"localhost\""],
                 id="ip-not-an-address"),
    # out of range
    pytest.param(one_file({"echo": service("/echo", instances=0)}), None, ("echo",),
                 [f"{E}: /services/echo/instances: expected integer >= 1, got 0"],
                 id="instances-0"),
    pytest.param(one_file(server={"port": 70000}), None, ("echo",),
                 [f"{E}: /server/port: expected integer from 0 to 65535, got 70000"],
                 id="port-70000"),
    pytest.param(one_file(server={"tls_server_version": 5}), None, ("echo",),
                 [f"{E}: /server/tls_server_version: expected one of 3, 4, got 5"],
                 id="tls-server-version-5"),
    # bad enums
    pytest.param(one_file({"echo": service("/echo", protocol="json")}), None, ("echo",),
                 [f"{E}: /services/echo/protocol: expected one of \"raw\", \"LAppS\", "
                  "got string \"json\""], id="protocol-json"),
    pytest.param(one_file(server={"acl": {"policy": "maybe"}}), None, ("echo",),
                 [f"{E}: /server/acl/policy: expected one of \"allow\", \"deny\", "
                  "got string \"maybe\""], id="server-acl-policy-maybe"),
    pytest.param(one_file({"echo": service("/echo", acl={"policy": "maybe", "exclude": []})}),
                 None, ("echo",),
                 [f"{E}: /services/echo/acl/policy: expected one of \"allow\", \"deny\", "
                  "got string \"maybe\""], id="service-acl-policy-maybe"),
    # network ACL entries (spec §6.4)
    pytest.param(one_file(server={"acl": {"policy": "deny", "exclude": [
                     "127.0.0.1", "10.0.0.0/8", "10.0.0.300", "::1", "10.0.0.0/33", 5]}}),
                 None, ("echo",),
                 [f"{E}: /server/acl/exclude/2: expected an IP address or CIDR network, "
                  "got string \"10.0.0.300\"",
                  f"{E}: /server/acl/exclude/4: expected an IP address or CIDR network, "
                  "got string \"10.0.0.0/33\"",
                  f"{E}: /server/acl/exclude/5: expected an IP address or CIDR network, got 5"],
                 id="server-acl-malformed-entries"),
    pytest.param(one_file(server={"limits": {"peer_exempt": ["::1", "localhost"]}}),
                 None, ("echo",),
                 [f"{E}: /server/limits/peer_exempt/1: expected an IP address or CIDR network, "
                  "got string \"localhost\""], id="peer-exempt-malformed"),
    pytest.param(one_file({"echo": service("/echo", acl={"policy": "allow", "exclude": [
                     "2001:db8::/129", "localhost", " 10.0.0.1", "fe80::1%eth0", "010.0.0.1"]})}),
                 None, ("echo",),
                 [f"{E}: /services/echo/acl/exclude/{i}: expected an IP address or CIDR network, "
                  f"got string {json.dumps(entry)}" for i, entry in enumerate(
                      ["2001:db8::/129", "localhost", " 10.0.0.1", "fe80::1%eth0", "010.0.0.1"])],
                 id="service-acl-malformed-entries"),
    pytest.param(one_file({"echo": service("/echo", acl={"exclude": "10.0.0.1", "deny": True})}),
                 None, ("echo",),
                 [f"{E}: /services/echo/acl/deny: unknown key",
                  f"{E}: /services/echo/acl/exclude: expected an array, got string \"10.0.0.1\""],
                 id="service-acl-exclude-not-an-array"),
    # services
    pytest.param(one_file({"echo": service("/echo"), "echo2": service("/echo")}), None,
                 ("echo", "echo2"),
                 [f"{E}: /services/echo2/request_target: \"/echo\" is already the target of "
                  "service \"echo\""], id="duplicate-request-target"),
    pytest.param(one_file({"echo": {"standalone": False, "instances": 1}}), None, ("echo",),
                 [f"{E}: /services/echo/request_target: required for a reactive service"],
                 id="missing-request-target"),
    pytest.param(one_file({"echo": service("echo")}), None, ("echo",),
                 [f"{E}: /services/echo/request_target: expected a path starting with /, "
                  "got string \"echo\""], id="request-target-without-slash-is-one-error"),
    pytest.param(one_file({"echo": 5}), None, ("echo",),
                 [f"{E}: /services/echo: expected an object, got 5"],
                 id="descriptor-not-an-object-is-one-error"),
    pytest.param(one_file(), None, (),
                 [f"{E}: /services/echo: no service module at {{dir}}/apps/echo/echo.lua"],
                 id="missing-service-module"),
    pytest.param(one_file({"a": service("/a", depends=["b"]), "b": service("/b", depends=["a"])}),
                 None, ("a", "b"),
                 [f"{E}: /services/a/depends: dependency cycle a -> b -> a"], id="depends-cycle"),
    pytest.param(one_file({"a": service("/a", depends=["b"]), "b": service("/b", depends=["c"]),
                           "c": service("/c", depends=["a"])}), None, ("a", "b", "c"),
                 [f"{E}: /services/a/depends: dependency cycle a -> b -> c -> a"],
                 id="depends-cycle-of-three-reported-once"),
    pytest.param(one_file({"echo": service("/echo", internal=True)}), None, ("echo",),
                 [f"{E}: /services/echo/internal: contradicts \"standalone\" "
                  "(internal is its legacy name)"], id="internal-contradicts-standalone"),
    pytest.param(one_file({"echo": {"internal": "no", "request_target": "/echo"}}), None,
                 ("echo",),
                 [f"{E}: /services/echo/internal: expected boolean, got string \"no\""],
                 id="bad-internal-reported-at-internal"),
    pytest.param(one_file({"echo": {"internal": True, "auto_start": True, "instances": 1}}),
                 None, ("echo",),
                 [f"{E}: /services/echo: module echo has no function init"],
                 id="internal-true-is-standalone-so-needs-init"),
    pytest.param(one_file({"echo": service("/echo", preload=["nosuchmodule"])}), None, ("echo",),
                 [f"{E}: /services/echo/preload/0: module \"nosuchmodule\" is not provided by "
                  "this version of lapps"], id="unknown-preload-module"),
    # TLS
    pytest.param(one_file(server={"tls": True, "tls_certificates": {
                     "cert": "ssl/server.crt", "key": "ssl/server.key"}}), None, ("echo",),
                 [f"{E}: /server/tls_certificates/cert: no such file: {{dir}}/ssl/server.crt",
                  f"{E}: /server/tls_certificates/key: no such file: {{dir}}/ssl/server.key"],
                 id="tls-cert-and-key-missing"),
    pytest.param(one_file(server={"tls": True, "tls_certificates": {
                     "cert": "ssl/server.crt", "key": "ssl/server.key"}}),
                 {"ssl/server.crt": "CERT_A", "ssl/server.key": "KEY_B"}, ("echo",),
                 [f"{E}: /server/tls_certificates/key: {{dir}}/ssl/server.key does not match "
                  "the certificate in {dir}/ssl/server.crt"], id="tls-key-does-not-match-cert"),
    # the file itself
    pytest.param(None, None, ("echo",), [f"{E}: /: no such file"], id="no-such-file"),
    pytest.param('{\n  "server": {"port": 5083,}\n}\n', None, ("echo",),
                 [f"{E}: /: invalid JSON at line 2 column 27: Expecting property name "
                  "enclosed in double quotes"], id="invalid-json"),
    pytest.param("[]", None, ("echo",), [f"{E}: /: expected an object, got an array"],
                 id="top-level-not-an-object"),
    pytest.param(one_file([]), None, ("echo",),
                 [f"{E}: /services: expected an object, got an array"],
                 id="services-not-an-object"),
    # everything at once, in the order produced: server, top level, services
    pytest.param(MULTI_ERROR, None, ("echo",), [
        f"{E}: /server/port: expected integer from 0 to 65535, got 70000",
        f"{E}: /server/workers/workers: expected integer >= 0 or \"auto\", got string \"2\"",
        f"{E}: /server/tls_server_version: expected one of 3, 4, got 5",
        f"{E}: /extra: unknown key",
        f"{E}: /services/echo/bogus: unknown key",
        f"{E}: /services/echo/instances: expected integer >= 1, got 0",
        f"{E}: /services/echo/protocol: expected one of \"raw\", \"LAppS\", got string \"json\"",
        f"{E}: /services/second: no service module at {{dir}}/apps/second/second.lua",
        f"{E}: /services/second/request_target: required for a reactive service",
    ], id="several-errors-all-reported"),
    # LAppS two-file form: server errors are in ws.json, pointers without /server
    pytest.param(services_file(), {"ws.json": {"ip": "127.0.0.1", "port": 70000, "listeners": -1,
                                               "tsl": True, "workers": {"workers": "3"}}},
                 ("echo",), [
                     "ws.json: /tsl: unknown key",
                     "ws.json: /listeners: expected integer >= 0, got -1",
                     "ws.json: /port: expected integer from 0 to 65535, got 70000",
                     'ws.json: /workers/workers: expected integer >= 0 or "auto", got string "3"',
                 ], id="ws-json-errors"),
    pytest.param(dict(services_file({"echo": service("/echo", instances=0)}), bogus=1),
                 {"ws.json": {"port": -1, "tls": True}}, ("echo",), [
                     "ws.json: /port: expected integer from 0 to 65535, got -1",
                     f"{E}: /bogus: unknown key",
                     f"{E}: /services/echo/instances: expected integer >= 1, got 0",
                     "ws.json: /tls_certificates/cert: no such file: "
                     "{dir}/ssl/localhost.crt",
                     "ws.json: /tls_certificates/key: no such file: "
                     "{dir}/ssl/localhost.key",
                 ], id="errors-in-both-files"),
    pytest.param(services_file(),
                 {"ws.json": {"acl": {"exclude": ["192.168.1.0/24", "192.168.1"]}}}, ("echo",),
                 ["ws.json: /acl/exclude/1: expected an IP address or CIDR network, "
                  "got string \"192.168.1\""], id="ws-json-acl-malformed-entry"),
    pytest.param(services_file(), {"ws.json": '{"port": 1,'}, ("echo",),
                 ["ws.json: /: invalid JSON at line 1 column 12: Expecting property name "
                  "enclosed in double quotes"], id="ws-json-invalid-json"),
    # what Python's json lets through, or fails on with a traceback (config_json)
    pytest.param(raw_config('"port": 0, "port": 5083', '"request_target": "/echo", "instances": '
                            '2, "instances": 3'), None, ("echo",),
                 [f"{E}: /server/port: key given more than once (one value per key)",
                  f"{E}: /services/echo/instances: key given more than once (one value per key)"],
                 id="duplicate-keys"),
    pytest.param(raw_config('"shutdown_timeout": Infinity, "limits": {"handshake_timeout": NaN}',
                            '"request_target": "/echo", "ping_interval": -Infinity, '
                            '"handler_timeout": 1e999'), None, ("echo",),
                 [f"{E}: /server/shutdown_timeout: Infinity is not a JSON number",
                  f"{E}: /server/limits/handshake_timeout: NaN is not a JSON number",
                  f"{E}: /services/echo/ping_interval: -Infinity is not a JSON number",
                  f"{E}: /services/echo/handler_timeout: 1e999 is too big for a number"],
                 id="nan-infinity-and-overflow"),
    pytest.param(raw_config('"port": ' + "9" * 5000, '"request_target": "/echo"'), None, ("echo",),
                 [f"{E}: /server/port: an integer of 5000 digits is not a usable number"],
                 id="integer-past-pythons-digit-limit"),
    pytest.param(raw_config('"port": 0', '"request_target": "/echo", "settings": {"deep": '
                            + "[" * 100_000 + "]" * 100_000 + "}"), None, ("echo",),
                 [f"{E}: /services/echo/settings/deep" + "/0" * 60
                  + ": nested more than 64 levels deep"], id="nested-100000-deep"),
    # hot deploy (lapps.deploy): its limits and keys, and the state file of the deploy folder
    pytest.param(one_file(server={"deploy": {"trusted_keys": ["c2hvcnQ="], "max_files": 0}}),
                 None, ("echo",),
                 [f"{E}: /server/deploy/max_files: expected integer >= 1, got 0",
                  f"{E}: /server/deploy/trusted_keys/0: expected an Ed25519 public key (base64 "
                  'of 32 bytes), got string "c2hvcnQ="'], id="deploy-keys"),
    pytest.param(one_file(), {"deploy/deployed.json": '{"services": []}'}, ("echo",),
                 ["{dir}/deploy/deployed.json: /: not a lapps deploy state file"],
                 id="deploy-state-unusable"),
    pytest.param(one_file(), {"deploy/deployed.json": '{"services": {"echo": {"descriptor": '
                              '{"name": "echo", "instances": -1}}}}'}, ("echo",),
                 ["{dir}/deploy/deployed.json: /services/echo/descriptor/instances: expected "
                  "integer >= 1, got -1"], id="deploy-state-merged-over-the-config"),
    # a service module that does not load: one line, luajit's file:line: message
    pytest.param(one_file({"echo": service("/echo")}),
                 {"apps/echo/echo.lua": "local echo = {}\nreturn echo,,\n"}, (),
                 [f"{E}: /services/echo: {{dir}}/apps/echo/echo.lua:2: unexpected symbol near ','"],
                 id="lua-syntax-error"),
    pytest.param(one_file({"echo": service("/echo")}),
                 {"apps/echo/echo.lua": "local n = nil\nreturn n.field\n"}, (),
                 [f"{E}: /services/echo: {{dir}}/apps/echo/echo.lua:2: attempt to index "
                  "local 'n' (a nil value)"], id="lua-error-at-load"),
]


@pytest.mark.parametrize("config, files, apps, expected", BAD)
def test_lapps_check_reports_every_problem(tmp_path, config, files, apps, expected):
    lay_out(tmp_path, config, files, apps)
    p = lapps_check(tmp_path)
    assert_no_traceback(p)
    assert p.stdout.splitlines() == expand(expected, tmp_path)
    assert p.returncode == 1


def _case(case_id):
    return next(p for p in BAD if p.id == case_id)


@pytest.mark.parametrize("config, files, apps, expected",
                         [_case(case) for case in (
                             "several-errors-all-reported", "ws-json-errors",
                             "tls-key-does-not-match-cert", "duplicate-keys",
                             "nan-infinity-and-overflow", "integer-past-pythons-digit-limit",
                             "nested-100000-deep", "lua-syntax-error")])
def test_twistd_refuses_a_bad_config_with_the_same_lines(tmp_path, config, files, apps,
                                                         expected):
    lay_out(tmp_path, config, files, apps)
    p = run([TWISTD, "-n", "--pidfile=", "lapps", "--config", "lapps.json"], tmp_path)
    assert_no_traceback(p)
    assert p.stderr.splitlines() == expand(expected, tmp_path)
    assert p.returncode == 1


def test_errors_name_the_files_as_given_on_the_command_line(tmp_path):
    lay_out(tmp_path, services_file({"echo": service("/echo", instances=0)}),
            {"conf/ws.json": {"port": 70000}}, config_name="conf/lapps.json")
    p = lapps_check(tmp_path, "conf/lapps.json")
    assert_no_traceback(p)
    assert p.stdout.splitlines() == [
        "conf/ws.json: /port: expected integer from 0 to 65535, got 70000",
        "conf/lapps.json: /services/echo/instances: expected integer >= 1, got 0",
    ]
    assert p.returncode == 1


# --- good configs -----------------------------------------------------------

def test_check_of_a_good_config_prints_one_ok_line(tmp_path):
    lay_out(tmp_path, one_file())
    p = lapps_check(tmp_path)
    assert (p.returncode, p.stdout, p.stderr) == (0, "lapps.json: ok\n", "")


def test_check_ok_line_names_the_path_as_given(tmp_path):
    lay_out(tmp_path, one_file(), config_name="etc/lapps.json")
    p = lapps_check(tmp_path, "etc/lapps.json")
    assert (p.returncode, p.stdout, p.stderr) == (0, "etc/lapps.json: ok\n", "")


def test_legacy_internal_false_and_matching_standalone_are_accepted(tmp_path):
    lay_out(tmp_path, one_file({"echo": service("/echo", internal=False)}))
    p = lapps_check(tmp_path)
    assert (p.returncode, p.stdout) == (0, "lapps.json: ok\n")
    cfg = configuration.load(str(tmp_path / "lapps.json"), environ={})
    assert cfg.services["echo"].standalone is False


def test_legacy_internal_true_means_standalone(tmp_path):
    """``internal: true`` is read as ``standalone: true`` (no request_target needed)."""
    lay_out(tmp_path, one_file({"echo": {"internal": True, "auto_start": True, "instances": 1}}))
    cfg = configuration.load(str(tmp_path / "lapps.json"), environ={})
    assert cfg.services["echo"].standalone is True


def test_network_acls_that_deny_are_accepted(tmp_path):
    """Enforced since the ``acl`` service: any well-formed ACL checks."""
    lay_out(tmp_path, one_file(
        {"echo": service("/echo", acl={"policy": "deny", "exclude": ["10.0.0.0", "::1"]})},
        server={"acl": {"policy": "allow", "exclude": ["192.168.1.7/24", "2001:db8::/32"]}}))
    p = lapps_check(tmp_path)
    assert (p.returncode, p.stdout, p.stderr) == (0, "lapps.json: ok\n", "")
    cfg = configuration.load(str(tmp_path / "lapps.json"), environ={})
    assert cfg.services["echo"].acl == {"policy": "deny", "exclude": ["10.0.0.0", "::1"]}
    assert cfg.server["acl"]["exclude"] == ["192.168.1.7/24", "2001:db8::/32"]


def test_self_dependency_is_skipped_not_a_cycle(tmp_path):
    """Spec §2.2 depends: self-references are skipped."""
    lay_out(tmp_path, one_file({"echo": service("/echo", depends=["echo"])}))
    p = lapps_check(tmp_path)
    assert (p.returncode, p.stdout) == (0, "lapps.json: ok\n")


# --- the LAppS two-file form, end to end -------------------------------------

LAPPS_SERVICES = {
    "directories": {"applications": "apps"},
    "services": {"echo": {"internal": False, "auto_start": True, "instances": 2,
                          "protocol": "raw", "request_target": "/echo",
                          "max_inbound_message_size": 16777216,
                          "acl": {"policy": "allow", "exclude": []}}},
}
LAPPS_WS = {
    "listeners": 3, "connection_weight": 1.0, "ip": "127.0.0.1", "port": 0,
    "lapps_config_auto_save": False,
    # (LAppS's examples say 3 IO threads; test_workers runs that shape in 3 processes)
    "workers": {"workers": 1, "max_connections": 10000, "auto_fragment": False,
                "max_poll_events": 256, "max_poll_wait_ms": 10, "max_inbounds_skip": 50,
                "input_buffer_size": 4096},
    "acl": {"policy": "allow", "exclude": []},
    "tls": False, "tls_server_version": 4, "tls_client_version": 4,
}


async def round_trip(url, message):
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(message)
        return await ws.recv()


def test_two_file_form_checks_and_serves(tmp_path):
    lay_out(tmp_path, LAPPS_SERVICES, {"ws.json": LAPPS_WS})
    p = lapps_check(tmp_path)
    assert (p.returncode, p.stdout, p.stderr) == (0, "lapps.json: ok\n", "")

    server = Server(tmp_path / "lapps.json")
    try:
        # ws.json was read: the defaults would be 0.0.0.0:5083
        assert server.host == "127.0.0.1" and server.port not in (0, 5083)
        assert asyncio.run(round_trip(server.url("/echo"), b"\x00two files\xff")) == \
            b"\x00two files\xff"
        assert asyncio.run(round_trip(server.url("/echo"), "légacy")) == "légacy"
    finally:
        server.stop()
    assert not any("Traceback" in line for line in server.lines), "\n".join(server.lines)


def test_ws_config_names_the_server_file(tmp_path):
    """Spec §0.3: WS_CONFIG (default ws.json) names the server config file."""
    lay_out(tmp_path, services_file(), {"ws.json": {"port": 1111},
                                        "other-ws.json": {"port": 2222}})
    path = str(tmp_path / "lapps.json")
    assert configuration.load(path, environ={}).server["port"] == 1111
    assert configuration.load(path, environ={"WS_CONFIG": "other-ws.json"}).server["port"] == 2222


def test_server_key_in_services_file_wins_over_ws_json(tmp_path):
    lay_out(tmp_path, one_file(server={"port": 3333}), {"ws.json": {"port": 70000}})
    assert configuration.load(str(tmp_path / "lapps.json"), environ={}).server["port"] == 3333


# --- defaults ------------------------------------------------------------------

WORKER_DEFAULTS = {"max_connections": 10000, "auto_fragment": False, "max_poll_events": 300,
                   "max_poll_wait_ms": 10, "max_inbounds_skip": 50, "input_buffer_size": 2048}


def test_defaults_are_deep_merged(tmp_path):
    defaults = configuration.from_dict({}, str(tmp_path), environ={}).server
    assert {k: defaults["workers"][k] for k in WORKER_DEFAULTS} == WORKER_DEFAULTS

    cfg = configuration.from_dict({"server": {"workers": {"auto_fragment": True}}},
                                  str(tmp_path), environ={})
    assert cfg.server["workers"] == dict(defaults["workers"], auto_fragment=True)
    assert {k: v for k, v in cfg.server.items() if k != "workers"} == \
        {k: v for k, v in defaults.items() if k != "workers"}
    assert (cfg.server["ip"], cfg.server["port"], cfg.server["tls"]) == ("0.0.0.0", 5083, False)


def test_defaults_are_deep_merged_in_tls_certificates(tmp_path):
    defaults = configuration.from_dict({}, str(tmp_path), environ={}).server
    cfg = configuration.from_dict({"server": {"tls_certificates": {"cert": "mine.crt"}}},
                                  str(tmp_path), environ={})
    assert cfg.server["tls_certificates"] == dict(defaults["tls_certificates"], cert="mine.crt")
    assert cfg.cert_file == os.path.join(str(tmp_path), "mine.crt")
    assert cfg.key_file == os.path.join(str(tmp_path), defaults["tls_certificates"]["key"])


# --- directories.applications ------------------------------------------------

def _services_in(conf_dir):
    """A config in ``conf_dir`` naming one service, ``relprobe``, under ``apps``."""
    return write(conf_dir, "lapps.json", services_file({"relprobe": service("/p")}))


def _module_at(apps_dir):
    target = Path(apps_dir) / "relprobe"
    target.mkdir(parents=True)
    shutil.copy(ECHO_LUA, target / "relprobe.lua")


def test_applications_is_relative_to_the_config_folder(tmp_path):
    conf = tmp_path / "conf"
    path = _services_in(conf)
    _module_at(conf / "apps")
    cfg = configuration.load(str(path), environ={})
    assert Path(cfg.apps_dir) == conf / "apps"
    assert Path(cfg.services["relprobe"].directory) == conf / "apps" / "relprobe"


def test_applications_is_relative_to_lapps_home_when_set(tmp_path):
    conf, home = tmp_path / "conf", tmp_path / "home"
    path = _services_in(conf)
    _module_at(home / "apps")
    cfg = configuration.load(str(path), environ={"LAPPS_HOME": str(home)})
    assert Path(cfg.apps_dir) == home / "apps"
    assert Path(cfg.services["relprobe"].directory) == home / "apps" / "relprobe"


def test_lapps_home_is_where_modules_are_looked_for(tmp_path):
    conf, home = tmp_path / "conf", tmp_path / "home"
    path = _services_in(conf)
    _module_at(conf / "apps")  # beside the config, but LAPPS_HOME points elsewhere
    with pytest.raises(configuration.ConfigError) as e:
        configuration.load(str(path), environ={"LAPPS_HOME": str(home)})
    assert e.value.lines == [f"{path}: /services/relprobe: no service module at "
                             f"{home}/apps/relprobe/relprobe.lua"]


@pytest.mark.parametrize("services, line", [
    ({"my.svc": {"request_target": "/x"}},
     '/services/my.svc: a service name must be a Lua identifier (it names the module, its folder and a global)'),
    ({"echo": {"request_target": "/echo?x=1"}},
     "/services/echo/request_target: the query string is not part of the match; give the path only"),
    ({"echo": {"request_target": "/echo", "extra_headers": {"X-A": "1\r\nSet-Cookie: x"}}},
     "/services/echo/extra_headers/X-A: a header value cannot hold CR, LF or NUL"),
    ({"echo": {"request_target": "/echo", "extra_headers": {"Bad Name": "1"}}},
     "/services/echo/extra_headers/Bad Name: not a valid HTTP header name"),
    ({"echo": {"request_target": "/echo", "extra_headers": {"Sec-WebSocket-Accept": "x"}}},
     "/services/echo/extra_headers/Sec-WebSocket-Accept: is set by the WebSocket handshake itself"),
])
def test_names_targets_and_headers_are_checked(tmp_path, services, line):
    with pytest.raises(configuration.ConfigError) as e:
        configuration.from_dict({"directories": {"applications": str(REPO / "apps")},
                                 "services": services}, str(tmp_path), source="c.json")
    assert f"c.json: {line}" in e.value.lines
