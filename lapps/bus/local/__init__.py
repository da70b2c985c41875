"""The local bus (``bus.backend: "local"``): bcast channels
(:mod:`lapps.bus.local.bcast`) and mqr queues (:mod:`lapps.bus.local.mqr`)
in this process. The other backends build on these classes."""
