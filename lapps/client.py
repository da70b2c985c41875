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

This module needs ``websockets`` (not a dependency of the server itself) and
``cbor2``.
"""

import asyncio
import collections
import inspect
import logging

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
    """One LAppS connection over an open ``websockets`` connection.

    Use :func:`connect` rather than building one directly.
    """

    def __init__(self, websocket):
        self.websocket = websocket
        self._pending = collections.deque()   # (future, method), in send order
        self._send_lock = asyncio.Lock()
        self._callbacks = collections.defaultdict(list)
        self._tasks = set()
        self._closed_error = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

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
            self._pending.append(entry)
            try:
                await self.websocket.send(data)
            except websockets.ConnectionClosed:
                self._drop(entry)
                await self._reader_done()
                if future.done() and not future.cancelled():
                    future.exception()        # superseded by the error raised here
                future.cancel()
                self._raise_if_closed(method)
                raise
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
            try:
                await self.websocket.send(data)
            except websockets.ConnectionClosed:
                await self._reader_done()
                self._raise_if_closed(method)
                raise

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

    # -- closing -----------------------------------------------------------

    @property
    def closed(self):
        """True once the connection has closed."""
        return self._reader.done()

    @property
    def close_code(self):
        """The close code received, or None while the connection is open."""
        return self.websocket.close_code

    async def close(self, code=1000, reason=""):
        """Close the connection; requests still pending fail with
        :class:`ConnectionClosedError`."""
        await self.websocket.close(code, reason)
        await self._reader_done()

    async def wait_closed(self):
        """Wait until the connection has closed (by either side)."""
        await self._reader_done()

    async def _reader_done(self):
        await asyncio.shield(self._reader)

    def _raise_if_closed(self, method):
        if self._closed_error is not None:
            raise ConnectionClosedError(
                f"cannot send {method!r}: {self._closed_error}",
                self._closed_error.code, self._closed_error.reason)

    def _drop(self, entry):
        try:
            self._pending.remove(entry)
        except ValueError:
            pass

    # -- receiving ---------------------------------------------------------

    async def _read(self):
        problem = None
        try:
            async for frame in self.websocket:
                try:
                    self._dispatch(frame)
                except ProtocolError as exc:
                    problem = exc
                    log.error("closing the LAppS connection: %s", exc)
                    await self.websocket.close(1002, "invalid LAppS message")
                    break
        except websockets.ConnectionClosed:
            pass
        except Exception as exc:      # network failure or a bug: fail what waits
            problem = exc
            log.exception("LAppS connection reader failed")
        finally:
            code = self.websocket.close_code
            reason = self.websocket.close_reason or ""
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


class Connector:
    """What :func:`connect` returns: ``await`` it for a :class:`Client`, or
    use it as ``async with`` to close the connection on exit."""

    def __init__(self, url, **kwargs):
        self._url = url
        self._kwargs = kwargs
        self._client = None

    def __await__(self):
        return self._open().__await__()

    async def _open(self):
        websocket = await websockets.connect(self._url, **self._kwargs)
        return Client(websocket)

    async def __aenter__(self):
        self._client = await self._open()
        return self._client

    async def __aexit__(self, *exc_info):
        await self._client.close()


def connect(url, **kwargs):
    """Connect to a LAppS service at ``url`` (``ws://`` or ``wss://``).

    Keyword arguments go to :func:`websockets.connect`; ``compression``
    defaults to None, as LAppS does not use permessage-deflate.
    """
    kwargs.setdefault("compression", None)
    return Connector(url, **kwargs)
