"""The private names of Twisted and Autobahn that the fast path (server key
``fast_path``) relies on, checked in one place before the server is built.

Neither library promises them, and lapps pins no upper version. A name
counts as there when the class has it or one of its methods still reads or
sets it (an attribute made in ``__init__``). If one is missing, the server
logs one line naming it (``fast_path.unavailable``) and every connection
takes Twisted's and Autobahn's own path, as with ``"fast_path": false``;
the reactor's dispatch (:mod:`lapps.reactor`) and the handshake's quiet
debug line (:mod:`lapps.protocols.quiet_handshake`) check their own names
the same way.
"""

import importlib

from twisted.logger import Logger

log = Logger(namespace="lapps.protocols")

#: The versions these names were last checked against.
CHECKED_WITH = {"twisted": "26.10.0", "autobahn": "26.11.1"}

#: (module, class, names): what :mod:`lapps.protocols.fastpath`,
#: :mod:`lapps.protocols.clientpath` and :mod:`lapps.protocols.server` use.
RELIED_ON = [
    ("autobahn.twisted.websocket", "WebSocketServerProtocol",
     ("_onOpen", "_dataReceived", "_cancelAutoPingTimeoutCall", "_perMessageCompress",
      "_listeners", "_batched_timer")),
    ("autobahn.twisted.websocket", "WebSocketClientProtocol",
     ("_onOpen", "_dataReceived", "_perMessageCompress", "_listeners")),
    ("twisted.internet.abstract", "FileDescriptor", ("_tempDataBuffer", "_writeDisconnected")),
    ("twisted.internet.tcp", "Server", ("_fromConnectedSocket",)),
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
    """The relied-on names the installed libraries lack, as ``Class.name``."""
    lacking = []
    for module, class_name, names in RELIED_ON:
        cls = getattr(importlib.import_module(module), class_name, None)
        if cls is None:
            lacking.append(f"{module}.{class_name}")
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
