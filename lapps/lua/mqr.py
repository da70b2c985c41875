"""``mqr``: named in-process message queues between services (spec §6.5).

``mqr.create(name)`` gives a handle on the queue of that name, which every
service and instance shares (:mod:`lapps.bus`). Values are copied:
a table or an nljson value is converted to Python when posted
(``nljson.to_python``) and into the receiver's own runtime when received
(``nljson.to_lua``), so sender and receiver never share state; a string,
number or boolean travels as itself.

``q:recv()`` waits for a value: a standalone instance blocks its thread (and
gets nil once the server stops), a reactive instance suspends its coroutine
(``context.wait``) while the reactor and the other instances go on.

The queues are the bus's (:mod:`lapps.bus`): in this process, or in Redis.
With Redis, ``post`` waits for Redis's verdict (accepted or full) and
``try_recv`` may ask Redis for what is queued: both then block or suspend
the same way, for one round trip. A failed bus makes them return false (or
nil) and a message.
"""


from lupa.luajit21 import LuaMemoryError, lua_type
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.threadable import isInIOThread

from lapps.lua import answers, memory, source
from lapps.lua.nljson import NlJsonError
from lapps.bus.entries import FETCHED, Json as _Json

_MQR = source.read("mqr.lua")

_STOPPING = b"the server is stopping"
_GAVE_UP = (False, _STOPPING)
log = Logger(namespace="lapps.mqr")


def _log_dropped(queue, size, limit):
    log.error("mqr queue {queue}: a message of {size} bytes does not fit in the receiving "
              "instance's max_memory ({max_memory}); dropped", lapps_event="mqr.too_big",
              queue=queue, size=size, max_memory=limit)


class _Module:
    """The Python side of one instance's ``mqr`` global."""

    def __init__(self, context):
        self._queue = context.parts.mqr.queue  # name -> its queue (a dict hit once made)
        self.nljson, self.runtime, self.reactor = context.nljson, context.runtime, context.parts.reactor

    def create(self, name):
        self._queue(name)

    def post_json(self, name, value):
        if value is None or lua_type(value) != "table" and not self.nljson.is_nljson(value):
            # (lupa gives None for a userdata it cannot wrap, e.g. a file)
            return False, b"cannot post this value: a userdata that is not an nljson value"
        try:
            entry = _Json(*self.nljson.to_python_sized(value))
        except NlJsonError as e:
            return False, f"cannot post this value: {e}".encode()
        return self._post(name, entry)

    def post_plain(self, name, value):
        return self._post(name, value)

    def _post(self, name, entry):
        """True, or ``(False, why)``; or the key to wait on (see ``settle``)."""
        queue = self._queue(name)
        return self.settle(lambda done: queue.post(entry, done), _as_results, _GAVE_UP)

    def lua_value(self, queue, entry):
        """``(value, None)`` in this instance's runtime, or ``(None, message)``
        when the runtime cannot hold it: then the message is dropped (and
        logged), as it would not fit in the next call either."""
        kind = type(entry)
        if kind is tuple:  # (None, why): the bus failed
            return entry
        if kind is not _Json:
            if kind is bytes and not self._fits(len(entry), 1):
                return self._dropped(queue, len(entry))
            return entry, None
        try:
            value = self.nljson.to_lua(entry.value, lambda items: self._fits(entry.size, items))
        except (NlJsonError, LuaMemoryError):  # too big for the runtime's memory cap
            return self._dropped(queue, entry.size)
        return value, None

    def _fits(self, size, items):
        return memory.fits(self.runtime, size, items)

    def _dropped(self, queue, size):
        limit = self.runtime.get_max_memory()
        name = queue.name.decode("utf-8", "replace")
        if isInIOThread():
            _log_dropped(name, size, limit)
        else:
            self.reactor.callFromThread(_log_dropped, name, size, limit)
        return None, (f"message of {size} bytes dropped: it does not fit in this instance's "
                      f"max_memory ({limit})").encode()

    def try_recv(self, name, again=False):
        """A queued value or nil, never waiting for one to be posted. The
        bus may answer later (Redis): then, once it has fetched what is
        queued, Lua calls again with ``again`` and takes from that."""
        queue = self._queue(name)
        entry = queue.take() if again else self.settle(queue.take, _fetched, (None, _STOPPING))
        if entry is FETCHED:  # (standalone) the bus fetched what is queued
            entry = queue.take()
        elif type(entry) is tuple:  # a key to wait on, or (None, why)
            return entry
        if entry is None:
            return None
        return self.lua_value(queue, entry)


