"""Autobahn's connection timers, at the time they are asked for.

Autobahn runs every per-connection timer (the opening handshake timeout,
the keepalive ping and its timeout, the closing handshake timeout) through
its factory's ``_batched_timer``, a txaio batched timer that truncates each
deadline to the whole second (txaio 26.6: ``int(now + delay) * 1000``): a
timer fires up to a second early, and one under a second fires at once, so
a 0.5 s ``ping_timeout`` would drop every client before its pong could
arrive. :class:`ExactTimer` takes its place with the reactor's own
``callLater``: one reactor timer per connection timer, never per message.
"""


class ExactTimer:
    """What Autobahn asks of ``factory._batched_timer``: ``call_later``,
    returning a call it may ``cancel`` even after it has run."""

    def __init__(self, clock):
        self.clock = clock

    def call_later(self, delay, func, *args, **kwargs):
        return _Call(self.clock.callLater(delay, func, *args, **kwargs))


class _Call:
    __slots__ = ("delayed",)

    def __init__(self, delayed):
        self.delayed = delayed

    def cancel(self):
        if self.delayed.active():
            self.delayed.cancel()
