"""A TCP proxy on loopback that a test can cut, to drop client connections
from the outside as a failing network does (no close frame, code 1006):
:class:`Proxy` for an asyncio test, :class:`ThreadedProxy` for one that is
not (the browser test)."""

import asyncio
import threading


class Proxy:
    """Relays every connection to ``(host, port)``. :meth:`cut` aborts
    them all; while it holds, new connections are aborted as they come."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.port = None
        #: Connections relayed, and connections refused while held.
        self.relayed = self.refused = 0
        self._held = False
        self._writers = set()
        self._server = None

    async def start(self):
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"

    def cut(self, hold=False):
        """Abort every relayed connection; with ``hold``, refuse new ones
        until :meth:`restore`."""
        self._held = hold
        for writer in list(self._writers):
            writer.transport.abort()

    def restore(self):
        self._held = False

    async def close(self):
        self.cut()
        self._server.close()
        await self._server.wait_closed()

    async def _relay(self, reader, writer):
        if self._held:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.relayed += 1
        pair = {writer, up_writer}
        self._writers |= pair
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers -= pair
            for end in pair:
                end.transport.abort()


async def _pipe(reader, writer):
    """Copy until either side ends; then end the other side too."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


class ThreadedProxy:
    """A :class:`Proxy` on an event loop in a thread of its own; ``cut``,
    ``restore`` and ``stop`` return once done there."""

    def __init__(self, host, port):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = asyncio.run_coroutine_threadsafe(
            Proxy(host, port).start(), self._loop).result(timeout=10)
        self.url = self.proxy.url

    def cut(self, hold=False):
        self._call(self.proxy.cut, hold)

    def restore(self):
        self._call(self.proxy.restore)

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, function, *args):
        async def run():
            return function(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)
