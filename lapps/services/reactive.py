"""Reactive Lua services: the instances that answer WebSocket clients.

Every instance owns its own Lua runtime and runs inline on the reactor
thread, inside one long-lived Lua coroutine. A blocking call (``nap``)
suspends that coroutine while the reactor goes on; the instance's later
events wait in its queue, so it handles them strictly in order, as LAppS's
one-thread-per-instance did. Connections are bound to an instance,
round-robin, at handshake time.
"""

import collections
import gc
import itertools
from time import perf_counter_ns

from lupa.luajit21 import LuaError, lua_type
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from lapps import metrics
from lapps.lua import modules, runtime as lua, source
from lapps.lua.nljson import NlJsonError
from lapps.protocols import messages
from lapps.services.lua_service import LuaService
from lapps.watchdog import reactor_call

log = Logger(namespace="lapps.service")

CALLBACKS = ("onStart", "onMessage", "onDisconnect", "onShutdown")
ON_START, ON_MESSAGE, ON_DISCONNECT, ON_SHUTDOWN = (name.encode() for name in CALLBACKS)

#: What ``step`` returns when a callback ran and returned true: the hot path.
_DONE_TRUE = (True, b"done", True, True)

#: Memory kept free in an instance beyond a message's own size.
_MEMORY_MARGIN = 1024 * 1024

#: What a callback's xpcall returns when the runtime hit ``max_memory``
#: (LuaJIT calls no error handler for it). After onMessage or onDisconnect
#: the runtime is rebuilt: the memory may be held by state it keeps.
_OUT_OF_MEMORY = b"not enough memory"
_REBUILT_AFTER = (ON_MESSAGE, ON_DISCONNECT)


def _retired(*event):
    """The step of an instance whose runtime could not be rebuilt: it is out
    of rotation, its connections are closed, and what they still post is dropped."""
    return _DONE_TRUE


#: The blocking calls a reactive instance makes by suspending its coroutine.
_SUSPENDING = source.read("reactive_suspend.lua", "lapps.services")


