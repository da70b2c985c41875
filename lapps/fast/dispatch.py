"""A cheaper event dispatch for the epoll reactor, same log context.

Twisted's epoll reactor runs every I/O event through
``log.callWithLogger(selectable, ...)``: it asks the selectable for its
``logPrefix()``, copies the current log context, adds ``system`` to the
copy and pushes it through two layers of context trackers for the length
of the call, so that legacy log lines (``twisted.python.log.msg``/``err``)
made while handling the event say which connection they are about. That
is ~1.4 µs per event on the bench machine, several percent of a message.

:func:`install` gives a running :class:`EPollReactor` a ``doIteration``
that, for lapps's own transports (the listener's :class:`EagerServer`,
whose ``logPrefix`` is fixed when it is made, and the ``cws`` clients'
:class:`EagerClient`, which drops its cache when Twisted renames it on
connecting), pushes a context built once per transport instead: the same
``system`` value, the same base context, the same catching and logging of
what escapes the dispatch. Every other selectable (listening ports, Redis
clients, the waker) goes through ``callWithLogger`` as before. So log
events do not change at all: ``lapps.*`` events never read this context
(their ``log_system`` comes from their namespace), and legacy lines made
during a lapps connection's event still carry that connection's
``system``.

It is contained: it changes nothing unless asked (``twistd lapps`` and a
worker ask when the server key ``fast_path`` is on, through
:meth:`lapps.fast.Wing.install_dispatch`; so may an embedding application,
with its service's ``fast``), only an :class:`EPollReactor` of that exact class
is changed (``--reactor select``, ``poll``, ... and subclasses are left
alone), and when the context tracker is not Twisted's threaded one (an
application replaced it), every event takes ``callWithLogger``.
"""

import errno

from twisted.logger import Logger
from twisted.python import context, log
from twisted.python.log import ILogContext

from lapps.fast.client import EagerClient
from lapps.fast.transport import EagerServer

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # no epoll (not Linux): nothing to install
    EPollReactor = None

events = Logger(namespace="lapps.reactor")

def install(reactor):
    """Give ``reactor`` the cheaper dispatch if it is an :class:`EPollReactor`
    (of that exact class; the internals it relies on are checked with the
    others, :mod:`lapps.fast.private_names`); return whether it has it.
    Idempotent."""
    if type(reactor) is not EPollReactor:
        events.info("{reactor} keeps its own event dispatch", lapps_event="reactor.dispatch",
                    reactor=type(reactor).__name__, lapps_dispatch=False)
        return False
    if not isinstance(reactor.__dict__.get("doIteration"), _Dispatch):
        reactor.doIteration = _Dispatch(reactor)
        events.info("{reactor} dispatches the events of lapps connections under a cached "
                    "log context", lapps_event="reactor.dispatch", reactor="EPollReactor",
                    lapps_dispatch=True)
    return True


class _Dispatch:
    """``EPollReactor.doPoll``, with :class:`EagerServer` and
    :class:`EagerClient` events dispatched under a log context cached on the
    transport."""

    def __init__(self, reactor):
        self.reactor = reactor

    def __call__(self, timeout):
        reactor = self.reactor
        if timeout is None:
            timeout = -1  # wait indefinitely
        try:
            ready = reactor._poller.poll(timeout, len(reactor._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables, dispatch = reactor._selectables, reactor._doReadOrWrite
        tracker = context.theContextTracker
        if type(tracker) is context.ThreadedContextTracker:
            contexts = tracker.currentContext().contexts
            base = context.get(ILogContext)
        else:
            contexts = None
        for fd, event in ready:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            kind = type(selectable)
            if contexts is None or (kind is not EagerServer and kind is not EagerClient):
                log.callWithLogger(selectable, dispatch, selectable, fd, event)
                continue
            cached = selectable.log_context
            if cached is None or cached[0] is not base:
                cached = selectable.log_context = _context_for(selectable, base)
            contexts.append(cached[1])
            try:
                dispatch(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:  # as callWithLogger: logged, and the loop goes on
                log.err(system=cached[2])
            finally:
                contexts.pop()


def _context_for(selectable, base):
    """(base, the context ``callWithLogger`` would push, the system) for a transport."""
    system = selectable.logPrefix()
    pushed = dict(base)
    pushed["system"] = system
    return base, {ILogContext: pushed}, system
