"""`picows` echo server, on uvloop when it imports (else the default asyncio
loop); prints which loop it runs on.

    bench/.venv/bin/python bench/peers/picows_echo.py --port 9000 [--no-uvloop]
"""

import argparse
import asyncio
import signal

from picows import WSListener, WSMsgType, ws_create_server

LIMIT = 16 * 1024 * 1024


class Echo(WSListener):
    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type not in (WSMsgType.PING, WSMsgType.PONG):  # picows answers pings
            transport.send(frame.msg_type, frame.get_payload_as_memoryview(), fin=frame.fin)


async def main(host, port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    server = await ws_create_server(lambda request: Echo(), host, port, max_frame_size=LIMIT)
    print(f"picows echo on {host}:{port}, loop {type(loop).__module__}.{type(loop).__name__}",
          flush=True)
    async with server:
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    runner = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop
            runner = uvloop.run
        except ImportError:
            pass
    runner(main(args.host, args.port))
