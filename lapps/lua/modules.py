"""Which Lua globals a service instance gets, by service kind and ``preload``
(spec §3.1): ``nljson`` always; ``ws`` in reactive services; ``bcast`` in
LAppS-protocol and standalone services; ``must_stop`` and ``instance_id`` in
standalone ones; ``settings`` when the descriptor has it; ``nap``, ``time``,
``murmur``, ``cws``, ``pam_auth`` and ``mqr`` when preloaded. The modules reach
server-wide things through ``context.parts`` (a ``ServerParts``)."""

from dataclasses import dataclass, field
from typing import Any, Callable

from lapps.lua import bcast, clock, cws, mqr, murmur, nap, nljson, pam_auth, ws


@dataclass
class Context:
    """What the modules of one instance are wired to."""

    runtime: Any
    parts: Any                         # lapps.services.lua_service.ServerParts
    standalone: bool
    protocol: str = "raw"
    block: Callable | None = None      # how a sleep waits: the thread, or the coroutine
    wait: Any = None                   # reactive: Lua function suspending until pending[id]
    must_stop: Callable | None = None
    peer: Callable | None = None       # reactive: the peer of the connection being served
    instance_id: str = ""
    pending: dict = field(default_factory=dict)   # id -> Deferred a reactive wait resumes on
    settings: dict | None = None                  # the descriptor's "settings", as a global
    nljson: Any = None
    stop_hooks: list = field(default_factory=list)  # standalone: run when the instance must stop


#: ``preload`` name → installer; ``lapps.config`` accepts exactly these.
PRELOAD = {"nap": nap.install, "time": clock.install, "murmur": murmur.install,
           "cws": cws.install, "pam_auth": pam_auth.install, "mqr": mqr.install}


def install(context: Context, preload):
    """Create every global the instance is entitled to."""
    runtime = context.runtime
    context.nljson = nljson.install(runtime)
    if context.settings is not None:
        runtime.globals()[b"settings"] = context.nljson.to_lua(context.settings)
    if context.standalone:
        runtime.globals()[b"instance_id"] = context.instance_id.encode()
        runtime.globals()[b"must_stop"] = runtime.execute(
            b"local f = ...; return function() return f() end", context.must_stop)
    else:
        ws.install(context)
    if context.standalone or context.protocol == "LAppS":
        bcast.install(context)
    for name in preload:
        PRELOAD[name](context)
