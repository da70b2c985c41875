"""The ``pam_auth`` service: system logins for Lua services through PAM.

Every check runs on the reactor thread; only PAM itself runs elsewhere, in a
small thread pool of this service's own (python-pam's ctypes calls release
the GIL), with a fresh authenticator per call. A login is answered
``(True,)`` or ``(False, reason)``:

- a PAM service name outside the configured ``services`` is refused at once,
  without calling PAM;
- a peer address or a user name with ``max_failures`` failures (attempts in
  progress included) in the last ``window_seconds`` is refused at once with
  "too many attempts", without calling PAM, until its failures age out;
- any PAM failure (wrong password, unknown user, expired account, a broken
  stack) is answered with the same reason, padded by a reactor timer to at
  least ``min_failure_seconds`` from the start of the attempt, so its timing
  does not tell which it was.

Passwords are never logged, never kept beyond the call and never part of an
error text.
"""

import collections
import ipaddress
import time

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from lapps import metrics

log = Logger(namespace="lapps.pam_auth")

NOT_ALLOWED = b"PAM service not allowed"
TOO_MANY = b"too many attempts"
FAILED = b"authentication failed"
STOPPING = b"the server is stopping"

#: The server-section defaults (``lapps.config`` validates the same keys).
DEFAULTS = {"services": ["lapps"], "min_failure_seconds": 1.0, "max_failures": 5,
            "window_seconds": 60.0, "threads": 2}


def pam_authenticate(service: bytes, user: bytes, password: bytes):
    """One PAM transaction (pam_start, pam_authenticate, pam_acct_mgmt,
    pam_end) with a fresh authenticator; returns ``(ok, code, PAM's text)``.
    Runs in a pool thread."""
    import pam
    authenticator = pam.pam()
    ok = authenticator.authenticate(user, password, service=service, resetcreds=False)
    reason = authenticator.reason
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return bool(ok), authenticator.code, reason


