"""``pam_auth``: ``pam_auth:login(service, username, password)`` → ``true``,
or ``false`` and a reason (spec §6.6).

The checks and the PAM call belong to the ``pam_auth`` Twisted service
(:mod:`lapps.services.pam_auth`), which runs PAM in its own thread pool and
never on the reactor. A reactive instance suspends its coroutine until the
answer comes (``context.wait``) while the reactor and the other instances go
on; a standalone instance blocks its own thread (and gives up when the
server stops).
"""

import itertools
import queue

from twisted.internet.defer import maybeDeferred

from lapps.lua import source

USAGE = b"usage: pam_auth:login(service, username, password), three non-empty strings"
UNAVAILABLE = b"pam_auth is not available in this server"
_ids = itertools.count(1)

_PAM_AUTH = source.read("pam_auth.lua")


def _answer(outcome):
    """``(None, ok, reason)``: what ``start`` returns when there is nothing to wait for."""
    if not isinstance(outcome, tuple):  # a Failure: login never fails, but never raise into Lua
        outcome = (False, str(outcome.value).encode())
    return None, outcome[0], outcome[1] if len(outcome) > 1 else None


class _Login:
    """What ``pam_auth:login`` calls first; ``login`` is the kind-specific part."""

    def __init__(self, context):
        self.context = context

    def start(self, service, user, password):
        auth = self.context.parts.pam_auth
        if auth is None:
            return None, False, UNAVAILABLE
        return self.login(auth, service, user, password)


class _Reactive(_Login):
    """On the reactor thread: an answer at hand is returned at once; else the
    Deferred is left in ``pending`` for the coroutine's ``wait``."""

    def login(self, auth, service, user, password):
        peer = self.context.peer() if self.context.peer is not None else None
        d = auth.login(service, user, password, peer)
        if d.called:  # refused without PAM: no need to suspend
            seen = []
            d.addBoth(seen.append)
            return _answer(seen[0])
        key = b"pam_auth:%d" % next(_ids)  # a string: other modules' ids are numbers
        self.context.pending[key] = d
        return key


class _Standalone(_Login):
    """In the instance's own thread: the login runs on the reactor (and
    PAM in the pool); this thread waits for the answer."""

    POLL = 0.1   # how often a waiting thread checks must_stop

    def login(self, auth, service, user, password):
        answers = queue.SimpleQueue()

        def on_reactor():
            maybeDeferred(auth.login, service, user, password, None).addBoth(answers.put)

        self.context.parts.reactor.callFromThread(on_reactor)
        must_stop = self.context.must_stop
        while True:
            try:
                answer = answers.get(timeout=self.POLL)
                break
            except queue.Empty:
                if must_stop is not None and must_stop():
                    answer = (False, b"the server is stopping")
                    break
        return _answer(answer)

    @staticmethod
    def wait(id_):  # never reached: start always answers
        return False, b"pam_auth: nothing to wait for"


def install(context):
    """Create the ``pam_auth`` global."""
    if context.standalone:
        helper = _Standalone(context)
        wait = helper.wait
    else:
        helper = _Reactive(context)
        wait = context.wait
    context.runtime.globals()[b"pam_auth"] = context.runtime.execute(
        _PAM_AUTH, helper.start, wait, USAGE)
