"""Reactive Lua services: the instances that answer WebSocket clients.

Every instance owns its own Lua runtime and runs inline on the reactor
thread, so it handles its connections' events strictly in order. A
connection is bound to one instance, round-robin, at handshake time.
"""

import itertools

from twisted.application.service import Service
from lupa import lua_type as lupa_type
from twisted.logger import Logger

from lapps.lua import runtime as lua, ws

log = Logger(namespace="lapps.service")

CALLBACKS = ("onStart", "onMessage", "onDisconnect", "onShutdown")


def _split(outcome):
    """``(ok, first value)`` from what a protected call returned: lupa gives a
    tuple for several Lua values and the bare value for one."""
    if isinstance(outcome, tuple):
        return outcome[0], outcome[1] if len(outcome) > 1 else None
    return outcome, None


def _lua_shown(value):
    """A Lua value as a Lua programmer would name it in a log line."""
    if value is None or isinstance(value, bool):
        return {None: "nil", False: "false", True: "true"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    return "a string" if isinstance(value, bytes) else "a " + lupa_type(value)


class Instance:
    """One Lua state of a reactive service and its four callbacks."""

    def __init__(self, service, index, runtime, module):
        self.service, self.index = service, index
        self.runtime, self.module = runtime, module
        self.healthy = False
        self._on_start, self._on_message, self._on_disconnect, self._on_shutdown = (
            lua.protected(runtime, module, name) for name in CALLBACKS)

    def start(self):
        ok, error = _split(self._on_start())
        self.healthy = ok
        if ok:
            log.info("service {service} instance {instance} started",
                     lapps_event="instance.start", service=self.service.name, instance=self.index)
        else:
            self.lua_error("onStart", error)

    def stop(self):
        if self.healthy:
            self.healthy = False
            ok, error = _split(self._on_shutdown())
            if not ok:
                self.lua_error("onShutdown", error)
        log.info("service {service} instance {instance} stopped",
                 lapps_event="instance.stop", service=self.service.name, instance=self.index)

    def on_message(self, connection, opcode, payload):
        """Deliver one whole message; a Lua error or a return other than true
        closes this connection with 1011 and nothing else."""
        outcome = self._on_message(connection.handler, opcode, payload)
        if outcome != (True, True):
            ok, result = _split(outcome)
            if ok and result is True:
                return
            if ok:
                result = f"onMessage returned {_lua_shown(result)} instead of true".encode()
            self.lua_error("onMessage", result, connection.handler)
            connection.close_with(1011, b"service error")

    def on_disconnect(self, handler):
        ok, error = _split(self._on_disconnect(handler))
        if not ok:
            self.lua_error("onDisconnect", error, handler)

    def lua_error(self, callback, traceback, handler=None):
        if isinstance(traceback, bytes):
            traceback = traceback.decode("utf-8", "replace")
        log.error("Lua error in {service}[{instance}].{callback} (handler {handler}):\n{traceback}",
                  lapps_event="lua.error", service=self.service.name, instance=self.index,
                  callback=callback, handler=handler, traceback=traceback)


class ReactiveService(Service):
    """A named reactive service: ``instances`` Lua states loaded up front
    (so a broken module is a start-up error), started with the server."""

    def __init__(self, config, lua_path, connections):
        self.name = config.name
        self.config = config
        self.instances = []
        for index in range(config.instances):
            runtime = lua.new_runtime(config.max_memory, lua_path)
            ws.install(runtime, connections)
            module = lua.load_module(runtime, config.name, CALLBACKS)
            self.instances.append(Instance(self, index, runtime, module))
        self._turn = itertools.cycle(self.instances)

    def startService(self):
        super().startService()
        for instance in self.instances:
            instance.start()

    def stopService(self):
        super().stopService()
        for instance in self.instances:
            instance.stop()

    def pick(self):
        """The next healthy instance in round-robin order, or None."""
        for _ in self.instances:
            instance = next(self._turn)
            if instance.healthy:
                return instance
        return None
