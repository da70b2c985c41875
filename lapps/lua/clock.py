"""``time``: ``time.now()``, wall-clock milliseconds since the Unix epoch."""

import time

from lapps.lua import source

_TIME = source.read("clock.lua")


def _now_ms():
    return time.time_ns() // 1_000_000


def install(context):
    context.runtime.globals()[b"time"] = context.runtime.execute(_TIME, _now_ms)
