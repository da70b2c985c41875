"""`websockets` (asyncio implementation) echo server, default asyncio loop.

    bench/.venv/bin/python bench/peers/websockets_echo.py --port 9000
"""

import argparse
import asyncio
import signal

from websockets.asyncio.server import serve

LIMIT = 16 * 1024 * 1024


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main(host, port):
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(echo, host, port, max_size=LIMIT, compression=None,
                     ping_interval=None):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
