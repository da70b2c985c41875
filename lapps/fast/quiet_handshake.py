"""Autobahn's handshake without the pretty-printing of a debug line nobody reads.

``WebSocketProtocol._connectionMade`` pretty-prints the ~40 protocol options
of every new connection (``pprint.pformat``) as the argument of a
``log.debug`` call, and evaluates it even when debug logging is off. Under
cProfile that was 42 % of lapps's server CPU for 5,000 ws handshakes
(``bench/connections.py``; see bench/README.md).

:func:`install` gives ``autobahn.websocket.protocol`` a ``pformat`` that
returns ``""`` to that one caller while txaio's global log level is above
``debug`` (the line is then dropped unread), and pretty-prints as before for
every other caller (``Timings.__str__``) and whenever debug logging is on.
It relies on ``_connectionMade`` calling the module's ``pformat``; where it
does not (another Autobahn), nothing is changed and one line says so.
"""

import pprint
import sys

import txaio
from autobahn.websocket import protocol
from twisted.logger import Logger

events = Logger(namespace="lapps.protocols")

_QUIET_LEVELS = frozenset({"info", "warn", "error", "critical", "none"})


def _checked_caller():
    """The code object of ``_connectionMade``, if it calls the module's
    ``pformat``; else None."""
    method = getattr(protocol.WebSocketProtocol, "_connectionMade", None)
    code = getattr(method, "__code__", None)
    if code is None or "pformat" not in code.co_names or not hasattr(protocol, "pformat"):
        return None
    return code


def _quiet_for(caller, stock=pprint.pformat, frame=sys._getframe):
    def pformat(obj, *args, **kwargs):
        # txaio's functions are looked up here: txaio.use_twisted() replaces them after import
        if frame(1).f_code is caller and txaio.get_global_log_level() in _QUIET_LEVELS:
            return ""
        return stock(obj, *args, **kwargs)
    pformat.quiet = True
    return pformat


def install():
    """Quiet that one debug argument; idempotent. Returns whether it is."""
    if getattr(protocol.pformat, "quiet", False):
        return True
    caller = _checked_caller()
    if caller is None:
        events.info("Autobahn {version}: _connectionMade does not call pformat; its handshake "
                    "is left as it is", lapps_event="protocols.quiet_handshake",
                    version=getattr(sys.modules.get("autobahn"), "__version__", "?"),
                    lapps_quiet=False)
        return False
    protocol.pformat = _quiet_for(caller)
    return True
