"""Which Lua globals a service instance gets, by service kind and ``preload``
(spec §3.1): ``nljson`` always; ``ws`` in reactive services; ``bcast`` in
LAppS-protocol and standalone services; ``must_stop`` and ``instance_id`` in
standalone ones; ``nap``, ``time`` and ``murmur`` when preloaded."""

from dataclasses import dataclass
from typing import Any, Callable

from lapps.lua import bcast, clock, murmur, nap, nljson, ws


@dataclass
class Context:
    """What the modules of one instance are wired to."""

    runtime: Any
    standalone: bool
    protocol: str = "raw"
    connections: dict | None = None
    broadcasts: Any = None
    block: Callable | None = None      # how a blocking call waits (see nap)
    must_stop: Callable | None = None
    instance_id: str = ""
    nljson: Any = None


#: ``preload`` name → installer; ``lapps.config`` accepts exactly these.
PRELOAD = {"nap": nap.install, "time": clock.install, "murmur": murmur.install}


def install(context: Context, preload):
    """Create every global the instance is entitled to."""
    runtime = context.runtime
    context.nljson = nljson.install(runtime)
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
