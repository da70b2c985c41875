"""``lapps check`` in a child process: for the callers that hold no Lua
(the supervisor) or must not wait on it (a deploy's check of a new
service, whose module could hang at load)."""

import os
import subprocess
import sys

from twisted.internet import defer, protocol

from lapps.config import ConfigError

COMMAND = [sys.executable, "-m", "lapps.cli", "check"]


def _too_slow(path, timeout):
    return ConfigError([f"{path}: the service modules did not load within {timeout} s"])


def _failed(path, code, output):
    lines = output.splitlines()
    return ConfigError(lines or [f"{path}: lapps check exited with {code}"])


def check_in_child_process(path, timeout=None):
    """Block until ``lapps check PATH`` has run: :class:`ConfigError` with
    its lines if a module does not load, Redis does not answer, ..."""
    try:
        result = subprocess.run(COMMAND + [path], capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        raise _too_slow(path, timeout) from None
    if result.returncode != 0:
        raise _failed(path, result.returncode, result.stdout + result.stderr)


class _Output(protocol.ProcessProtocol):
    def __init__(self, done):
        self.done, self.chunks = done, []

    def outReceived(self, data):
        self.chunks.append(data)

    errReceived = outReceived

    def processEnded(self, reason):
        if not self.done.called:
            self.done.callback((reason.value.exitCode,
                                b"".join(self.chunks).decode("utf-8", "replace")))


def check_in_child(path, timeout, reactor):
    """The same without blocking: a Deferred that fires once the check
    passed, or fails with :class:`ConfigError`. Cancelling it (the server
    stops) or ``timeout`` seconds kill the child."""
    ended = defer.Deferred()
    child = reactor.spawnProcess(_Output(ended), COMMAND[0], COMMAND + [path],
                                 env=dict(os.environ), childFDs={0: "w", 1: "r", 2: "r"})

    def kill(_):
        try:
            child.signalProcess("KILL")
        except OSError:  # ended meanwhile
            pass

    checked = defer.Deferred(canceller=kill)

    def ended_with(result):
        code, output = result
        if not checked.called:
            if code == 0:
                checked.callback(None)
            else:
                checked.errback(_failed(path, code, output))

    def too_slow(result, timeout):
        raise _too_slow(path, timeout)

    ended.addCallback(ended_with)
    return checked.addTimeout(timeout, reactor, onTimeoutCancel=too_slow)
