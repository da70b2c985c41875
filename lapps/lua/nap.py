"""``nap``: sleepers that block their caller, never the reactor.

In a standalone instance a sleep blocks the instance's thread (and ends early
when the server stops); in a reactive instance it suspends the instance's
coroutine while the reactor goes on, and its later events wait in order."""

from lapps.lua import source

_NAP = source.read("nap.lua")


def install(context):
    context.runtime.globals()[b"nap"] = context.runtime.execute(_NAP, context.block)
