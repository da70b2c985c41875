"""Autobahn's handshake without the formatting of debug lines nobody reads.

Autobahn builds the arguments of its ``log.debug`` calls even when debug
logging is off: ``WebSocketProtocol._connectionMade`` pretty-prints the ~40
protocol options of every new connection (``pprint.pformat``), and the
handshake's other steps style names and values for a terminal
(``hltype``/``hlval``, through click). Under cProfile the first was 42 %
of lapps's server CPU for 5,000 ws handshakes, and the others 7 % once it
was gone (``bench/connections.py``; see bench/README.md).

:func:`install` gives ``autobahn.websocket.protocol`` a ``pformat``, an
``hltype`` and an ``hlval`` that return ``""`` to the handshake methods
named in :data:`QUIETED` while txaio's global log level is above ``debug``
(the lines are then dropped unread), and work as before for every other
caller (``Timings.__str__``, an error line) and whenever debug logging is
on. It relies on those methods calling the module's functions; one that
does not (another Autobahn) is left as it is, and for ``pformat`` one line
says so.
"""

import pprint
import sys

import txaio
from autobahn.twisted import websocket as adapter
from autobahn.websocket import protocol
from twisted.logger import Logger

events = Logger(namespace="lapps.protocols")

_QUIET_LEVELS = frozenset({"info", "warn", "error", "critical", "none"})
_SERVER = ("WebSocketServerProtocol", ("_connectionMade", "_connectionLost", "processHandshake"))
_CLIENT = ("WebSocketClientProtocol", ("_connectionMade", "_connectionLost", "processHandshake",
                                       "_actuallyStartHandshake"))
_ADAPTER = ("WebSocketAdapterProtocol", ("connectionMade", "connectionLost"))
#: (A module of Autobahn, a function it calls) → the (class, methods) of
#: that module whose debug lines call it on every connection.
QUIETED = {(protocol, "pformat"): [("WebSocketProtocol", ("_connectionMade",))],
           (protocol, "hltype"): [_SERVER, _CLIENT], (protocol, "hlval"): [_SERVER, _CLIENT],
           (adapter, "hltype"): [_ADAPTER], (adapter, "hlval"): [_ADAPTER]}


def _callers(name, module=protocol):
    """The code objects of the methods :data:`QUIETED` names for ``name``
    of ``module`` that call it."""
    found = set()
    for class_name, methods in QUIETED[module, name]:
        cls = getattr(module, class_name, None)
        for method in methods:
            code = getattr(getattr(cls, method, None), "__code__", None)
            if code is not None and name in code.co_names:
                found.add(code)
    return frozenset(found)


def _quiet_for(callers, stock, frame=sys._getframe):
    def quiet(*args, **kwargs):
        # txaio's functions are looked up here: txaio.use_twisted() replaces them after import
        if frame(1).f_code in callers and txaio.get_global_log_level() in _QUIET_LEVELS:
            return ""
        return stock(*args, **kwargs)
    quiet.quiet = True
    return quiet


def install():
    """Quiet those debug arguments; idempotent. Returns whether
    ``_connectionMade``'s pretty-printing, the costly one, is."""
    for module, name in QUIETED:
        stock = getattr(module, name, None)
        callers = _callers(name, module)
        if stock is not None and callers and not getattr(stock, "quiet", False):
            setattr(module, name, _quiet_for(callers, stock))
    if getattr(getattr(protocol, "pformat", None), "quiet", False):
        return True
    events.info("Autobahn {version}: _connectionMade does not call pformat; its handshake "
                "is left as it is", lapps_event="protocols.quiet_handshake",
                version=getattr(sys.modules.get("autobahn"), "__version__", "?"),
                lapps_quiet=False)
    return False
