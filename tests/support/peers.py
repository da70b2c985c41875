"""Clients from a chosen source address (any of 127/8 is the loopback on
Linux, and ::1 where there is an IPv6 loopback), and the ACL settings that
judge them: for the ACL, handshake and peer limits, metrics and TLS tests."""

import asyncio
import socket

import websockets


def has_ipv6_loopback():
    """Whether a socket can bind ::1 here."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def acl(policy, *exclude):
    return {"acl": {"policy": policy, "exclude": list(exclude)}}


def url(server, path="/echo", host="127.0.0.1", scheme="ws"):
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{server.port}{path}"


def echo_from(source, target, ctx=None, message=b"\x00acl\xff"):
    """One echo round trip over a connection from ``source``."""
    async def go():
        async with websockets.connect(target, ssl=ctx, local_addr=(source, 0),
                                      open_timeout=10) as ws:
            assert ws.transport.get_extra_info("sockname")[0] == source
            await ws.send(message)
            return await asyncio.wait_for(ws.recv(), 10)
    return asyncio.run(go())


def assert_echoes_from(source, target, ctx=None):
    assert echo_from(source, target, ctx) == b"\x00acl\xff"
