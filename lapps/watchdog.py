"""The last resort against a Lua call that holds the reactor thread.

``handler_timeout`` stops a callback from a count hook, which cannot run
while the callback is inside a C function (a pathological ``string.find``
pattern, ``string.rep`` of gigabytes, ``table.sort`` with a huge table),
and Python's signal handlers run on that same thread, between bytecodes:
such a call freezes every connection and ignores SIGTERM. lupa lets go of
the GIL while Lua runs, so a thread of our own still runs. It watches
:data:`reactor_call`, which a reactive instance sets around each run of a
callback (two stores per message), and

- once a call has run ``handler_timeout`` + ``limits.stall_timeout``
  seconds, logs it (``lua.stalled``: service, instance, callback, handler)
  and ends the process with :data:`EXIT_STALLED` (a supervisor, or systemd's
  ``Restart=on-failure``, starts a fresh one: a frozen server is worse than
  a restart);
- once SIGTERM or SIGINT has come (:func:`watch_stop_signals` sees it on
  the signal wakeup pipe, even while no Python handler can run), ends the
  process if it still runs ``shutdown_timeout`` + :data:`STOP_GRACE` later.
"""

import os
import select
import signal
import threading
import time
from time import perf_counter_ns

from twisted.logger import Logger

log = Logger(namespace="lapps.watchdog")

#: The exit status of a process the watchdog ends (EX_SOFTWARE, sysexits.h).
EXIT_STALLED = 70
#: Seconds a stop may take past ``shutdown_timeout`` before the process is ended.
STOP_GRACE = 3.0
#: How often the thread looks (seconds): the precision of both limits.
TICK = 0.25


class ReactorCall:
    """What runs Lua on the reactor thread now: ``instance`` (a reactive
    :class:`lapps.services.reactive.Instance`, or None) since
    ``since`` (``perf_counter_ns``)."""

    __slots__ = ("instance", "since")

    def __init__(self):
        self.instance, self.since = None, 0


#: The process's one reactor thread, as the reactive instances report it.
reactor_call = ReactorCall()


class Watchdog:
    """The watching thread. It is started and stopped by the server
    (:class:`lapps.app.LAppSService`), not as a child service: it must go
    on watching through the stop, until the stop has ended. ``configure``
    takes the limits again at a reload; ``end`` is how the process ends."""

    def __init__(self, stall_timeout, shutdown_timeout, end=os._exit):
        self.configure(stall_timeout, shutdown_timeout)
        self._end = end
        self._stop_deadline = None
        self._stopped = threading.Event()
        self._signals = None  # (read end of the wakeup pipe, the wakeup fd before it)

    def configure(self, stall_timeout, shutdown_timeout):
        """``stall_timeout`` 0 turns the stall check off."""
        self.stall_timeout, self.shutdown_timeout = stall_timeout, shutdown_timeout

    def start(self):
        self._stopped.clear()
        threading.Thread(target=self._watch, name="lapps-watchdog", daemon=True).start()

    def stop(self, result=None):
        """The server has stopped (a Deferred's callback: passes ``result`` on)."""
        self._stopped.set()
        return result

    def stop_requested(self):
        """SIGTERM or SIGINT came: the process must end in time."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.shutdown_timeout + STOP_GRACE

    def watch_stop_signals(self):
        """See SIGTERM and SIGINT on a wakeup pipe of the watchdog's own
        (main thread only, once the reactor's handlers are installed: from
        ``reactor.callWhenRunning``). For a process that owns its signals
        (``twistd lapps``, a worker), not for an embedding program."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._signals = (read_fd, signal.set_wakeup_fd(write_fd))

    def _watch(self):
        while not self._stopped.is_set():
            if self._signals is None:
                self._stopped.wait(TICK)
            elif select.select([self._signals[0]], [], [], TICK)[0]:
                if _stop_signal_in(_forward(*self._signals)):
                    self.stop_requested()
            self._look()

    def _look(self):
        call = reactor_call
        instance, since = call.instance, call.since
        if instance is not None and self.stall_timeout > 0:
            limit = instance.service.config.handler_timeout + self.stall_timeout
            held = (perf_counter_ns() - since) / 1e9
            if held > limit and call.instance is instance and call.since == since:
                self._stalled(instance, held, limit)
        if self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
            held = _held_by(reactor_call.instance)
            log.critical("the stop did not end {limit} s after SIGTERM (shutdown_timeout "
                         "{timeout} s){why}; the process exits with status {status}",
                         lapps_event="server.stop_forced", timeout=self.shutdown_timeout,
                         limit=self.shutdown_timeout + STOP_GRACE, status=EXIT_STALLED,
                         why="" if held["service"] is None else
                         " while {service}[{instance}].{callback} holds the reactor".format(**held),
                         **held)
            self._end(EXIT_STALLED)

    def _stalled(self, instance, held, limit):
        log.critical("{service}[{instance}].{callback} (handler {handler}) has held the reactor "
                     "for {held} s (handler_timeout + stall_timeout = {limit} s), inside a C "
                     "function the hook of handler_timeout cannot stop; the process exits with "
                     "status {status} to be restarted", lapps_event="lua.stalled", held=round(held, 1),
                     limit=limit, status=EXIT_STALLED, **_held_by(instance))
        self._end(EXIT_STALLED)


def _held_by(instance):
    """The log fields naming what ``instance`` runs (all None for no instance)."""
    if instance is None:
        return {"service": None, "instance": None, "callback": None, "handler": None}
    callback, _, handler = instance.running()
    return {"service": instance.service.name, "instance": instance.index,
            "callback": callback, "handler": handler}


def _forward(read_fd, previous_fd):
    """The signal numbers waiting in the pipe, each passed on to the wakeup
    fd that was there before (Twisted's, which wakes its reactor for them)."""
    try:
        data = os.read(read_fd, 512)
    except BlockingIOError:
        return b""
    if previous_fd >= 0:
        try:
            os.write(previous_fd, data)
        except OSError:  # full: Twisted's waker is awake already
            pass
    return data


def _stop_signal_in(data):
    return signal.SIGTERM in data or signal.SIGINT in data
