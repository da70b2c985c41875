"""Reload: SIGHUP under ``twistd -n lapps``, and ``LAppSService.reload()``
called by a program that embeds lapps. Unchanged services keep their
connections; changed ones restart (their clients get 1012) and new
connections reach the new version; added ones answer, removed ones are 404
(their clients got 1001); a broken config changes nothing and each of its
error lines is logged; ACLs, the connection limit and the TLS certificate
apply to new connections."""

import asyncio
import json
import re
import signal
import socket
import ssl
import sys
import textwrap

import pytest
import websockets
from cryptography import x509

from conftest import TEST_APPS, Server, reactive, write_config
from lapps import config as configuration, devcert
from support.admin import admin_port, admin_settings, poll_metrics
from support.pki import PKI, trusting, write_pem


def recorder(target, version, label="recorder", **extra):
    return reactive(target, settings={"label": label, "version": version}, **extra)


def ticker(instances):
    return {"standalone": True, "instances": instances, "preload": ["nap"]}


async def says(ws, message, reply=None):
    """Send ``message`` and check the reply (the message itself by default)."""
    await ws.send(message)
    assert await asyncio.wait_for(ws.recv(), 10) == (message if reply is None else reply)


async def closed_with(ws):
    await asyncio.wait_for(ws.wait_closed(), 10)
    return ws.close_code, ws.close_reason


async def refused_with(url, **options):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, **options)
    return refused.value.response.status_code


async def in_thread(call, *args, **kwargs):
    return await asyncio.to_thread(call, *args, **kwargs)


# --- SIGHUP under twistd ---------------------------------------------------------

def test_sighup_restarts_changed_services_and_leaves_the_others_alone(start_server, tmp_path):
    server = start_server({"echo": reactive("/echo"), "recorder": recorder("/rec", "v1"),
                           "probe": reactive("/probe"), "ticker": ticker(1)},
                          applications=TEST_APPS)
    server.wait_for("ticker init")

    async def scenario():
        kept = await websockets.connect(server.url("/echo"))
        changed = await websockets.connect(server.url("/rec"))
        removed = await websockets.connect(server.url("/probe"))
        await says(kept, "before")
        await says(changed, "version", "v1")
        await says(removed, "still here")

        write_config(tmp_path, {"echo": reactive("/echo"), "recorder": recorder("/rec", "v2"),
                                "newcomer": recorder("/new", "n1", label="newcomer"),
                                "ticker": ticker(2)}, applications=TEST_APPS)
        server.process.send_signal(signal.SIGHUP)
        assert await closed_with(changed) == (1012, "service restart")
        assert await closed_with(removed) == (1001, "service removed")
        await in_thread(server.wait_for, r"configuration reloaded from \S+: added newcomer; "
                        r"removed probe; restarted recorder, ticker$")

        await says(kept, "after")  # the same connection, on the same instance
        async with websockets.connect(server.url("/rec")) as again:
            await says(again, "version", "v2")
        async with websockets.connect(server.url("/new")) as added:
            await says(added, "version", "n1")
        assert await refused_with(server.url("/probe")) == 404
        await says(kept, "still after")
        await kept.close()

    asyncio.run(scenario())
    server.wait_for(r"ticker stopped \d+ after 1 nap")  # the old instance
    assert server.stop() == -signal.SIGTERM  # (all output read from here on)
    assert server.count(r"ticker init") == 3  # the old instance, then the two new ones
    assert server.count(r"ticker stopped \d+ after 1 nap") == 3
    assert [server.count(r"echo::onStart"), server.count(r"echo::onShutdown")] == [1, 1]
    recorded = [line for line in server.lines if re.match(r"(recorder|newcomer)::", line)]
    assert recorded.index("recorder::onStart v2") < recorded.index("recorder::onShutdown v1")
    for label, version in [("recorder", "v1"), ("recorder", "v2"), ("newcomer", "n1")]:
        assert [re.sub(r" \d+$", " H", line) for line in recorded
                if line.startswith(label) and line.split()[1] == version] == [
            f"{label}::onStart {version}", f"{label}::onDisconnect {version} H",
            f"{label}::onShutdown {version}"]
    assert server.count(r"probe::onDisconnect \d+ ") == server.count(r"probe::onShutdown") == 1
    assert server.count("reload failed|restart: |Traceback|Unhandled") == 0


