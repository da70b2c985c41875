"""``time``: ``time.now()``, wall-clock milliseconds since the Unix epoch."""

import time

_TIME = b"""
local now = ...
return { now = function() return now() end }
"""


def _now_ms():
    return time.time_ns() // 1_000_000


def install(context):
    context.runtime.globals()[b"time"] = context.runtime.execute(_TIME, _now_ms)
