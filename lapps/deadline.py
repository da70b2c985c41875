"""Waiting for something with a time limit, without cancelling it.

``Deferred.addTimeout`` cancels what it waits for; at stop and at reload
that is wrong: a thread stuck in Lua, or a client that never answers,
goes on regardless, and whoever waits only needs to know that time ran out
(to report what was cut short and carry on)."""

from twisted.internet.defer import Deferred


def within(waited, seconds, clock):
    """A Deferred that fires with True once ``waited`` has fired (result or
    failure, which stays in ``waited``'s chain), or with False after
    ``seconds`` if that comes first. ``waited`` is never cancelled."""
    outcome = Deferred()
    timer = clock.callLater(seconds, outcome.callback, False)

    def fired(result):
        if timer.active():
            timer.cancel()
            outcome.callback(True)
        return result

    waited.addBoth(fired)
    return outcome
