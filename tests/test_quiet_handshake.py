"""Autobahn's per-connection pretty-print of its options, skipped while
debug logging is off (lapps/fast/quiet_handshake.py), on real
Autobahn protocols over Twisted's in-memory transport."""

import pprint

import pytest
import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket import protocol
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from lapps.fast import quiet_handshake


@pytest.fixture
def recorded(monkeypatch):
    """The quiet pformat installed over a stock one that records its calls."""
    calls = []

    def stock(obj, *args, **kwargs):
        calls.append(obj)
        return pprint.pformat(obj, *args, **kwargs)

    callers = quiet_handshake._callers("pformat")
    assert callers, "this Autobahn's _connectionMade no longer calls pformat"
    monkeypatch.setattr(protocol, "pformat", quiet_handshake._quiet_for(callers, stock))
    level = txaio.get_global_log_level()
    yield calls
    txaio.set_global_log_level(level)


def connect():
    factory = WebSocketServerFactory()
    factory.protocol = WebSocketServerProtocol
    proto = factory.buildProtocol(None)
    proto.makeConnection(StringTransport())
    return proto


def test_a_new_connection_skips_the_pretty_print_with_debug_off(recorded):
    txaio.set_global_log_level("info")
    proto = connect()
    assert recorded == []
    assert proto.openHandshakeTimeout == WebSocketServerFactory().openHandshakeTimeout


def test_with_debug_on_the_options_are_pretty_printed_as_before(recorded):
    txaio.set_global_log_level("debug")
    connect()
    assert len(recorded) == 1 and ("openHandshakeTimeout", 5, "WebSocketServerFactory") \
        in recorded[0]


def test_other_callers_still_get_pretty_printed_text(recorded):
    timings = protocol.Timings()
    timings.track("open")
    assert str(timings).startswith("{'open': ") and len(recorded) == 1


def test_an_autobahn_that_does_not_call_pformat_is_left_alone(monkeypatch):
    def connection_made(self):  # another Autobahn's: no pformat in it
        return None

    monkeypatch.setattr(protocol.WebSocketProtocol, "_connectionMade", connection_made)
    monkeypatch.setattr(protocol, "pformat", pprint.pformat)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        assert quiet_handshake.install() is False
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert protocol.pformat is pprint.pformat
    said = [e for e in events if e.get("lapps_event") == "protocols.quiet_handshake"]
    assert [e["lapps_quiet"] for e in said] == [False]


def test_install_is_idempotent(monkeypatch):
    monkeypatch.setattr(protocol, "pformat", pprint.pformat)
    assert quiet_handshake.install() and quiet_handshake.install()
    assert protocol.pformat.quiet and protocol.pformat is not pprint.pformat


def test_the_handshake_styles_no_names_with_debug_off(monkeypatch):
    """hltype: the handshake's debug lines skip it; any other caller (an
    error line, say) and debug logging get it as before."""
    styled = []

    def stock(obj):
        styled.append(obj)
        return "styled"

    callers = quiet_handshake._callers("hltype")
    assert callers, "this Autobahn's handshake no longer calls hltype"
    monkeypatch.setattr(protocol, "hltype", quiet_handshake._quiet_for(callers, stock))
    level = txaio.get_global_log_level()
    try:
        txaio.set_global_log_level("info")
        connect()
        assert styled == []
        assert protocol.hltype(connect) == "styled"
        txaio.set_global_log_level("debug")
        connect()
        assert len(styled) >= 2
    finally:
        txaio.set_global_log_level(level)