def _lua_shown(value):
    """A Lua value as a Lua programmer would name it in a log line."""
    if value is None or isinstance(value, bool):
        return {None: "nil", False: "false", True: "true"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    return "a string" if isinstance(value, bytes) else "a " + lua_type(value)


class Instance:
    """One Lua state of a reactive service, its queue and its coroutine."""

    def __init__(self, service, index):
        config, parts = service.config, service.parts
        self.service, self.index, self.clock = service, index, parts.reactor
        self.max_memory = config.max_memory
        self.generation = 0       # how many times its runtime was rebuilt
        self.latency = metrics.latency_for(service.name)  # onMessage times, for the metrics
        self._build()
        self.healthy = False
        self.busy = False
        self.stopping = False
        self._queue = collections.deque()
        self.max_queue = config.max_instance_queue
        self._muted = {}          # handler -> connection whose reading is paused
        self._queue_peak = 0      # the longest the queue got while over max_queue
        self._current = None      # (callback, connection, handler) running now
        self._sleep = None        # the DelayedCall ending a nap
        self._waiting = None      # the Deferred a "wait" suspension resumes on
        self._shutdown = None

    # Events in.

    def post(self, callback, connection, handler, *args):
        """Run ``callback(handler, *args)`` now, or after the events before it."""
        if self.busy:
            self._enqueue((callback, connection, handler, args), connection)
            return
        self._current = (callback, connection, handler)
        outcome = self._timed_step(callback, handler, args)
        if outcome != _DONE_TRUE:
            self._settle(outcome)
        if self._queue and not self.busy:
            self._drain()

    def reply_in_order(self, connection, payload):
        """Send a reply prepared in Python after the events queued before it,
        so that responses on the command channel keep the order of requests."""
        if self.busy:
            self._enqueue((None, connection, None, (payload,)), connection)
        else:
            connection.send_raw(2, payload)

    def raw_message(self, connection, payload, is_binary):
        if self._fits(connection, len(payload)):
            self.post(ON_MESSAGE, connection, connection.handler, 2 if is_binary else 1, payload)

    def lapps_message(self, connection, payload, is_binary):
        """Classify a LAppS-protocol message (spec §4.3); bad input gets its
        error reply in turn on the command channel, and never reaches Lua."""
        if not is_binary:
            connection.close_with(1003, b"LAppS-protocol messages are CBOR in binary frames")
            return
        if not self._fits(connection, 4 * len(payload)):
            return
        try:
            decoded = messages.decode(payload)
            msg_type = messages.classify(decoded)
            message = self.nljson.to_lua(decoded)
        except messages.InvalidInput as e:
            self.reply_in_order(connection, e.reply())
        except NlJsonError as e:
            self.reply_in_order(connection, messages.InvalidInput(
                messages.INVALID_REQUEST, "Invalid request", str(e)).reply())
        else:
            self.post(ON_MESSAGE, connection, connection.handler, msg_type, message)

    def disconnect(self, handler):
        self._muted.pop(handler, None)
        self.post(ON_DISCONNECT, None, handler)

    def _enqueue(self, event, connection):
        """Queue an event while the instance is suspended. Past
        ``max_instance_queue`` events, reading from the connection that
        sent it stops (its client's TCP window then holds what it sends)
        until the queue is down to half; the rest of the data already read
        still comes in, so the queue overshoots by at most that."""
        queue = self._queue
        queue.append(event)
        if len(queue) > self.max_queue:
            self._queue_peak = max(self._queue_peak, len(queue))
            if connection is not None and connection.handler not in self._muted:
                self._muted[connection.handler] = connection
                connection.transport.pauseProducing()
                log.info("service {service} instance {instance} has {queued} events queued "
                         "(max_instance_queue {limit}): reading from {peer} (handler {handler}) "
                         "paused", lapps_event="instance.queue_full", service=self.service.name,
                         instance=self.index, queued=len(queue), limit=self.max_queue,
                         peer=connection.peer, handler=connection.handler)

    def _unmute(self):
        muted, self._muted = self._muted, {}
        for connection in muted.values():
            connection.transport.resumeProducing()
        log.info("service {service} instance {instance} queue down to {queued} events (at most "
                 "{peak}): reading from {count} connections resumed",
                 lapps_event="instance.queue_drained", service=self.service.name,
                 instance=self.index, queued=len(self._queue), peak=self._queue_peak,
                 count=len(muted), handlers=sorted(muted))
        self._queue_peak = 0

    def _build(self):
        """A fresh runtime with the service module loaded in it: the
        instance's Lua state, at start and at each rebuild."""
        config, parts = self.service.config, self.service.parts
        runtime = lua.new_runtime(config.max_memory, parts.lua_path)
        step, suspend, bind = lua.dispatcher(runtime, config.handler_timeout)
        sleep, wait = runtime.execute(_SUSPENDING, suspend)
        context = modules.Context(runtime, parts, standalone=False,
                                  protocol=config.protocol, block=sleep, wait=wait,
                                  settings=config.settings, peer=self._peer)
        modules.install(context, config.preload)
        bind(lua.load_module(runtime, config.name, CALLBACKS, jit=False))  # for the hook
        self.runtime, self._step = runtime, step
        self.nljson, self._pending = context.nljson, context.pending

    def _peer(self):
        """The peer of the connection whose event runs now (pam_auth's rate
        limit), or None in onStart, onDisconnect and onShutdown."""
        connection = self._current[1] if self._current is not None else None
        return connection.peer if connection is not None else None

    def _fits(self, connection, size):
        """Whether ``size`` more bytes fit under the instance's memory cap
        (LuaJIT aborts the process when it cannot allocate call arguments).
        Garbage is collected first; a message that still does not fit
        closes its connection with 1009, and the instance goes on."""
        headroom = size + _MEMORY_MARGIN
        if self.runtime.get_memory_used() + headroom <= self.max_memory:
            return True
        self.runtime.set_max_memory(self.max_memory + headroom)
        try:
            self.runtime.execute(b"collectgarbage()")
        finally:
            self.runtime.set_max_memory(self.max_memory)
        if self.runtime.get_memory_used() + headroom <= self.max_memory:
            return True
        metrics.memory_cap_hits.labels(self.service.name).inc()
        log.error("service {service} instance {instance} has no memory for a message of "
                  "{size} bytes (max_memory {max_memory})", lapps_event="instance.memory",
                  service=self.service.name, instance=self.index, size=size,
                  max_memory=self.max_memory)
        connection.close_with(1009, b"message too big for the service's memory")
        return False

    # Running them.

    def _timed_step(self, callback, handler, args):
        """One dispatcher step, in sight of the watchdog; onMessage's time
        goes to the metrics."""
        started = perf_counter_ns()
        watched = reactor_call
        watched.since, watched.instance = started, self
        try:
            outcome = self._step(callback, handler, *args)
        finally:
            watched.instance = None
        if callback == ON_MESSAGE:
            self.latency.add(perf_counter_ns() - started)
        return outcome

    def running(self):
        """``(callback name, connection, handler)`` of the callback running
        now (or last), for the watchdog's log line."""
        callback, connection, handler = self._current or (None, None, None)
        return (callback.decode() if callback else None), connection, handler

    def _drain(self):
        while self._queue and not self.busy:
            callback, connection, handler, args = self._queue.popleft()
            if self._muted and len(self._queue) <= self.max_queue // 2:
                self._unmute()
            if callback is None:
                connection.send_raw(2, args[0])
                continue
            self._current = (callback, connection, handler)
            self._settle(self._timed_step(callback, handler, args))

    def _settle(self, outcome):
        """Act on what the coroutine returned: a finished callback, or a
        blocking call to carry out before resuming it."""
        if outcome[0] is not True:
            self._dispatcher_died(outcome[1] if len(outcome) > 1 else None)
            return
        if outcome[1] == b"suspend":
            self.busy = True
            if outcome[2] == b"sleep":
                self._sleep = self.clock.callLater(0 if self.stopping else outcome[3], self._wake)
            else:  # "wait": for the Deferred a module registered under that id
                self._waiting = waiting = self._pending.pop(outcome[3])
                waiting.addCallbacks(lambda result: self._resume_wait(waiting, *result),
                                     lambda failure: self._resume_wait(
                                         waiting, False, str(failure.value).encode()))
                # a wait begun during stop (e.g. an mqr recv in onShutdown) gives up at once
                if self.stopping and self._waiting is waiting:
                    self.clock.callLater(0, self._resume_wait, waiting, False,
                                         b"the server is stopping")
            return
        ok = outcome[2]
        value = outcome[3] if len(outcome) > 3 else None
        callback, connection, handler = self._current
        if callback == ON_MESSAGE and ok and value is not True:
            if connection.state != connection.STATE_OPEN:
                return  # e.g. its ws:send failed because the client is gone: nothing to report
            ok, value = False, f"onMessage returned {_lua_shown(value)} instead of true".encode()
        if not ok:
            self._report(callback.decode(), value, handler, timed_out=outcome[1] == b"timeout")
            if callback == ON_MESSAGE:
                connection.close_with(1011, b"service error")
            if value == _OUT_OF_MEMORY:
                metrics.memory_cap_hits.labels(self.service.name).inc()
            if value == _OUT_OF_MEMORY and callback in _REBUILT_AFTER and not self.stopping:
                self._rebuild("its Lua runtime ran out of memory")
        if callback == ON_START:
            self.healthy = ok
            if self.generation == 0:
                self.service.instance_started()
            if ok:
                log.info("service {service} instance {instance} started",
                         lapps_event="instance.start", service=self.service.name,
                         instance=self.index, generation=self.generation)
        elif callback == ON_SHUTDOWN:
            self._shutdown.callback(None)

    def _resume_wait(self, waiting, *results):
        if self._waiting is waiting:  # not already given up at stop
            self._waiting = None
            self._wake(*results)

    def _wake(self, *results):
        self._sleep = None
        self.busy = False
        watched = reactor_call
        watched.since, watched.instance = perf_counter_ns(), self
        try:
            outcome = self._step(*results)
        finally:
            watched.instance = None
        self._settle(outcome)
        if not self.busy:
            self._drain()

    def _dispatcher_died(self, error):
        """Cannot happen short of a LuaJIT fault or memory running out
        outside a callback. After an event of a connection the runtime is
        rebuilt; in onStart (which a rebuild would run again) or during
        stop, the instance leaves rotation and closes its connections."""
        self._report("dispatcher", error)
        if self._current[0] in _REBUILT_AFTER and not self.stopping:
            self._rebuild("its dispatcher coroutine died")
            return
        self.healthy = False
        self._queue.clear()
        for connection in self._connections():
            connection.close_with(1011, b"service error")
        if self._shutdown is not None and not self._shutdown.called:
            self._shutdown.callback(None)

    def _connections(self):
        return [c for c in self.service.parts.connections.values() if c.instance is self]

    def _rebuild(self, why):
        """Replace a runtime that cannot go on by a fresh one (module loaded
        again, ``onStart`` run again), and go on serving.

        The Lua state of the connections bound to the old runtime is gone
        with it, so they are closed, like the connections of a crashed nginx
        worker, with 1012 (Service Restart): they did nothing wrong, and a
        reconnect gets the new runtime (the connection whose event failed
        was closed with 1011 already). Their queued messages die with the
        old state; each still gets its one ``onDisconnect``, in the new
        runtime after its ``onStart`` (a service already meets handlers it
        never saw there: a client may leave before its first message).
        """
        victims = self._connections()
        metrics.instance_rebuilds.labels(self.service.name).inc()
        log.error("service {service} instance {instance}: {why}; rebuilding it, and closing "
                  "with 1012 the other connections bound to it ({count})",
                  lapps_event="instance.rebuild",
                  service=self.service.name, instance=self.index, why=why,
                  count=sum(1 for c in victims if c.state == c.STATE_OPEN),
                  generation=self.generation + 1)
        self.healthy = False
        # only the onDisconnects stay (a rebuild never runs during stop: no onShutdown is queued)
        self._queue = collections.deque(e for e in self._queue if e[0] == ON_DISCONNECT)
        try:
            self._build()
        except (lua.LuaStartError, LuaError) as e:
            log.error("service {service} instance {instance} could not be rebuilt and leaves "
                      "rotation: {error}", lapps_event="instance.rebuild_failed",
                      service=self.service.name, instance=self.index, error=str(e))
            self._step = _retired
        else:
            self.generation += 1
            self._queue.appendleft((ON_START, None, None, ()))
            # the old runtime and the Python callables it was given hold each
            # other: free its heap once the calls on the stack (which may hold
            # its values) have returned, not at the next full collection, so
            # that a run of rebuilds cannot hold several max_memory at once
            self.clock.callLater(0, gc.collect)
        for connection in victims:
            connection.close_with(1012, b"service restarted")

    def _report(self, callback, traceback, handler=None, timed_out=False):
        if isinstance(traceback, bytes):
            traceback = traceback.decode("utf-8", "replace")
        if timed_out:
            metrics.lua_timeouts.labels(self.service.name).inc()
            log.error("{service}[{instance}].{callback} (handler {handler}) stopped after "
                      "handler_timeout ({timeout} s):\n{traceback}", lapps_event="lua.timeout",
                      service=self.service.name, instance=self.index, callback=callback,
                      handler=handler, timeout=self.service.config.handler_timeout,
                      traceback=traceback)
            return
        metrics.lua_errors.labels(self.service.name).inc()
        log.error("Lua error in {service}[{instance}].{callback} (handler {handler}):\n{traceback}",
                  lapps_event="lua.error", service=self.service.name, instance=self.index,
                  callback=callback, handler=handler, traceback=traceback)

    # Life.

    def start(self):
        self.post(ON_START, None, None)

    def stop(self):
        """Run ``onShutdown`` after the queued events; a pending sleep ends
        at once and a pending wait gives up. The Deferred fires when it has run."""
        self.stopping = True
        if self._sleep is not None and self._sleep.active():
            self._sleep.reset(0)
        if self._waiting is not None:
            self.clock.callLater(0, self._resume_wait, self._waiting, False,
                                 b"the server is stopping")
        self._shutdown = Deferred()
        self._shutdown.addCallback(self._stopped)
        if self.healthy:
            self.healthy = False
            self.post(ON_SHUTDOWN, None, None)
        else:
            self._shutdown.callback(None)
        return self._shutdown

    def _stopped(self, _):
        log.info("service {service} instance {instance} stopped",
                 lapps_event="instance.stop", service=self.service.name, instance=self.index)


class ReactiveService(LuaService):
    """A named reactive service: ``instances`` Lua states loaded up front
    (so a broken module is a start-up error), started with the server."""

    def __init__(self, config, parts):
        super().__init__(config, parts)
        self.instances = [Instance(self, index) for index in range(config.instances)]
        self._turn = itertools.cycle(self.instances)

    def start_instances(self):
        for instance in self.instances:
            instance.start()

    def stopService(self):
        super().stopService()
        return DeferredList([instance.stop() for instance in self.instances])

    def pick(self):
        """The next healthy instance in round-robin order, or None."""
        for _ in self.instances:
            instance = next(self._turn)
            if instance.healthy:
                return instance
        return None
