"""Standalone Lua services: ``init`` then ``run`` in one thread per instance,
each with its own Lua runtime, until ``must_stop()`` turns true.

They reach the reactor only through ``callFromThread`` (``bcast`` sends, log
events). At stop, ``must_stop()`` turns true, sleeps end early, and the
threads are joined with a timeout; one that does not stop is reported by name.
"""

import secrets
import threading
import time

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from lapps.lua import modules, runtime as lua
from lapps.services.lua_service import LuaService

log = Logger(namespace="lapps.service")


def _split(outcome):
    """``(ok, first value)`` from a protected call (lupa gives a tuple for
    several Lua values, the bare value for one)."""
    if isinstance(outcome, tuple):
        return outcome[0], outcome[1] if len(outcome) > 1 else None
    return outcome, None


class StandaloneInstance:
    """One thread, one Lua state."""

    def __init__(self, service, index):
        config = service.config
        self.service, self.index = service, index
        self.stopping = threading.Event()
        self.instance_id = str(secrets.randbits(64))
        runtime = lua.new_runtime(config.max_memory, service.parts.lua_path)
        context = modules.Context(runtime, service.parts, standalone=True,
                                  block=self.stopping.wait, must_stop=self.stopping.is_set,
                                  instance_id=self.instance_id, settings=config.settings)
        modules.install(context, config.preload)
        self.stop_hooks = context.stop_hooks  # e.g. wake an mqr recv blocked in the thread
        module = lua.load_module(runtime, config.name, ("init", "run"))
        self._init = lua.protected(runtime, module, "init")
        self._run = lua.protected(runtime, module, "run")
        self.thread = threading.Thread(target=self._main, name=f"{config.name}[{index}]",
                                       daemon=True)

    def _log(self, level, text, **fields):
        self.service.reactor.callFromThread(
            getattr(log, level), text, service=self.service.name, instance=self.index,
            instance_id=self.instance_id, **fields)

    def _main(self):
        self._log("info", "service {service} instance {instance} started",
                  lapps_event="instance.start")
        for callback, call in (("init", self._init), ("run", self._run)):
            ok, error = _split(call())
            if callback == "init":
                self.service.reactor.callFromThread(self.service.instance_started)
            if not ok:
                if isinstance(error, bytes):
                    error = error.decode("utf-8", "replace")
                self._log("error", "Lua error in {service}[{instance}].{callback}:\n{traceback}",
                          lapps_event="lua.error", callback=callback, handler=None,
                          traceback=error)
                break
        self._log("info", "service {service} instance {instance} stopped",
                  lapps_event="instance.stop")


class StandaloneService(LuaService):
    """A named standalone service and its instance threads."""

    def __init__(self, config, parts):
        super().__init__(config, parts)
        self.reactor = parts.reactor
        self.instances = [StandaloneInstance(self, i) for i in range(config.instances)]

    def start_instances(self):
        for instance in self.instances:
            instance.thread.start()

    def stopService(self):
        super().stopService()
        for instance in self.instances:
            instance.stopping.set()
            for hook in instance.stop_hooks:
                hook()
        joining = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self._join,
                                    self.config.stop_timeout)
        return joining.addCallback(self._report_stragglers)

    def _join(self, timeout):
        deadline = time.monotonic() + timeout
        started = [i.thread for i in self.instances if i.thread.ident is not None]
        for thread in started:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in started if thread.is_alive()]

    def _report_stragglers(self, names):
        for name in names:
            log.error("standalone instance {thread} did not stop within {timeout} s",
                      lapps_event="instance.stuck", thread=name, service=self.name,
                      timeout=self.config.stop_timeout)
