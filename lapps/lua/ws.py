"""The ``ws`` module of reactive services: send to and close connections by
their handler. The path is chosen by argument count, as in LAppS: three
arguments after self send a raw frame, two send a LAppS-protocol object."""

from autobahn.websocket.protocol import WebSocketProtocol

CLOSE_CODES = frozenset(WebSocketProtocol.CLOSE_STATUS_CODES_ALLOWED) | frozenset(range(3000, 5000))

_WS = b"""
local send_raw, close = ...
local select = select
local ws = {}
function ws:send(...)
  local n = select("#", ...)
  if n == 3 then return send_raw(...) end
  if n == 2 then return false, "LAppS-protocol messages are not supported by this version of lapps" end
  return false, "usage: ws:send(handler, opcode, data)"
end
function ws:close(handler, code, reason)
  return close(handler, code, reason)
end
return ws
"""


def _closed():
    return False, b"no open connection with this handler"


def install(runtime, connections):
    """Create the ``ws`` global in ``runtime``; ``connections`` maps live
    handler ids to their protocol (see :mod:`lapps.protocols.server`)."""

    def send_raw(handler, opcode, data):
        connection = connections.get(handler)
        if connection is None:
            return _closed()
        return connection.send_raw(opcode, data)

    def close(handler, code, reason):
        connection = connections.get(handler)
        if connection is None:
            return _closed()
        if code not in CLOSE_CODES or isinstance(code, bool):
            return False, b"close code must be 1000-1003, 1007-1013 or 3000-4999"
        if reason is not None:
            if not isinstance(reason, bytes) or len(reason) > 123:
                return False, b"close reason must be a string of at most 123 bytes"
            try:
                reason.decode("utf-8")
            except UnicodeDecodeError:
                return False, b"close reason must be valid UTF-8"
        return connection.close_with(int(code), reason)

    runtime.globals()[b"ws"] = runtime.execute(_WS, send_raw, close)
