"""`aiohttp` echo server (web.WebSocketResponse), default asyncio loop.

    bench/.venv/bin/python bench/peers/aiohttp_echo.py --port 9000
"""

import argparse

from aiohttp import WSMsgType, web

LIMIT = 16 * 1024 * 1024


async def echo(request):
    ws = web.WebSocketResponse(max_msg_size=LIMIT, compress=False, autoping=True)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
        elif msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/echo", echo)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
