"""RFC 6455 and RFC 7692 conformance of the Lua echo service with
``permessage_deflate`` on, by the Autobahn testsuite: the core cases (1-7, 9,
10) over ws and, bridged by socat, over wss; of the compression cases 12 and
13, the quick ones over ws. All 517 cases take 7 to 9 minutes here: that
run is tests/conformance/full.py, out of the suite.

Without the conformance tool (support/conformance.py says where it is
looked for) each test is skipped saying so, before it starts a server; in
CI it fails with that message instead."""

import pytest

from support.conformance import CORE, ECHO, assert_conformant, require_tool, socat_bridge
from support.pki import PKI

#: Every payload kind of 12 and every offer of 13, with the messages that are
#: quick to send 1000 of: 16 bytes, 1 KiB, and 8 KiB in 256-byte fragments;
#: the rest (up to 128 KiB) are in the full run. Exact ids: a glob such as
#: 12.*.1 is anchored at the start only, and 12.1.10 matches it.
SECTIONS = [f"12.{k}" for k in range(1, 6)] + [f"13.{k}" for k in range(1, 8)]
COMPRESSION = [f"{section}.{n}" for section in SECTIONS for n in (1, 4, 11)]


@pytest.fixture
def bridges():
    started = []
    yield lambda server, ca: started.append(socat_bridge(server, ca)) or started[-1]
    for bridge in started:
        bridge.stop()


def test_core_cases_over_ws(start_server, tmp_path):
    require_tool()
    server = start_server(ECHO)
    assert_conformant(server.url("/echo"), tmp_path / "report", CORE, minimum=300)


def test_quick_compression_cases_over_ws(start_server, tmp_path):
    require_tool()
    server = start_server(ECHO)
    assert_conformant(server.url("/echo"), tmp_path / "report", COMPRESSION, minimum=36)


def test_core_cases_over_wss_through_socat(start_server, bridges, tmp_path):
    require_tool()
    pki = PKI(tmp_path)
    server = start_server(ECHO, pki.server())
    bridge = bridges(server, pki.ca)
    assert_conformant(bridge.url("/echo"), tmp_path / "report", CORE, minimum=300)
