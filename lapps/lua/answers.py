"""How a Lua call waits for an answer that comes later, from the reactor
(a bus shared with other processes answers after a round trip): a
standalone instance blocks its thread, a reactive one suspends its
coroutine (``context.wait``) while the reactor and the other instances go
on. Lua's side is ``settle.lua``.

A call starts its work with ``start(done)``: the outcome now, or
:data:`~lapps.bus.entries.PENDING` and ``done(outcome)`` later, on the
reactor thread.
"""

import itertools
import threading

from twisted.internet.defer import Deferred

from lapps.bus.entries import PENDING
from lapps.lua import source

_keys = itertools.count(1)
_GAVE_UP = object()
_SETTLE = source.read("settle.lua")


def lua_settle(runtime, wait):
    """The Lua side: ``settle(failed, a, b, key)`` (``wait`` is the
    instance's ``context.wait``, or None for a standalone one)."""
    return runtime.execute(_SETTLE, wait)


def new_key(prefix: bytes) -> bytes:
    """A key no other wait of this process uses."""
    return b"%s:%d" % (prefix, next(_keys))


class ThreadWaiter:
    """The one waiter of a standalone instance's thread: a binary semaphore
    (a bare lock, held while no wake-up is pending), cheaper than an Event."""

    __slots__ = ("_signal", "registered")

    def __init__(self):
        self._signal = threading.Lock()
        self._signal.acquire()
        self.registered = False

    def wake(self):
        """From any thread: let the next (or current) ``wait`` return."""
        try:
            self._signal.release()
        except RuntimeError:  # a wake-up is pending already
            pass

    def clear(self):
        self._signal.acquire(False)

    def wait(self):
        self._signal.acquire()


class Blocking:
    """A standalone instance's waits, on its thread's ``waiter``."""

    def __init__(self, waiter, must_stop):
        self.waiter, self.must_stop = waiter, must_stop

    def settle(self, start, results, gave_up):
        """``start(done)``'s outcome; when it is PENDING, block until the
        reactor calls ``done`` and give what it was called with; at stop,
        give up waiting: ``gave_up``. (``results`` is for the reactive
        kind.)"""
        answers = []

        def done(answer):
            answers.append(answer)
            self.waiter.wake()

        outcome = start(done)
        if outcome is not PENDING:
            return outcome
        while not answers:  # (a stale wake-up only makes it look again)
            if self.must_stop():
                return gave_up
            self.waiter.wait()
        return answers[0]

    def answer(self, start, results, gave_up):
        """What Lua's ``settle`` takes: ``results(outcome)`` without its
        first value, whenever the outcome comes; ``gave_up`` at stop."""
        outcome = self.settle(start, results, _GAVE_UP)
        return gave_up if outcome is _GAVE_UP else results(outcome)[1:]


class Suspending:
    """A reactive instance's waits: Deferreds in the instance's ``pending``."""

    def __init__(self, pending, prefix):
        self.pending, self.prefix = pending, prefix

    def settle(self, start, results, gave_up):
        """``start(done)``'s outcome; when it is PENDING, ``(None, None,
        key)``: Lua then waits on ``key`` for the results ``results`` makes
        of what ``done`` is called with (the Lua side knows what a wait
        given up at stop returns, so ``gave_up`` is not needed here)."""
        return self._start(start, results, lambda outcome: outcome)

    def answer(self, start, results, gave_up):
        """As :meth:`settle`, but an outcome that comes now is given as
        ``results(outcome)`` without its first value (what Lua's ``settle``
        takes either way)."""
        return self._start(start, results, lambda outcome: results(outcome)[1:])

    def _start(self, start, results, now):
        deferred = Deferred()
        outcome = start(deferred.callback)
        if outcome is not PENDING:
            return now(outcome)
        key = new_key(self.prefix)
        self.pending[key] = deferred.addCallback(results).addBoth(self._unclaimed, key)
        return None, None, key

    def _unclaimed(self, result, key):
        """A wait that never began (a Lua error: not in a callback's own
        coroutine) leaves no Deferred behind; one that began was popped."""
        self.pending.pop(key, None)
        return result
