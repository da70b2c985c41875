"""The ``ws`` module of reactive services: send to and close connections by
their handler. The path is chosen by argument count, as in LAppS: three
arguments after self send a raw frame, two send a LAppS-protocol object
(validated and CBOR-encoded, see :mod:`lapps.protocols.messages`)."""

from autobahn.websocket.protocol import WebSocketProtocol

from lapps.lua import source
from lapps.lua.nljson import NlJsonError
from lapps.protocols import messages

CLOSE_CODES = frozenset(WebSocketProtocol.CLOSE_STATUS_CODES_ALLOWED) | frozenset(range(3000, 5000))

_WS = source.read("ws.lua")

CLOSED = (False, b"no open connection with this handler")
INVALID = b"An attempt to send an invalid LAppS-protocol message: "


def lapps_payload(nljson, obj, check=messages.outbound_problem, without=()):
    """``(payload, None)`` for a valid outbound LAppS message (its keys
    ``without`` left out), else ``(None, why)``."""
    try:
        message = nljson.to_python(obj)
    except NlJsonError as e:
        return None, INVALID + str(e).encode()
    problem = check(message)
    if problem is not None:
        return None, INVALID + problem.encode()
    for key in without:
        message.pop(key, None)
    return messages.encode(message), None


def install(context):
    """Create the ``ws`` global; ``context.parts.connections`` maps live handler
    ids to their protocol (see :mod:`lapps.protocols.server`)."""
    connections, nljson = context.parts.connections, context.nljson

    def send_raw(handler, opcode, data):
        connection = connections.get(handler)
        if connection is None:
            return CLOSED
        return connection.send_raw(opcode, data)

    def send_lapps(handler, obj):
        connection = connections.get(handler)
        if connection is None:
            return CLOSED
        payload, problem = lapps_payload(nljson, obj)
        if problem is not None:
            return False, problem
        return connection.send_raw(2, payload)

    def close(handler, code, reason):
        connection = connections.get(handler)
        if connection is None:
            return CLOSED
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

    runtime = context.runtime
    runtime.globals()[b"ws"] = runtime.execute(_WS, send_raw, send_lapps, close)
