"""``bcast``: process-wide broadcast channels, for LAppS-protocol reactive
services and standalone services. A message is validated and CBOR-encoded
once per send, whatever the number of subscribers.

History, recovery and presence (:mod:`lapps.bus.history`) may need a round
trip on a bus shared with other processes: those calls then block a
standalone instance's thread or suspend a reactive one (:mod:`lapps.lua.answers`).
"""

import dataclasses

import cbor2
from lupa.luajit21 import LuaMemoryError

from lapps.bus import history as channel_history
from lapps.lua import answers, memory, source
from lapps.lua.nljson import NlJsonError
from lapps.lua.ws import lapps_payload
from lapps.protocols import messages

_BCAST = source.read("bcast.lua")
_STOPPING = (False, b"the server is stopping")
#: Keys a history channel sets on every message it delivers (a sender's are left out).
POSITION_KEYS = ("epoch", "offset")


class _Module:
    """The Python side of one instance's ``bcast`` global."""

    def __init__(self, context):
        self.channels, self.nljson, self.runtime = \
            context.parts.broadcasts, context.nljson, context.runtime
        if context.standalone:
            waiter = answers.ThreadWaiter()
            context.stop_hooks.append(waiter.wake)
            self.answers = answers.Blocking(waiter, context.must_stop)
        else:
            self.answers = answers.Suspending(context.pending, b"bcast")

    def create(self, channel, size=None, ttl=None):
        options = None if size is None else channel_history.Options(
            int(size), ttl, self.channels.history_max_bytes)
        return self.channels.create(channel, options)

    def subscribe(self, channel, handler, recover=False, epoch=None, offset=None, info=None):
        since = (epoch.decode("utf-8", "replace"), int(offset)) if recover else None
        return self.answers.answer(
            lambda done: self.channels.subscribe(channel, handler, since, info, done),
            self._subscribed, _STOPPING)

    def _subscribed(self, outcome):
        if type(outcome) is tuple and outcome[0] is True:  # (True, Recovery)
            return True, True, _table(self.runtime, dataclasses.asdict(outcome[1]))
        return _as_results(outcome)

    def send(self, channel, obj):
        without = POSITION_KEYS if self.channels.has_history(channel) else ()
        payload, problem = lapps_payload(self.nljson, obj, messages.broadcast_problem, without)
        if problem is not None:
            return False, problem
        if not self.channels.exists(channel):
            return False, b"Broadcast with id %d is not found" % channel
        return self.answers.answer(lambda done: self.channels.publish(channel, payload, done),
                                   _as_results, _STOPPING)

    def history(self, channel, after, limit):
        return self.answers.answer(
            lambda done: self.channels.history(channel, int(after), int(limit), done),
            self._held, _STOPPING)

    def _held(self, outcome):
        position, entries = outcome
        if position is False:
            return True, False, entries
        runtime, size = self.runtime, sum(len(p) for _, p in entries)
        try:  # one nljson array: one look at the memory cap for all of it
            held = self.nljson.to_lua([cbor2.loads(p) for _, p in entries],
                                      lambda items: memory.fits(runtime, size, items))
        except (NlJsonError, LuaMemoryError):
            return True, False, b"bcast:history: %d messages do not fit in this instance's " \
                b"max_memory; ask for fewer (limit)" % len(entries)
        return True, held, _table(self.runtime, dataclasses.asdict(position))

    def presence(self, channel):
        return self.answers.answer(lambda done: self.channels.presence(channel, done),
                                   self._present, _STOPPING)

    def _present(self, outcome):
        if type(outcome) is tuple:
            return (True,) + outcome
        members = self.runtime.table_from(outcome["members"])
        return True, _table(self.runtime, {"count": outcome["count"], "members": members})


def _table(runtime, mapping):
    """A Lua table of ``mapping`` (this runtime passes only bytes as strings)."""
    return runtime.table_from({key.encode(): value.encode() if type(value) is str else value
                               for key, value in mapping.items()})


def _as_results(outcome):
    """True, ``(True, value)`` or ``(False, why)`` as a reactive wait's results."""
    if outcome is True:
        return True, True
    return (True,) + outcome


def install(context):
    module = _Module(context)
    runtime = context.runtime
    wait = None if context.standalone else context.wait
    limits = _table(runtime, {"max_size": channel_history.MAX_SIZE,
                              "max_info": channel_history.MAX_INFO,
                              "max_limit": channel_history.MAX_LIMIT,
                              "max_ttl": channel_history.MAX_TTL})
    runtime.globals()[b"bcast"] = runtime.execute(
        _BCAST, module.create, module.subscribe, module.channels.unsubscribe, module.send,
        module.history, module.presence, answers.lua_settle(runtime, wait), limits)
