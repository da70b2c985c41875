"""Many idle connections: 5,000 WebSocket clients open, stay, and go (half
with a close handshake, half by dropping the TCP connection), and the
server's descriptors come back to where they started: nothing a connection
holds outlives it."""

import asyncio
import base64
import os
import resource

from conftest import reactive

CONNECTIONS = 5000


def _descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _raise_fd_limit(wanted):
    """The server inherits this process's limit; both need one descriptor per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _open(port, gate):
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        return reader, writer


async def _leave(reader, writer, politely):
    if politely:  # a masked close frame with code 1000; the server answers and closes
        writer.write(bytes([0x88, 0x82]) + b"\0\0\0\0" + b"\x03\xe8")
        await reader.read()
    else:
        writer.transport.abort()
    writer.close()


def test_5000_idle_connections_open_and_close_and_the_descriptors_come_back(start_server):
    limit = _raise_fd_limit(2 * CONNECTIONS + 1000)
    assert limit >= 2 * CONNECTIONS + 200, f"descriptor limit {limit} is too low for the test"
    server = start_server({"echo": reactive("/echo")})
    pid = server.process.pid
    before = _descriptors(pid)

    async def go():
        gate = asyncio.Semaphore(200)
        opened = await asyncio.gather(*[_open(server.port, gate) for _ in range(CONNECTIONS)])
        held = _descriptors(pid)
        await asyncio.gather(*[_leave(r, w, i % 2 == 0) for i, (r, w) in enumerate(opened)])
        return held

    held = asyncio.run(go())
    assert held >= before + CONNECTIONS
    server.wait_for(r"\(handler \d+\) closed: code", count=CONNECTIONS, timeout=60)
    assert _descriptors(pid) == before
    assert server.bad_lines() == []
