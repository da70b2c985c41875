"""systemd's ``Type=notify`` readiness protocol, with the standard library
only: one datagram (``READY=1``, ``STOPPING=1``, ...) to the Unix socket
named by ``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket).
Without ``$NOTIFY_SOCKET`` (not under systemd) nothing is sent."""

import os
import socket

from twisted.application.service import Service
from twisted.logger import Logger

log = Logger(namespace="lapps.systemd")


def _address(name):
    return "\0" + name[1:] if name.startswith("@") else name


def notify(state, environ=os.environ):
    """Send ``state`` (``"READY=1"``, newline-separated assignments) to
    systemd; True if it was sent, False without ``$NOTIFY_SOCKET`` or when
    the socket cannot be reached (logged: the server goes on)."""
    name = environ.get("NOTIFY_SOCKET")
    if not name:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode("utf-8"), _address(name))
    except OSError as e:
        log.warn("cannot notify systemd at {socket}: {error}", lapps_event="systemd.notify_failed",
                 socket=name, error=str(e), state=state)
        return False
    return True


class SystemdNotifier(Service):
    """Tells systemd ``READY=1`` once ``when_ready()`` (a Deferred: the
    server's port is bound and its services started) fires, and
    ``STOPPING=1`` when the stop begins. Start it after the server it
    reports on (``when_ready`` is asked at start)."""

    name = "systemd"

    def __init__(self, when_ready):
        self.when_ready = when_ready

    def startService(self):
        super().startService()
        self.when_ready().addCallback(self._ready)

    def _ready(self, _):
        if self.running and notify("READY=1"):
            log.info("told systemd: ready", lapps_event="systemd.ready")

    def stopService(self):
        super().stopService()
        notify("STOPPING=1")
