"""A client for the LAppS protocol, on asyncio and ``websockets``.

Every LAppS message is a CBOR map in a binary WebSocket frame. Requests are
answered on the command channel (cid 0) in the order they were sent, so
responses are matched to requests by order; the server's out-of-order
notifications (OONs) arrive on any other cid::

    async with lapps.client.connect("ws://127.0.0.1:5085/echo_lapps") as client:
        [session] = await client.request("login", [{"user": "admin", "password": "admin"}])
        client.on_message(5, print)
        await client.notify("subscribe", [session], cid=5)
        print(await client.request("echo", [session, [1, 2, 3]]))

With ``reconnect=True`` a dropped connection is opened again; the
``on_connect`` hook, run on every connection, logs in and subscribes, from
the last position seen on a bcast channel with history, so that what was sent
meanwhile is delivered (echo_lapps's ``subscribe`` request)::

    async def on_connect(client):
        [session] = await client.request("login", [{"user": "admin", "password": "admin"}])
        channel = {"cid": 5}
        if client.position(5):
            channel["epoch"], channel["offset"] = client.position(5)
        await client.request("subscribe", [session, channel])

    client = await lapps.client.connect(url, reconnect=True, on_connect=on_connect)

This module needs ``websockets`` (not a dependency of the server itself) and
``cbor2``.
"""

import asyncio
import collections
import inspect
import logging
import random

import cbor2
import websockets

__all__ = ["Client", "ConnectionClosedError", "LAppSError", "ProtocolError",
           "connect", "validate_method"]

log = logging.getLogger(__name__)


class LAppSError(Exception):
    """An error response: ``{"cid": 0, "status": 0, "error": {code, message, data}}``."""

    def __init__(self, code, message, data=None):
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self):
        text = f"LAppS error {self.code}: {self.message}"
        return text if self.data is None else f"{text} ({self.data!r})"


class ConnectionClosedError(ConnectionError):
    """The connection closed before a request was answered, or before it was sent.

    ``code`` and ``reason`` are the close code and reason received (1006 and
    ``""`` when the connection was lost without a close frame).
    """

    def __init__(self, text, code=None, reason=""):
        super().__init__(text)
        self.code = code
        self.reason = reason


class ProtocolError(Exception):
    """The server sent something that is not a LAppS message."""


def validate_method(method):
    """Raise unless ``method`` is a valid LAppS method name (spec §4.2): a
    non-empty string without ``.`` that does not start with ``_``."""
    if not isinstance(method, str):
        raise TypeError(f"method name must be a str, not {type(method).__name__}")
    if not method:
        raise ValueError("method name must not be empty")
    if "." in method:
        raise ValueError(f"method name {method!r} must not contain '.'")
    if method.startswith("_"):
        raise ValueError(f"method name {method!r} must not start with '_' (reserved)")


def _message(method, params):
    validate_method(method)
    message = {"lapps": 1, "method": method}
    if params is not None:
        if not isinstance(params, (list, tuple)):
            raise TypeError(f"params must be a list or tuple, not {type(params).__name__}")
        message["params"] = list(params)
    return message


