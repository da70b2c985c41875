"""The private names of Twisted and Autobahn the fast path relies on are
checked in one place; a library without one of them leaves the server on
the stock path, said in one log line, and every message still goes through."""

import asyncio
import textwrap

import websockets

from conftest import Server, reactive, write_config
from lapps.fast import private_names

FUTURE = ("autobahn.twisted.websocket", "WebSocketServerProtocol", ("_renamedInAFutureRelease",))


def test_every_name_the_fast_path_relies_on_is_there():
    assert private_names.missing() == []


def test_a_name_that_is_gone_is_named(monkeypatch):
    monkeypatch.setattr(private_names, "RELIED_ON", private_names.RELIED_ON + [FUTURE])
    assert private_names.missing() == ["WebSocketServerProtocol._renamedInAFutureRelease"]
    assert private_names.fast_path_available() is False


def test_without_one_the_server_takes_the_stock_path(tmp_path, reap):
    """A server whose Autobahn lacks a name (``sitecustomize`` makes the check
    look for one no Autobahn has) still echoes, on the stock path."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(f"""
        from lapps.fast import private_names
        private_names.RELIED_ON.append({FUTURE!r})
    """))
    config = write_config(tmp_path, {"echo": reactive("/echo")})
    server = reap(Server(config, env={"PYTHONPATH": str(hook)}))
    server.wait_for(r"the fast path is off: WebSocketServerProtocol\._renamedInAFutureRelease "
                    r"not found")

    async def echoes():
        async with websockets.connect(server.url("/echo"), max_size=None) as ws:
            for message in ("hi", b"\0" * 200_000):
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), 10) == message

    asyncio.run(echoes())
    assert not any("dispatches the events of lapps connections" in line
                   for line in server.lines)  # the reactor's own dispatch too
    assert server.bad_lines() == []


def test_the_wing_gives_the_stock_parts_when_a_name_is_gone(monkeypatch):
    """One entry point (lapps.fast.wing): with every name there, the fast
    path's endpoint, TLS and clock; without one (here the epoll reactor's),
    Twisted's own, and nothing of the fast path is installed."""
    from twisted.internet import endpoints
    from twisted.internet.selectreactor import SelectReactor

    from lapps import fast
    from lapps.fast.transport import EagerTCPServerEndpoint

    reactor = SelectReactor()
    enabled = fast.wing(reactor, True)
    assert enabled.enabled and enabled.tls_factory is not None and enabled.tls_clock is not None
    assert isinstance(enabled.endpoint(0, "127.0.0.1"), EagerTCPServerEndpoint)
    assert fast.wing(reactor, False) == fast.Wing(False, reactor)

    gone = ("twisted.internet.epollreactor", "EPollReactor", ("_pollerRenamed",))
    monkeypatch.setattr(private_names, "RELIED_ON_WHERE_PRESENT",
                        private_names.RELIED_ON_WHERE_PRESENT + [gone])
    stock = fast.wing(reactor, True)
    assert stock == fast.Wing(False, reactor)
    assert isinstance(stock.endpoint(0, "127.0.0.1"), endpoints.TCP4ServerEndpoint)
    assert isinstance(stock.endpoint(0, "::1"), endpoints.TCP6ServerEndpoint)
    assert stock.install_dispatch() is False
