"""Standalone Lua services: ``init`` then ``run`` in one thread per instance,
each with its own Lua runtime, until ``must_stop()`` turns true.

They reach the reactor only through ``callFromThread`` (``bcast`` sends, log
events). At stop, ``must_stop()`` turns true, sleeps end early, and the
service waits up to ``stop_timeout`` for the threads to end; one that does
not is reported by name and left behind: instance threads are daemon
threads, so a thread stuck in Lua (a compiled loop cannot be interrupted)
never keeps the process alive. The wait is no thread of its own, so it
never holds up the reactor's thread pool at exit either.
"""

import secrets
import threading

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from lapps.deadline import within
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
        self.finished = Deferred()  # fires on the reactor once the thread has ended

    def _log(self, level, text, **fields):
        self.service.reactor.callFromThread(
            getattr(log, level), text, service=self.service.name, instance=self.index,
            instance_id=self.instance_id, **fields)

    def _main(self):
        try:
            self._init_and_run()
        finally:
            self.service.reactor.callFromThread(self.finished.callback, None)

    def _init_and_run(self):
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
        ended = DeferredList([i.finished for i in self.instances if i.thread.ident is not None])
        return within(ended, self.config.stop_timeout, self.reactor).addCallback(
            self._report_stragglers)

    def stuck_threads(self):
        """The names of this service's instance threads still running."""
        return [i.thread.name for i in self.instances if i.thread.is_alive()]

    def _report_stragglers(self, in_time):
        if in_time:
            return
        for name in self.stuck_threads():
            log.error("standalone instance {thread} did not stop within {timeout} s",
                      lapps_event="instance.stuck", thread=name, service=self.name,
                      timeout=self.config.stop_timeout)