def test_sighup_with_a_broken_config_keeps_the_running_one(start_server, tmp_path):
    """Each error line is logged, as ``lapps check`` prints it; then a
    service whose module does not load is refused the same way."""
    server = start_server({"echo": reactive("/echo")}, applications=TEST_APPS)

    def reload_expecting(services, server_keys=None):
        path = write_config(tmp_path, services, server_keys, applications=TEST_APPS)
        server.process.send_signal(signal.SIGHUP)
        return path

    async def scenario():
        async with websockets.connect(server.url("/echo")) as ws:
            await says(ws, "before")
            path = reload_expecting({"echo": reactive("/echo", instances=0),
                                     "bogus": {"request_target": "/echo"}}, {"port": -1})
            with pytest.raises(configuration.ConfigError) as invalid:
                configuration.load(str(path))
            lines = invalid.value.lines
            assert len(lines) == 4  # port, instances, no module, target taken
            for line in lines:
                await in_thread(server.wait_for, r"\[lapps#error\] reload failed, the running "
                                r"configuration stays: " + re.escape(line) + "$")
            await says(ws, "between")

            reload_expecting({"echo": reactive("/echo"), "broken": reactive("/broken")})
            await in_thread(server.wait_for, r"reload failed, the running configuration stays: "
                            + re.escape(f"{path}: /services/broken: module broken has no "
                                        "function onDisconnect") + "$")
            await says(ws, "after")
            async with websockets.connect(server.url("/echo")) as other:
                await says(other, "new connection")
            assert await refused_with(server.url("/broken")) == 404

    asyncio.run(scenario())
    assert server.stop() == -signal.SIGTERM
    assert server.count("reload failed") == 4 + 1
    assert server.count(r"config\.reload_failed|lapps#error") == 4 + 1  # nothing else went wrong
    assert [server.count("echo::onStart"), server.count("echo::onShutdown")] == [1, 1]
    assert server.count("configuration reloaded|Traceback|Unhandled") == 0


# --- reload() in an embedding program ------------------------------------------------

HOST = """
    import dataclasses, json, signal, sys
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from lapps.app import LAppSService
    from lapps.config import ConfigError

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    lapps = LAppSService(sys.argv[1])

    def reload():
        done = lapps.reload()
        done.addCallback(lambda result: print("RELOADED", json.dumps(dataclasses.asdict(result)),
                                              flush=True))
        done.addErrback(lambda failure: failure.trap(ConfigError) and print("FAILED", flush=True))

    # this host's own choice: SIGUSR1 reloads
    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(reload))
    lapps.startService()
    reactor.addSystemEventTrigger("before", "shutdown", lapps.stopService)
    reactor.run()
"""


class Host:
    """A program embedding LAppSService, reloading it on SIGUSR1."""

    def __init__(self, tmp_path, services, server_keys):
        self.tmp_path, self.services, self.server_keys = tmp_path, services, server_keys
        script = tmp_path / "host.py"
        script.write_text(textwrap.dedent(HOST))
        config = write_config(tmp_path, services, server_keys, applications=TEST_APPS)
        self.server = Server(config, argv=[sys.executable, str(script), str(config)])
        self.reloads = 0

    def reload(self, services=None, **server_keys):
        """Rewrite the config with these changes, reload, return the result."""
        self.services = services or self.services
        self.server_keys = dict(self.server_keys, **server_keys)
        write_config(self.tmp_path, self.services, self.server_keys, applications=TEST_APPS)
        self.reloads += 1
        self.server.process.send_signal(signal.SIGUSR1)
        return json.loads(self.server.wait_for(r"RELOADED (\{.*\})$", count=self.reloads).group(1))