def _integral(value):
    """``value`` as an int when it is an integral CBOR number (the server may
    send Lua numbers as doubles), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


class Client:
    """A LAppS connection over ``websockets``; with reconnection, one
    connection after another, with the same callbacks and positions.

    Use :func:`connect` rather than building one directly.
    """

    def __init__(self, websocket, *, dial=None, on_connect=None,
                 backoff_initial_delay=0.1, backoff_max_delay=5.0):
        self.websocket = websocket
        #: How many times the client has reconnected after a drop.
        self.reconnects = 0
        self._dial = dial                     # a new websockets.connect(), or None: no reconnecting
        self._on_connect = on_connect
        self._backoff = (backoff_initial_delay, backoff_max_delay)
        self._pending = collections.deque()   # (future, method), in send order
        self._send_lock = asyncio.Lock()
        self._callbacks = collections.defaultdict(list)
        self._positions = {}                  # cid -> (epoch, offset)
        self._tasks = set()
        self._closed_error = None             # the current connection's, once it closed
        self._failure = None                  # what stopped the reconnecting, if not close()
        self._closing = asyncio.Event()       # close() was called
        self._ready = asyncio.Event()         # open, and on_connect has run on it
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read(websocket))
        self._life = loop.create_task(self._run())

    # -- sending -----------------------------------------------------------

    async def request(self, method, params=None):
        """Send a request and return its ``result`` list.

        Raises :class:`LAppSError` for an error response and
        :class:`ConnectionClosedError` if the connection closes first.
        """
        data = cbor2.dumps(_message(method, params))
        future = asyncio.get_running_loop().create_future()
        entry = (future, method)
        # The lock keeps the queue of futures in the order of the frames on
        # the wire, whatever the number of concurrent callers.
        async with self._send_lock:
            self._raise_if_closed(method)
            reader = self._reader
            self._pending.append(entry)
            try:
                await self.websocket.send(data)
            except websockets.ConnectionClosed:
                self._drop(entry)
                closed = await asyncio.shield(reader)
                if future.done() and not future.cancelled():
                    future.exception()        # superseded by the error raised here
                future.cancel()
                raise _cannot_send(method, closed) from None
        return await future

    async def notify(self, method, params=None, *, cid):
        """Send a client notification (CN) on channel ``cid``; nothing answers it."""
        if isinstance(cid, bool) or not isinstance(cid, int):
            raise TypeError(f"cid must be an int, not {type(cid).__name__}")
        message = _message(method, params)
        message["cid"] = cid
        data = cbor2.dumps(message)
        async with self._send_lock:
            self._raise_if_closed(method)
            reader = self._reader
            try:
                await self.websocket.send(data)
            except websockets.ConnectionClosed:
                raise _cannot_send(method, await asyncio.shield(reader)) from None

    def on_message(self, cid, callback):
        """Call ``callback(message)`` with the ``message`` array of every OON
        on ``cid``. A coroutine function is run as a task. Returns a function
        that removes the callback."""
        if isinstance(cid, bool) or not isinstance(cid, int):
            raise TypeError(f"cid must be an int, not {type(cid).__name__}")
        if cid == 0:
            raise ValueError("cid 0 is the command channel; OONs never use it")
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._callbacks[cid].append(callback)

        def remove():
            if callback in self._callbacks.get(cid, ()):
                self._callbacks[cid].remove(callback)

        return remove

    def position(self, cid):
        """``(epoch, offset)`` of the last OON seen on ``cid`` that carried
        them (a bcast channel with history), or None. It outlives
        reconnections, so that ``on_connect`` can resubscribe from it; in a
        plain (not coroutine) callback it is that OON's own."""
        return self._positions.get(cid)

    # -- closing -----------------------------------------------------------

    @property
    def closed(self):
        """True once the client has closed for good (not while it reconnects)."""
        return self._life.done()

    @property
    def close_code(self):
        """The close code received, or None while the connection is open."""
        return self.websocket.close_code

    async def close(self, code=1000, reason=""):
        """Close the connection and stop reconnecting; requests still pending
        fail with :class:`ConnectionClosedError`."""
        self._closing.set()
        await self.websocket.close(code, reason)
        await self.wait_closed()

    async def wait_closed(self):
        """Wait until the client has closed for good (by either side, or
        after a drop when it does not reconnect)."""
        await asyncio.shield(self._life)

    async def wait_connected(self):
        """Wait until the connection is open and ``on_connect`` has run on
        it: at once when it is, else until the client has reconnected.

        Raises what ``on_connect`` or a reconnection attempt raised when that
        stopped the client, else :class:`ConnectionClosedError` once it has
        closed for good.
        """
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({ready, self._life}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._ready.is_set():
            return
        if self._failure is not None:
            raise self._failure
        raise ConnectionClosedError(f"the client has closed: {self._closed_error}",
                                    self._closed_error.code, self._closed_error.reason)

    def _raise_if_closed(self, method):
        if self._closed_error is not None:
            raise _cannot_send(method, self._closed_error)

    def _drop(self, entry):
        try:
            self._pending.remove(entry)
        except ValueError:
            pass

    # -- receiving ---------------------------------------------------------

    async def _read(self, websocket):
        """Dispatch what ``websocket`` receives until it closes; then fail
        what is pending and return the ConnectionClosedError that says why."""
        problem = None
        try:
            async for frame in websocket:
                try:
                    self._dispatch(frame)
                except ProtocolError as exc:
                    problem = exc
                    log.error("closing the LAppS connection: %s", exc)
                    await websocket.close(1002, "invalid LAppS message")
                    break
        except websockets.ConnectionClosed:
            pass
        except Exception as exc:      # network failure or a bug: fail what waits
            problem = exc
            log.exception("LAppS connection reader failed")
        finally:
            self._ready.clear()
            code = websocket.close_code
            reason = websocket.close_reason or ""
            code = 1006 if code is None else code
            text = f"connection closed (code {code}{', ' + repr(reason) if reason else ''})"
            if problem is not None:
                text += f" after {problem}"
            self._closed_error = ConnectionClosedError(text, code, reason)
            while self._pending:
                future, method = self._pending.popleft()
                if not future.done():
                    exc = ConnectionClosedError(f"{text} before the response to {method!r}",
                                                code, reason)
                    exc.__cause__ = problem
                    future.set_exception(exc)
        return self._closed_error

    # -- reconnecting ------------------------------------------------------

    async def _run(self):
        """Greet each connection and read it to its end; after a drop,
        reconnect when asked to."""
        while await self._greet():
            await self._reader
            if self._dial is None or self._closing.is_set():
                return
            websocket = await self._redial()
            if websocket is None:
                return
            self.websocket = websocket
            self._closed_error = None
            self.reconnects += 1
            self._reader = asyncio.get_running_loop().create_task(self._read(websocket))

    async def _greet(self):
        """Run ``on_connect`` on the connection just opened. False when it
        failed other than by the connection closing: the client then stops,
        as the same failure would most likely follow every reconnection."""
        try:
            if self._on_connect is not None:
                outcome = self._on_connect(self)
                if inspect.isawaitable(outcome):
                    await outcome
        except ConnectionClosedError:
            return True                       # dropped meanwhile: reconnect, or end
        except Exception as exc:
            if self.reconnects:               # the first one is raised by connect()
                log.exception("on_connect failed; the LAppS client stops")
            self._failure = exc
            await self.websocket.close()
            await self._reader
            return False
        if not self._reader.done():
            self._ready.set()
        return True

    async def _redial(self):
        """A new connection, tried after each of the exponential backoff
        delays with full jitter (uniform up to a doubling ceiling), so that
        the clients of a restarted server do not all come back at once. None
        once close() is called, or after an error not worth retrying (as
        the ``process_exception`` of :func:`websockets.connect` tells)."""
        ceiling, maximum = self._backoff
        while True:
            if not await self._unless_closing(asyncio.sleep(random.uniform(0, ceiling))):
                return None
            ceiling = min(maximum, ceiling * 2)
            connector = self._dial()
            attempt = asyncio.ensure_future(connector)
            if not await self._unless_closing(attempt):
                if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
                    await attempt.result().close()
                return None
            try:
                return attempt.result()
            except Exception as exc:
                fatal = connector.process_exception(exc)
                if fatal is not None:
                    log.error("reconnecting failed; the LAppS client stops: %s", fatal)
                    self._failure = fatal
                    return None
                log.info("reconnecting failed, trying again: %s", exc)

    async def _unless_closing(self, awaitable):
        """Wait for ``awaitable``; False (and it is cancelled) if close() is
        called first."""
        task = asyncio.ensure_future(awaitable)
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({task, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
        if self._closing.is_set():
            task.cancel()
            return False
        return True

    def _dispatch(self, frame):
        if isinstance(frame, str):
            raise ProtocolError("received a text frame; LAppS uses binary frames only")
        try:
            message = cbor2.loads(frame)
        except Exception as exc:
            raise ProtocolError(f"received a frame that is not CBOR: {exc}") from exc
        if not isinstance(message, dict):
            raise ProtocolError(f"received a CBOR {type(message).__name__}, not a map")
        cid = _integral(message.get("cid"))
        if cid is None:
            raise ProtocolError(f"received a message without a numeric cid: {message!r}")
        if cid == 0:
            self._response(message)
        else:
            self._notification(cid, message)

    def _response(self, message):
        if not self._pending:
            raise ProtocolError(f"received a response with no request pending: {message!r}")
        status = message.get("status")
        if status == 1 and not isinstance(status, bool):
            result = message.get("result")
            if not isinstance(result, list):
                raise ProtocolError(f"success response without a result array: {message!r}")
            future, _ = self._pending.popleft()
            if not future.done():         # not cancelled by its caller
                future.set_result(result)
        elif status == 0 and not isinstance(status, bool):
            error = message.get("error")
            if not isinstance(error, dict) or "code" not in error:
                raise ProtocolError(f"error response without an error object: {message!r}")
            future, _ = self._pending.popleft()
            if not future.done():
                future.set_exception(LAppSError(
                    error.get("code"), error.get("message", ""), error.get("data")))
        else:
            raise ProtocolError(f"response with status {status!r}: {message!r}")

    def _notification(self, cid, message):
        payload = message.get("message")
        if not isinstance(payload, list):
            raise ProtocolError(f"OON on cid {cid} without a message array: {message!r}")
        offset, epoch = _integral(message.get("offset")), message.get("epoch")
        if offset is not None and isinstance(epoch, str):
            self._positions[cid] = (epoch, offset)
        for callback in list(self._callbacks.get(cid, ())):
            try:
                outcome = callback(payload)
                if inspect.isawaitable(outcome):
                    task = asyncio.ensure_future(outcome)
                    self._tasks.add(task)
                    task.add_done_callback(self._task_done)
            except Exception:
                log.exception("OON callback for cid %s failed", cid)

    def _task_done(self, task):
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("OON callback task failed", exc_info=task.exception())


def _cannot_send(method, closed):
    return ConnectionClosedError(f"cannot send {method!r}: {closed}", closed.code, closed.reason)


class Connector:
    """What :func:`connect` returns: ``await`` it for a :class:`Client`, or
    use it as ``async with`` to close the connection on exit."""

    def __init__(self, url, options, kwargs):
        self._url = url
        self._options = options
        self._kwargs = kwargs
        self._client = None

    def __await__(self):
        return self._open().__await__()

    def _dial(self):
        return websockets.connect(self._url, **self._kwargs)

    async def _open(self):
        options = dict(self._options)
        dial = self._dial if options.pop("reconnect") else None
        client = Client(await self._dial(), dial=dial, **options)
        try:
            await client.wait_connected()
        except BaseException:
            await client.close()
            raise
        return client

    async def __aenter__(self):
        self._client = await self._open()
        return self._client

    async def __aexit__(self, *exc_info):
        await self._client.close()


def connect(url, *, reconnect=False, on_connect=None, backoff_initial_delay=0.1,
            backoff_max_delay=5.0, **kwargs):
    """Connect to a LAppS service at ``url`` (``ws://`` or ``wss://``).

    ``on_connect(client)`` (a coroutine function, or a plain one) runs once
    the connection is open, before this returns, and again after every
    reconnection: it is where to log in and subscribe. With ``reconnect``, a
    connection that drops (other than by :meth:`Client.close`) is opened
    again, after random delays of up to ``backoff_initial_delay`` seconds,
    doubling to ``backoff_max_delay``; the first connection is not retried.
    What ``on_connect`` raises on the first connection is raised here; on a
    later one it stops the client, unless it is the
    :class:`ConnectionClosedError` of another drop.

    Other keyword arguments go to :func:`websockets.connect`; ``compression``
    defaults to None, as LAppS does not use permessage-deflate.
    """
    if on_connect is not None and not callable(on_connect):
        raise TypeError("on_connect must be callable")
    kwargs.setdefault("compression", None)
    options = {"reconnect": reconnect, "on_connect": on_connect,
               "backoff_initial_delay": backoff_initial_delay,
               "backoff_max_delay": backoff_max_delay}
    return Connector(url, options, kwargs)
