"""Network ACLs (spec §6.4, §11 item 5): the matching in ``lapps.acl``, then
real servers and real sockets from 127.0.0.1, 127.0.0.2 (any 127/8 address
is the loopback on Linux; the client binds its source address) and ::1.

The global ACL closes a denied TCP connection at accept, before a byte is
read (no HTTP answer, no TLS ServerHello); a service's ACL answers 403
before the upgrade. Each denial is logged as ``acl.denied``."""

import ipaddress
import json
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from conftest import TWISTD, Server, reactive, run_twistd, write_config
from lapps.acl import Acl, parse_entry, peer_address
from support.apps import echo_apps
from support.peers import acl, assert_echoes_from, echo_from, has_ipv6_loopback, url
from support.pki import PKI, trusting
from support.raw import client_hello, raw_exchange, upgrade_request

LAPPS = Path(sys.executable).parent / "lapps"

needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")


# --- lapps.acl: entries -------------------------------------------------------

@pytest.mark.parametrize("entry, network", [
    # single hosts
    ("127.0.0.1", "127.0.0.1/32"),
    ("10.1.2.3", "10.1.2.3/32"),
    ("172.16.5.1", "172.16.5.1/32"),
    ("192.168.1.5", "192.168.1.5/32"),
    # classful networks: the host part under the class's default mask is zero
    ("10.0.0.0", "10.0.0.0/8"),           # class A
    ("127.0.0.0", "127.0.0.0/8"),
    ("0.0.0.0", "0.0.0.0/8"),
    ("172.16.0.0", "172.16.0.0/16"),      # class B
    ("191.255.0.0", "191.255.0.0/16"),
    ("192.168.1.0", "192.168.1.0/24"),    # class C
    ("223.1.2.0", "223.1.2.0/24"),
    # ... or the last octet is 0: the classful network of the address
    ("10.1.2.0", "10.0.0.0/8"),
    ("172.16.5.0", "172.16.0.0/16"),
    # class D and E have no classful mask: always a host
    ("224.0.0.0", "224.0.0.0/32"),
    ("240.0.0.0", "240.0.0.0/32"),
    # CIDR: as written, host bits masked off
    ("10.1.0.0/16", "10.1.0.0/16"),
    ("192.168.1.7/24", "192.168.1.0/24"),
    ("10.1.2.0/24", "10.1.2.0/24"),
    ("127.0.0.1/32", "127.0.0.1/32"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    # IPv6
    ("::1", "::1/128"),
    ("2001:db8::", "2001:db8::/128"),     # no classful rule for IPv6
    ("2001:db8::/32", "2001:db8::/32"),
    ("fe80::1/10", "fe80::/10"),
    ("::/0", "::/0"),
    # IPv4-mapped IPv6 entries are their IPv4 counterparts
    ("::ffff:10.0.0.1", "10.0.0.1/32"),
    ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
])
def test_entries(entry, network):
    assert parse_entry(entry) == ipaddress.ip_network(network)


@pytest.mark.parametrize("entry", ["10.0.0.300", "10.0.0.0/33", "10.0.0", "localhost", "",
                                   " 10.0.0.1", "10.0.0.1 ", "010.0.0.1", "10.0.0.0/8/8",
                                   "::1/129", "fe80::1%eth0", "10.0.0.0/-1", "1.2.3.4/255.0.0.0x"])
def test_malformed_entries(entry):
    with pytest.raises(ValueError):
        parse_entry(entry)


def test_peer_addresses():
    assert peer_address("::ffff:127.0.0.2") == ipaddress.ip_address("127.0.0.2")
    assert peer_address("fe80::1%lo") == ipaddress.ip_address("fe80::1")
    assert peer_address("::1") == ipaddress.ip_address("::1")
    assert peer_address("not an address") is None


# --- lapps.acl: decisions ------------------------------------------------------

def test_policy_allow_denies_only_what_matches():
    acl = Acl("allow", ["127.0.0.2", "10.0.0.0/8", "2001:db8::/32"])
    assert acl.allows("127.0.0.1") and acl.allows("11.0.0.1") and acl.allows("::1")
    assert not acl.allows("127.0.0.2")
    assert not acl.allows("10.255.255.255") and not acl.allows("10.0.0.0")
    assert not acl.allows("2001:db8:ffff::1") and acl.allows("2001:db9::1")


def test_policy_deny_allows_only_what_matches():
    acl = Acl("deny", ["127.0.0.2", "192.168.0.0/16", "::1"])
    assert acl.allows("127.0.0.2") and acl.allows("192.168.200.3") and acl.allows("::1")
    assert not acl.allows("127.0.0.1") and not acl.allows("192.169.0.1")
    assert not acl.allows("::2")


def test_containment_is_checked_against_every_network():
    """LAppS looked up the peer with lower_bound in an ordered set and checked
    that one candidate: 10.9.0.1 sorts after 10.5.0.0/16, which does not hold
    it, and the /8 that does was never tried."""
    acl = Acl("deny", ["10.0.0.0/8", "10.5.0.0/16", "10.8.0.0/24", "10.9.1.0/24"])
    for peer in ("10.9.0.1", "10.5.255.255", "10.255.0.1", "10.0.0.0", "10.9.1.200"):
        assert acl.allows(peer), peer
    assert not acl.allows("11.0.0.0") and not acl.allows("9.255.255.255")
    nested = Acl("allow", ["192.168.1.128/25", "192.168.0.0/23", "192.168.1.200"])
    assert not nested.allows("192.168.0.77") and not nested.allows("192.168.1.3")
    assert nested.allows("192.168.2.1")


def test_classful_entries_decide_as_networks():
    acl = Acl("deny", ["127.0.0.0", "172.16.0.0", "192.168.7.0"])
    for peer in ("127.0.0.1", "127.200.3.4", "172.16.99.1", "192.168.7.254"):
        assert acl.allows(peer), peer
    for peer in ("128.0.0.1", "172.17.0.1", "192.168.8.1"):
        assert not acl.allows(peer), peer


def test_ipv4_mapped_peers_match_as_ipv4():
    acl = Acl("deny", ["127.0.0.1", "10.0.0.0/8"])
    assert acl.allows("::ffff:127.0.0.1") and acl.allows("::ffff:10.1.2.3")
    assert not acl.allows("::ffff:127.0.0.2")
    mapped_entry = Acl("allow", ["::ffff:127.0.0.2"])
    assert not mapped_entry.allows("127.0.0.2") and not mapped_entry.allows("::ffff:127.0.0.2")
    assert mapped_entry.allows("127.0.0.1")


def test_versions_do_not_mix():
    everything_v4 = Acl("allow", ["0.0.0.0/0"])
    assert not everything_v4.allows("203.0.113.9") and everything_v4.allows("::1")
    everything_v6 = Acl("allow", ["::/0"])
    assert everything_v6.allows("203.0.113.9") and not everything_v6.allows("2001:db8::1")
    # the IPv6 address whose bits equal 10.0.0.1's is not 10.0.0.1
    assert Acl("deny", ["10.0.0.1"]).allows("::a00:1") is False


def test_a_peer_that_is_not_an_ip_address_gets_the_policy():
    assert Acl("allow", ["10.0.0.0/8"]).allows("unix-socket") is True
    assert Acl("deny", ["10.0.0.0/8"]).allows("unix-socket") is False


def test_default_acl_allows_everyone():
    acl = Acl()
    assert acl.allows_everyone and acl.allows("127.0.0.1") and acl.allows("::1")
    assert not Acl("deny").allows_everyone and not Acl("deny").allows("127.0.0.1")
    assert not Acl("allow", ["10.0.0.1"]).allows_everyone
    with pytest.raises(ValueError):
        Acl("maybe")


# --- real clients from chosen source addresses ------------------------------------

ECHO = {"echo": reactive("/echo")}


def status_from(source, target):
    """The HTTP status a handshake from ``source`` is refused with."""
    with pytest.raises(websockets.InvalidStatus) as refusal:
        echo_from(source, target)
    return refusal.value.response.status_code, refusal.value.response.body.decode()


def assert_closed_at_accept(server, source, host="127.0.0.1", path="/echo"):
    """A WebSocket upgrade from ``source`` gets not one byte back."""
    assert raw_exchange(source, server.port, upgrade_request(path), host) == b""


def denials(server, scope="global", count=1):
    """Wait for the ``count``-th denial in ``scope``; return the matches."""
    where = "the global ACL" if scope == "global" else f"the ACL of service {scope}"
    pattern = rf"\[lapps\.acl#info\] (\S+) denied by {where} \((\d+) denied so far\)"
    server.wait_for(pattern, count=count)
    return [m for m in map(re.compile(pattern).search, server.lines) if m]


# --- the global ACL ------------------------------------------------------------------

def test_global_deny_policy_admits_only_the_excluded_host(start_server):
    server = start_server(ECHO, acl("deny", "127.0.0.1"))
    assert_echoes_from("127.0.0.1", url(server))
    assert_closed_at_accept(server, "127.0.0.2")
    with pytest.raises((websockets.InvalidHandshake, OSError, EOFError)):
        echo_from("127.0.0.2", url(server))
    found = denials(server, count=2)
    assert [m.group(2) for m in found] == ["1", "2"]  # counted
    assert all(m.group(1).startswith("tcp4:127.0.0.2:") for m in found)
    assert_echoes_from("127.0.0.1", url(server))  # still serving
    server.stop()
    # the denied connections never reached the WebSocket layer
    assert server.count("handshake from") == 0 and server.count("connected to /echo") == 2


def test_global_allow_policy_denies_a_cidr_network(start_server):
    server = start_server(ECHO, acl("allow", "127.0.0.2/31"))  # .2 and .3
    for source in ("127.0.0.1", "127.0.0.4"):
        assert_echoes_from(source, url(server))
    for source in ("127.0.0.2", "127.0.0.3"):
        assert_closed_at_accept(server, source)
    found = denials(server, count=2)
    assert sorted(m.group(1).split(":")[1] for m in found) == ["127.0.0.2", "127.0.0.3"]
    server.stop()
    assert server.count(r"connections denied: 2 by the global ACL$") == 1
    # the acl service starts before the Lua services and stops after them
    order = [i for pattern in (r"the global ACL: allow all except 127\.0\.0\.2/31$",
                               r"service echo instance 0 started",
                               r"service echo instance 0 stopped",
                               r"connections denied: 2 by the global ACL$")
             for i, line in enumerate(server.lines) if re.search(pattern, line)]
    assert len(order) == 4 and order == sorted(order)


@pytest.mark.parametrize("policy, entry, admitted, denied", [
    # a classful network entry: 127.0.0.0 is 127.0.0.0/8
    ("deny", "127.0.0.0", ["127.0.0.1", "127.0.0.2", "127.31.4.5"], []),
    ("allow", "127.0.0.0", [], ["127.0.0.1", "127.0.0.2", "127.31.4.5"]),
    # a single host
    ("deny", "127.0.0.2", ["127.0.0.2"], ["127.0.0.1", "127.0.0.3"]),
    ("allow", "127.0.0.2", ["127.0.0.1", "127.0.0.3"], ["127.0.0.2"]),
    # a CIDR network written with its host bits (127.0.0.0/30: .0 to .3)
    ("deny", "127.0.0.2/30", ["127.0.0.1", "127.0.0.3"], ["127.0.0.4", "127.1.0.1"]),
])
def test_global_entries(start_server, policy, entry, admitted, denied):
    server = start_server(ECHO, acl(policy, entry))
    for source in admitted:
        assert_echoes_from(source, url(server))
    for source in denied:
        assert_closed_at_accept(server, source)
    if denied:
        denials(server, count=len(denied))


def test_globally_denied_tls_client_gets_no_server_hello(start_server, tmp_path):
    pki = PKI(tmp_path)
    services = {"echo": reactive("/echo"),
                "secret": reactive("/secret", **acl("allow", "127.0.0.1"))}
    server = start_server(services, {**pki.server(), **acl("deny", "127.0.0.1")},
                          applications=echo_apps(tmp_path, services))
    hello = client_hello()
    # the probe works: from an admitted address the ClientHello is answered
    # with a handshake record (the ServerHello)
    answer = raw_exchange("127.0.0.1", server.port, hello, enough=5)
    assert answer[:1] == b"\x16" and answer[1:3] in (b"\x03\x01", b"\x03\x03")
    # from a denied one, nothing at all: not a ServerHello, not an alert
    assert raw_exchange("127.0.0.2", server.port, hello) == b""
    found = denials(server)
    assert found[0].group(1).startswith("tcp4:127.0.0.2:")
    # a real TLS client from the denied address fails in the handshake
    with pytest.raises((ssl.SSLError, OSError, EOFError)):
        echo_from("127.0.0.2", url(server, host="localhost", scheme="wss"), trusting(pki.ca))
    assert_echoes_from("127.0.0.1", url(server, host="localhost", scheme="wss"),
                       trusting(pki.ca))
    # a service's ACL answers inside TLS, with the same 403
    with pytest.raises(websockets.InvalidStatus) as refusal:
        echo_from("127.0.0.1", url(server, "/secret", host="localhost", scheme="wss"),
                  trusting(pki.ca))
    assert refusal.value.response.status_code == 403
    denials(server, "secret")


# --- per-service ACLs -------------------------------------------------------------------

def test_service_acl_answers_403_before_the_upgrade(start_server, tmp_path):
    services = {"echo": reactive("/echo"),
                "secret": reactive("/secret", **acl("deny", "127.0.0.2")),
                "open": reactive("/open", **acl("allow", "127.0.0.2/32", "10.0.0.0/8"))}
    # all three run the shipped echo module
    server = start_server(services, applications=echo_apps(tmp_path, services))
    assert_echoes_from("127.0.0.2", url(server, "/secret"))
    status, body = status_from("127.0.0.1", url(server, "/secret"))
    assert status == 403 and "network ACL of service secret" in body
    status, _ = status_from("127.0.0.2", url(server, "/open"))
    assert status == 403
    for source in ("127.0.0.1", "127.0.0.2"):
        assert_echoes_from(source, url(server, "/echo"))  # no ACL of its own
    assert_echoes_from("127.0.0.1", url(server, "/open"))

    found = denials(server, "secret")
    assert found[0].group(1).startswith("tcp4:127.0.0.1:") and found[0].group(2) == "1"
    denials(server, "open")
    server.stop()  # every line is in
    assert server.count(r"handshake from \S+ refused with 403") == 2
    # the 403 came before any upgrade: only the admitted connections opened
    assert server.count(r"connected to /secret") == 1 and server.count(r"connected to /open") == 1


def test_global_and_service_acls_together(start_server, tmp_path):
    services = {"echo": reactive("/echo"),
                "secret": reactive("/secret", **acl("deny", "127.0.0.2"))}
    server = start_server(services, {**acl("deny", "127.0.0.0/30")},  # .0 to .3
                          applications=echo_apps(tmp_path, services))
    assert_echoes_from("127.0.0.2", url(server, "/secret"))
    assert status_from("127.0.0.1", url(server, "/secret"))[0] == 403
    assert_echoes_from("127.0.0.1", url(server, "/echo"))
    assert_closed_at_accept(server, "127.0.0.4", path="/secret")  # the global ACL first
    denials(server, "global")
    denials(server, "secret")


# --- IPv6 and IPv4-mapped peers ---------------------------------------------------------

@needs_ipv6
def test_ipv6_peers(start_server):
    server = start_server(ECHO, {"ip": "::1", **acl("deny", "::1")})
    assert_echoes_from("::1", url(server, host="::1"))
    other = start_server(ECHO, {"ip": "::1", **acl("allow", "::/64")})
    assert_closed_at_accept(other, "::1", host="::1")
    assert denials(other)[0].group(1).startswith("tcp6:::1:")


@needs_ipv6
def test_ipv4_mapped_peers_on_a_dual_stack_listener(start_server, tmp_path):
    """On ``"ip": "::"`` IPv4 clients arrive as ::ffff:a.b.c.d and are
    matched as their IPv4 address; IPv6 peers are subject to the policy too."""
    services = {"echo": reactive("/echo"),
                "secret": reactive("/secret", **acl("deny", "127.0.0.1", "::1"))}
    server = start_server(services, {"ip": "::", **acl("deny", "127.0.0.0/30")},
                          applications=echo_apps(tmp_path, services))
    assert server.host == "::"
    assert_echoes_from("127.0.0.1", url(server))
    assert_echoes_from("127.0.0.2", url(server))
    assert_closed_at_accept(server, "127.0.0.4")
    assert_closed_at_accept(server, "::1", host="::1")  # not in the IPv4-only exclude
    found = denials(server, count=2)
    assert sorted(m.group(1).rsplit(":", 1)[0] for m in found) == \
        ["tcp6:::1", "tcp6:::ffff:127.0.0.4"]

    assert_echoes_from("127.0.0.1", url(server, "/secret"))
    assert status_from("127.0.0.2", url(server, "/secret"))[0] == 403
    assert denials(server, "secret")[0].group(1).startswith("tcp6:::ffff:127.0.0.2:")


# --- structured events -------------------------------------------------------------------

def test_denials_are_structured_events(tmp_path):
    services = {"echo": reactive("/echo", **acl("deny", "127.0.0.2"))}
    config = write_config(tmp_path, services, acl("deny", "127.0.0.1", "127.0.0.2"))
    server = Server(config, argv=TWISTD + ["-n", "--pidfile=", "--logger",
                                           "lapps.logs.json_lines", "lapps", "--config",
                                           str(config)],
                    listening=re.compile(r'"lapps_event": "listener\.up".*"host": "([^"]+)", '
                                         r'"port": (\d+)'),
                    ready=re.compile(r'"lapps_event": "server\.ready"'))
    try:
        assert_closed_at_accept(server, "127.0.0.3")
        assert status_from("127.0.0.1", url(server))[0] == 403
        assert_echoes_from("127.0.0.2", url(server))
        server.wait_for(r'"lapps_event": "acl\.denied"', count=2)
    finally:
        server.stop()
    events = [json.loads(line) for line in server.lines if line.startswith("{")]
    denied = [e for e in events if e.get("lapps_event") == "acl.denied"]
    assert [(e["scope"], e["count"]) for e in denied] == [("global", 1), ("echo", 1)]
    assert denied[0]["peer"].startswith("tcp4:127.0.0.3:")
    assert denied[1]["peer"].startswith("tcp4:127.0.0.1:")
    rules = {e["scope"]: e for e in events if e.get("lapps_event") == "acl.rules"}
    assert rules["global"]["policy"] == "deny"
    assert rules["global"]["entries"] == "127.0.0.1/32, 127.0.0.2/32"
    assert rules["echo"]["entries"] == "127.0.0.2/32"
    summary, = [e for e in events if e.get("lapps_event") == "acl.summary"]
    assert summary["counts"] == {"global": 1, "echo": 1}


# --- malformed entries ----------------------------------------------------------------------

def test_lapps_check_and_twistd_refuse_malformed_entries(tmp_path):
    services = {"echo": reactive("/echo", **acl("allow", "10.0.0.0/8", "2001:db8::/200"))}
    config = write_config(tmp_path, services, acl("deny", "127.0.0.1", "10.0.0.256", "::1"))
    expected = [
        f"{config}: /server/acl/exclude/1: expected an IP address or CIDR network, "
        "got string \"10.0.0.256\"",
        f"{config}: /services/echo/acl/exclude/1: expected an IP address or CIDR network, "
        "got string \"2001:db8::/200\"",
    ]
    check = subprocess.run([str(LAPPS), "check", str(config)], capture_output=True, text=True,
                           timeout=60)
    assert (check.returncode, check.stdout.splitlines()) == (1, expected)
    twistd = run_twistd(config)
    assert (twistd.returncode, twistd.stderr.splitlines()) == (1, expected)
    assert "Traceback" not in twistd.stdout + twistd.stderr


def test_an_acl_keeps_its_verdicts_for_the_last_peers_and_no_more():
    from lapps import acl as acl_module
    acl = acl_module.Acl("deny", ["10.0.0.0/8"])
    assert [acl.allows("10.1.2.3"), acl.allows("10.1.2.3"), acl.allows("192.0.2.1")] == \
        [True, True, False]
    for n in range(acl_module.MEMO + 10):
        acl.allows(f"198.51.{n // 256 % 256}.{n % 256}")
    assert len(acl._verdicts) <= acl_module.MEMO
    assert acl.allows("10.1.2.3") is True and acl.allows("not an address") is False
