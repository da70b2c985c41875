#!/usr/bin/env python3
"""What the Lua call of one echoed message costs, without the network.

    python3 bench/lua_call.py [--size 1024] [--number 200000]

Builds the runtime a reactive instance of ``apps/echo`` has (lapps's
sandbox, its dispatcher coroutine with the ``handler_timeout`` hook, the
``ws`` module, echo.lua interpreted) and times ``step("onMessage", handler,
2, payload)``: Python → lupa → the dispatcher → ``echo.onMessage`` →
``ws:send`` → back into Python, where the connection's ``send_raw`` is a
stub that only answers true. The rest of a message's server CPU is the
socket, the frame and Python around it (``bench/run.py``, ``bench/profile.py``).
"""

import argparse
import sys
import timeit
from pathlib import Path
from types import SimpleNamespace

from lapps.lua import runtime as lua, ws
from lapps.services.reactive import CALLBACKS

ECHO = Path(__file__).resolve().parent.parent / "apps" / "echo"
HANDLER = 7


class Sink:
    """A connection that takes every message."""

    def send_raw(self, opcode, data):
        return True


def echo_step(max_memory=64 * 1024 * 1024, handler_timeout=5.0):
    """The ``step`` of a runtime with echo.lua loaded the way a reactive instance loads it."""
    runtime = lua.new_runtime(max_memory, f"{ECHO}/?.lua")
    step, _, bind = lua.dispatcher(runtime, handler_timeout)
    ws.install(SimpleNamespace(runtime=runtime, nljson=None,
                               parts=SimpleNamespace(connections={HANDLER: Sink()})))
    bind(lua.load_module(runtime, "echo", CALLBACKS, jit=False))
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="message bytes (default 1024)")
    parser.add_argument("--number", type=int, default=200_000, help="calls timed (default 200000)")
    args = parser.parse_args()
    step, payload = echo_step(), b"x" * args.size
    outcome = step(b"onMessage", HANDLER, 2, payload)
    if outcome != (True, b"done", True, True):
        sys.exit(f"echo.lua did not answer as expected: {outcome!r}")
    seconds = min(timeit.repeat(lambda: step(b"onMessage", HANDLER, 2, payload),
                                number=args.number, repeat=5))
    print(f"the Lua call of one {args.size} B echo: {seconds / args.number * 1e6:.2f} µs "
          f"(best of 5 × {args.number:,})")


if __name__ == "__main__":
    main()
