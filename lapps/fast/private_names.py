"""The private names of Twisted and Autobahn that the fast path (server key
``fast_path``, :mod:`lapps.fast`) relies on, checked in one place before
the server is built.

Neither library promises them, and lapps pins no upper version. A name
counts as there when the class (or module) has it or one of the class's
methods still reads or sets it (an attribute made in ``__init__``). If one
is missing, the server logs one line naming it (``fast_path.unavailable``)
and the server is built with Twisted's and Autobahn's own parts, as with
``"fast_path": false``.
"""

import importlib

from twisted.logger import Logger

log = Logger(namespace="lapps.protocols")

#: The versions these names were last checked against.
CHECKED_WITH = {"twisted": "26.10.0", "autobahn": "26.11.1"}

#: (module, class or None for the module itself, names): what the modules of
#: :mod:`lapps.fast` and :mod:`lapps.protocols.server` use.
RELIED_ON = [
    ("autobahn.twisted.websocket", "WebSocketServerProtocol",
     ("_onOpen", "_dataReceived", "_cancelAutoPingTimeoutCall", "_perMessageCompress",
      "_listeners", "_batched_timer")),
    ("autobahn.twisted.websocket", "WebSocketClientProtocol",
     ("_onOpen", "_dataReceived", "_perMessageCompress", "_listeners")),
    ("twisted.internet.abstract", "FileDescriptor", ("_tempDataBuffer", "_writeDisconnected")),
    ("twisted.internet.tcp", "Server", ("_fromConnectedSocket",)),
    ("twisted.internet.tcp", "Connector", ("_makeTransport",)),
    ("autobahn.websocket.protocol", "WebSocketProtocol", ("_connectionMade",)),
    ("autobahn.websocket.protocol", None, ("pformat", "hltype", "hlval")),
    ("autobahn.twisted.websocket", None, ("hltype", "hlval")),
]

#: The same for a module that is not everywhere (epoll: Linux only); where
#: it cannot be imported, what relies on it is not used.
RELIED_ON_WHERE_PRESENT = [
    ("twisted.internet.epollreactor", "EPollReactor",
     ("_poller", "_selectables", "_doReadOrWrite")),
]


def _used_by(cls):
    """Every attribute name the methods of ``cls`` (its bases included) read or set."""
    names = set()
    for attribute in dir(cls):
        function = getattr(getattr(cls, attribute, None), "__func__", getattr(cls, attribute, None))
        code = getattr(function, "__code__", None)
        if code is not None:
            names.update(code.co_names)
    return names


def missing():
    """The relied-on names the installed libraries lack, as ``Class.name``
    (or ``module.name``)."""
    lacking = []
    present = []
    for entry in RELIED_ON_WHERE_PRESENT:
        try:
            importlib.import_module(entry[0])
        except ImportError:
            continue
        present.append(entry)
    for module_name, class_name, names in RELIED_ON + present:
        module = importlib.import_module(module_name)
        if class_name is None:
            lacking += [f"{module_name}.{n}" for n in names if not hasattr(module, n)]
            continue
        cls = getattr(module, class_name, None)
        if cls is None:
            lacking.append(f"{module_name}.{class_name}")
            continue
        used = _used_by(cls)
        lacking += [f"{class_name}.{n}" for n in names if not hasattr(cls, n) and n not in used]
    return lacking


def fast_path_available():
    """Whether the fast path may be used here; if not, say which names are missing."""
    lacking = missing()
    if lacking:
        log.warn("the fast path is off: {names} not found in this Twisted or Autobahn (checked "
                 "with Twisted {twisted}, Autobahn {autobahn}); every connection takes their "
                 "own path", lapps_event="fast_path.unavailable", names=", ".join(lacking),
                 missing=lacking, **CHECKED_WITH)
    return not lacking