def peer_key(peer):
    """The address a peer is rate-limited by: its IP without the port
    (``tcp4:127.0.0.1:5555`` → ``127.0.0.1``), an IPv4-mapped IPv6 address as
    IPv4, other IPv6 addresses by their /64 (one host often holds a whole
    /64). ``None`` (no peer: a standalone instance, or a callback that no
    connection triggered) stays ``None``: only the per-user limit applies."""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0] if kind in ("tcp4", "tcp6") else peer
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return peer
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class PamAuth(Service):
    """Allow-list, rate limits, padding and the PAM thread pool."""

    name = "pam_auth"

    def __init__(self, settings, reactor, authenticate=pam_authenticate, now=time.monotonic):
        settings = dict(DEFAULTS, **(settings or {}))
        self.services = frozenset(s.encode() for s in settings["services"])
        self.min_failure_seconds = float(settings["min_failure_seconds"])
        self.max_failures = int(settings["max_failures"])
        self.window = float(settings["window_seconds"])
        self.reactor, self._authenticate, self._now = reactor, authenticate, now
        self.pool = ThreadPool(minthreads=0, maxthreads=int(settings["threads"]),
                               name="pam_auth")
        self._failures = {}                          # key -> deque of failure times
        self._in_flight = collections.Counter()      # key -> PAM calls under way
        self._padding = {}                           # DelayedCall -> its Deferred
        self._purge = None

    # Life.

    def startService(self):
        super().startService()
        self.pool.start()
        self._purge = self.reactor.callLater(self.window, self._purge_expired)

    def stopService(self):
        """Answer padded failures at once, then stop the pool without
        blocking the reactor (a PAM call under way is let finish)."""
        super().stopService()
        if self._purge is not None and self._purge.active():
            self._purge.cancel()
        for timer, d in list(self._padding.items()):
            timer.cancel()
            del self._padding[timer]
            d.callback((False, STOPPING))
        if not self.pool.started:
            return succeed(None)
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.pool.stop)

    # The login (on the reactor thread).

    def login(self, service: bytes, user: bytes, password: bytes, peer=None) -> Deferred:
        """A Deferred of ``(True,)`` or ``(False, reason)``; never fails.
        Arguments are non-empty byte strings (the Lua module checks usage)."""
        keys = [("user", user)]
        address = peer_key(peer)
        if address is not None:
            keys.append(("peer", address))
        if service not in self.services:
            return self._refuse(service, user, peer, NOT_ALLOWED, "the PAM service is not in "
                                "the server's pam_auth.services")
        if not self.running:
            return self._refuse(service, user, peer, STOPPING, "pam_auth is not running")
        now = self._now()
        for key in keys:
            if self._count(key, now) >= self.max_failures:
                return self._refuse(service, user, peer, TOO_MANY,
                                    f"{key[0]} has {self.max_failures} failures or attempts "
                                    f"under way in {self.window:g} s")
        for key in keys:
            self._in_flight[key] += 1
        started = now
        d = deferToThreadPool(self.reactor, self.pool, self._authenticate, service, user, password)
        d.addCallbacks(self._answered, self._crashed,
                       callbackArgs=(service, user, peer, keys, started),
                       errbackArgs=(service, user, peer, keys, started))
        return d

    def _count(self, key, now):
        """Failures of ``key`` in the window, plus its calls under way."""
        times = self._failures.get(key)
        if times is not None:
            while times and times[0] <= now - self.window:
                times.popleft()
            if not times:
                del self._failures[key]
        return (len(times) if times else 0) + self._in_flight.get(key, 0)

    def _done(self, keys):
        for key in keys:
            self._in_flight[key] -= 1
            if self._in_flight[key] <= 0:
                del self._in_flight[key]

    def _answered(self, outcome, service, user, peer, keys, started):
        ok, code, detail = outcome
        self._done(keys)
        if ok:
            self._log(service, user, peer, True, None, detail)
            return (True,)
        return self._failed(service, user, peer, keys, started, f"PAM {code}: {detail}")

    def _crashed(self, failure, service, user, peer, keys, started):
        self._done(keys)
        error = failure.value
        return self._failed(service, user, peer, keys, started,
                            f"PAM call raised {type(error).__name__}: {error}")

    def _failed(self, service, user, peer, keys, started, detail):
        now = self._now()
        for key in keys:
            self._failures.setdefault(key, collections.deque(maxlen=self.max_failures)).append(now)
        self._log(service, user, peer, False, FAILED, detail)
        delay = started + self.min_failure_seconds - now
        if delay <= 0 or not self.running:
            return (False, FAILED)
        padded = Deferred()
        timer = self.reactor.callLater(delay, self._pad_over, padded)
        self._padding[timer] = padded
        return padded

    def _pad_over(self, padded):
        for timer, d in list(self._padding.items()):
            if d is padded:
                del self._padding[timer]
        padded.callback((False, FAILED))

    def _refuse(self, service, user, peer, reason, detail):
        self._log(service, user, peer, False, reason, detail)
        return succeed((False, reason))

    def _purge_expired(self):
        """Forget keys whose failures have all aged out (memory stays bounded
        by the keys seen in one window)."""
        now = self._now()
        for key in list(self._failures):
            self._count(key, now)
        if self.running:
            self._purge = self.reactor.callLater(self.window, self._purge_expired)

    def _log(self, service, user, peer, ok, reason, detail):
        text = lambda b: None if b is None else b.decode("utf-8", "replace")  # noqa: E731
        emit = log.info if ok else log.warn
        metrics.pam_logins.labels("ok" if ok else text(reason).lower().replace(" ", "_")).inc()
        emit("PAM login of {user!r} on service {service!r} from {peer}: "
             "{outcome} ({detail})", lapps_event="pam.result",
             service=text(service), user=text(user), peer=peer, ok=ok,
             outcome="ok" if ok else text(reason), reason=text(reason), detail=detail)
