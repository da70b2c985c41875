"""Worker processes seen from outside: which one serves a new connection
(the ``pidreport`` service answers with its pid), and whether a set of
processes ends in time. For the workers and watchdog tests."""

import asyncio
import os
import select
import time

import websockets


def all_exit_within(pids, timeout):
    """Whether every process of ``pids`` ends within ``timeout`` seconds
    (awaited on pidfds, which a process not reaped yet also makes readable)."""
    fds = [os.pidfd_open(pid) for pid in pids]
    try:
        poller, deadline = select.poll(), time.monotonic() + timeout
        for fd in fds:
            poller.register(fd, select.POLLIN)
        left = set(fds)
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for fd, _ in poller.poll(remaining * 1000):
                poller.unregister(fd)
                left.discard(fd)
        return True
    finally:
        for fd in fds:
            os.close(fd)


async def pid_of_new_connection(server):
    async with websockets.connect(server.url("/pid")) as ws:
        await ws.send("?")
        return int(await asyncio.wait_for(ws.recv(), 10))