def peer_serial(port, ca):
    """The serial number of the certificate a new TLS client is shown."""
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            trusting(ca).wrap_socket(raw, server_hostname="localhost") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_reload_swaps_certificate_acls_and_limits_for_new_connections_only(tmp_path):
    pki = PKI(tmp_path)
    guarded = recorder("/guarded", "g1")
    host = Host(tmp_path, {"echo": reactive("/echo"), "recorder": guarded}, pki.server())
    context = trusting(pki.ca)
    port = host.server.port

    def wss(path):
        return f"wss://localhost:{port}{path}"

    async def scenario():
        first = await websockets.connect(wss("/echo"), ssl=context)
        kept = await websockets.connect(wss("/guarded"), ssl=context)
        await says(first, "before")
        before = await in_thread(peer_serial, port, pki.ca)
        assert before == pki.cert.serial_number

        # 1. a new certificate at the same paths; the recorder's ACL now
        #    refuses this address; and a port change, which needs a restart
        cert, key = devcert.make_server_cert(pki.ca_cert, pki.ca_key)
        write_pem(pki.cert_file, devcert.pem_cert(cert))
        write_pem(pki.key_file, devcert.pem_key(key))
        refusing = {"policy": "allow", "exclude": ["127.0.0.0/8"]}
        result = await in_thread(host.reload, {"echo": reactive("/echo"),
                                               "recorder": dict(guarded, acl=refusing)}, port=1)
        assert result == {"added": [], "removed": [], "restarted": [], "applied": [],
                          "needs_restart": ["/port"], "acl": True, "certificate": True}
        await in_thread(host.server.wait_for, r"these changes apply only after a restart: /port$")
        assert await in_thread(peer_serial, port, pki.ca) == cert.serial_number != before
        await says(first, "after the swap")     # its TLS session goes on as it was
        await says(kept, "version", "g1")       # admitted before: kept, not restarted
        assert await refused_with(wss("/guarded"), ssl=context) == 403
        async with websockets.connect(wss("/echo"), ssl=context) as other:
            await says(other, "new connection")

        # 2. the connection limit, for new connections: two are open
        result = await in_thread(host.reload, workers={"max_connections": 1})
        assert (result["applied"], result["needs_restart"]) == (["/workers/max_connections"],
                                                                ["/port"])
        assert await refused_with(wss("/echo"), ssl=context) == 403
        await says(first, "over the limit but open before")

        # 3. the global ACL: a new connection is closed at once, before TLS
        result = await in_thread(host.reload, workers={"max_connections": 10000},
                                 acl={"policy": "allow", "exclude": ["127.0.0.1"]})
        assert (result["applied"], result["acl"]) == (
            ["/acl/exclude", "/workers/max_connections"], True)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await in_thread(peer_serial, port, pki.ca)
        await says(first, "still open")
        await says(kept, "still kept")
        await first.close()
        await kept.close()

    server = host.server
    try:
        asyncio.run(scenario())
        server.wait_for(r"tcp4:127\.0\.0\.1:\d+ denied by the global ACL")
    finally:
        server.stop()
    assert server.count(r"recorder::onStart") == 1  # kept through the ACL change
    assert server.count("reload failed|FAILED|Traceback|Unhandled") == 0


def test_sighup_with_a_file_json_lets_through_is_refused_line_by_line_and_counted(
        start_server, tmp_path):
    """Duplicate keys, Infinity, a 5000-digit integer and 10^5-deep nesting:
    the lines ``lapps check`` prints, each logged once, and
    ``lapps_config_reloads_total{result="failed"}``; a good file then counts ok."""
    server = start_server({"echo": reactive("/echo")}, admin_settings(), TEST_APPS)
    port = admin_port(server)
    path = tmp_path / "lapps.json"
    good = path.read_text()
    config = json.loads(good)
    config["server"]["shutdown_timeout"] = "INFINITY"
    config["server"]["acl"] = {"policy": "allow", "exclude": []}
    config["services"]["echo"]["settings"] = {"deep": "DEEP", "big": "BIG"}
    text = json.dumps(config).replace('"INFINITY"', "Infinity").replace(
        '"exclude": []', '"exclude": [], "policy": "deny"').replace(
        '"DEEP"', "[" * 100_000 + "]" * 100_000).replace('"BIG"', "1" * 5000)
    path.write_text(text)
    with pytest.raises(configuration.ConfigError) as refused:
        configuration.load(str(path))
    assert len(refused.value.lines) == 1  # nesting is found before json parses anything
    server.process.send_signal(signal.SIGHUP)
    server.wait_for(re.escape(f"{path}: /services/echo/settings/deep" + "/0" * 60
                              + ": nested more than 64 levels deep") + "$")
    assert poll_metrics(port, lambda sample: sample("lapps_config_reloads_total",
                                                    result="failed") == 1)

    path.write_text(text.replace("[" * 100_000 + "]" * 100_000, "[]"))
    with pytest.raises(configuration.ConfigError) as refused:
        configuration.load(str(path))
    assert refused.value.lines == [
        f"{path}: /server/shutdown_timeout: Infinity is not a JSON number",
        f"{path}: /server/acl/policy: key given more than once (one value per key)",
        f"{path}: /services/echo/settings/big: an integer of 5000 digits is not a usable number"]
    server.process.send_signal(signal.SIGHUP)
    for line in refused.value.lines:
        server.wait_for(r"reload failed, the running configuration stays: " + re.escape(line)
                        + "$")
    assert poll_metrics(port, lambda sample: sample("lapps_config_reloads_total",
                                                    result="failed") == 2)

    path.write_text(good)
    server.process.send_signal(signal.SIGHUP)
    server.wait_for("configuration reloaded")
    assert poll_metrics(port, lambda sample: sample("lapps_config_reloads_total",
                                                    result="ok") == 1)

    async def still_serving():
        async with websockets.connect(server.url("/echo")) as ws:
            await says(ws, "after three reloads")

    asyncio.run(still_serving())
    assert server.stop() == -signal.SIGTERM
    assert server.count("Traceback|Unhandled") == 0
    assert server.count("reload failed") == 1 + 3