def _as_results(outcome):
    """A post's outcome (True or (False, why)) as a reactive wait's results."""
    return (True, True, None) if outcome is True else (True,) + outcome


def _fetched(outcome):
    """A fetch's outcome (FETCHED: take what came, or (None, why)) as a
    reactive wait's results: (True, true) or (True, false, why)."""
    return (True, True, None) if outcome is FETCHED else (True, False, outcome[1])


class _Standalone(_Module):

    def __init__(self, context):
        super().__init__(context)
        self.must_stop = context.must_stop
        self.waiter = answers.ThreadWaiter()
        context.stop_hooks.append(self.waiter.wake)
        self.settle = answers.Blocking(self.waiter, self.must_stop).settle

    def recv(self, name):
        """Block until a value comes; once the server stops, never wait:
        a queued value or nil."""
        queue, waiter, must_stop = self._queue(name), self.waiter, self.must_stop
        while True:
            waiter.clear()  # before must_stop(): a stop from now on wakes it again
            if must_stop():
                entry = queue.take()
                if entry is None:
                    return None, _STOPPING
                break
            entry = queue.take_or_wait(waiter)
            if entry is not None:
                break
            waiter.wait()
            queue.forget(waiter)
        return self.lua_value(queue, entry)


class _Recv:
    """One suspended ``recv`` of a reactive instance."""

    __slots__ = ("module", "queue", "key", "deferred", "active", "registered")

    def __init__(self, module, queue, key, deferred):
        self.module, self.queue, self.key, self.deferred = module, queue, key, deferred
        self.active, self.registered = True, False

    def wake(self):
        reactor = self.module.reactor
        if isInIOThread():
            reactor.callLater(0, self.fire)  # never resume Lua inside a poster's call
        else:
            reactor.callFromThread(self.fire)

    def fire(self):
        """On the reactor: take an entry and resume the instance with it."""
        pending = self.module.pending
        if self.active and self.key in pending:  # its wait never began (a Lua error)
            del pending[self.key], self.module.waits[self.key]
            self.active = False
        if not self.active:
            self.queue.pass_on()
            return
        entry = self.queue.take_or_wait(self)  # nothing left: wait for the next post
        if entry is None:
            return
        self.active = False
        del self.module.waits[self.key]
        value, error = self.module.lua_value(self.queue, entry)
        self.deferred.callback((True, value, error))


class _Reactive(_Module):

    def __init__(self, context):
        super().__init__(context)
        self.pending = context.pending
        self.waits = {}  # key -> _Recv
        self.settle = answers.Suspending(self.pending, b"mqr").settle

    def recv(self, name):
        """``(value, error)`` now, or ``(nil, nil, key)``: the Lua side then
        waits on ``key``."""
        queue = self._queue(name)
        entry = queue.take()
        if entry is not None:
            return self.lua_value(queue, entry)
        key = answers.new_key(b"mqr")
        deferred = self.pending[key] = Deferred()
        waiting = self.waits[key] = _Recv(self, queue, key, deferred)
        entry = queue.take_or_wait(waiting)
        if entry is not None:  # a thread posted since take()
            del self.pending[key], self.waits[key]
            return self.lua_value(queue, entry)
        return None, None, key

    def give_up(self, key):
        """The instance stopped waiting (the server stops, or the recv could
        not suspend): unregister."""
        self.pending.pop(key, None)
        waiting = self.waits.pop(key, None)
        if waiting is not None:
            waiting.active = False
            waiting.queue.forget(waiting)
        return None, _STOPPING


def install(context):
    """Create the ``mqr`` global of one instance."""
    runtime = context.runtime
    if context.standalone:
        module = _Standalone(context)
        wait = give_up = None
    else:
        module = _Reactive(context)
        wait, give_up = context.wait, module.give_up
    runtime.globals()[b"mqr"] = runtime.execute(
        _MQR, module.create, module.post_json, module.post_plain, module.try_recv,
        module.recv, wait, give_up, answers.lua_settle(runtime, wait))
    return module
