"""pam_auth (spec §6.6): logins against real PAM with a real system user,
through a LAppS-protocol service and a standalone one; the allow-list, the
failure padding, the rate limits, and a reactor that keeps serving while PAM
works. The end-to-end tests need root (useradd, /etc/pam.d); the limiter's
own tests below them run anywhere."""

import asyncio
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import cbor2
import pytest
import websockets
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from conftest import REPO, TEST_APPS, Server, reactive, write_config
from lapps.services import pam_auth as pam_service

PAM_D = Path("/etc/pam.d")
SLOW = "lapps-test-slow"     # a stack whose every call spends 1 s in pam_exec
WINDOW, MAX_FAILURES, PADDING = 2.0, 3, 0.5
FAILED = [False, "authentication failed"]
TOO_MANY = [False, "too many attempts"]
NOT_ALLOWED = [False, "PAM service not allowed"]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: creates a system user (useradd) and installs "
                              "/etc/pam.d/lapps, as CI does")


# Fixtures: users, PAM stacks and one server for the module.

def _run(*argv, stdin=None):
    subprocess.run(argv, input=stdin, check=True, capture_output=True)


@pytest.fixture(scope="module")
def users(request):
    """Two real users, ``{"a": (name, password), "b": ...}``, removed afterwards."""
    made = {}

    def remove():
        for name, _ in made.values():
            subprocess.run(["userdel", "-r", name], capture_output=True)
    request.addfinalizer(remove)
    for key in ("a", "b"):
        name, password = f"lpt{key}{os.getpid() % 100000}", secrets.token_urlsafe(12)
        _run("useradd", "-m", "-s", "/usr/sbin/nologin", name)
        made[key] = (name, password)
        _run("chpasswd", stdin=f"{name}:{password}\n".encode())
    return made


@pytest.fixture(scope="module")
def pam_stacks(request, tmp_path_factory):
    """The shipped etc/pam.d/lapps as /etc/pam.d/lapps and a slow variant;
    whatever was there is put back afterwards."""
    backup = tmp_path_factory.mktemp("pam.d-backup")
    names = ("lapps", SLOW)

    def restore():
        for name in names:
            (PAM_D / name).unlink(missing_ok=True)
            if (backup / name).exists():
                shutil.move(backup / name, PAM_D / name)
    request.addfinalizer(restore)
    for name in names:
        if (PAM_D / name).exists():
            shutil.move(PAM_D / name, backup / name)
    shutil.copyfile(REPO / "etc" / "pam.d" / "lapps", PAM_D / "lapps")
    (PAM_D / SLOW).write_text("auth     required   pam_exec.so quiet /bin/sleep 1\n"
                              + (PAM_D / "lapps").read_text())


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, users, pam_stacks):
    name, password = users["a"]
    services = {
        "pamprobe": reactive("/pamprobe", protocol="LAppS", instances=2, preload=["pam_auth"]),
        "echo": reactive("/echo"),
        "pamsolo": {"standalone": True, "preload": ["pam_auth"], "settings": {"attempts": [
            ["lapps", name, password], ["lapps", "lpt-nosuch-solo", password],
            ["login", name, password]]}},
    }
    config = write_config(tmp_path_factory.mktemp("pam"), services, server={"pam_auth": {
        "services": ["lapps", SLOW], "min_failure_seconds": PADDING,
        "max_failures": MAX_FAILURES, "window_seconds": WINDOW, "threads": 2}},
        applications=TEST_APPS)
    s = Server(config)
    request.addfinalizer(lambda: s.process.poll() is None and s.stop())
    return s


# Talking to pamprobe from a chosen loopback address (each test its own
# peer, so that their failures do not add up in the per-peer limit).

def call(method, *params):
    return cbor2.dumps({"lapps": 1, "method": method, "params": list(params)})


async def request(ws, method, *params):
    await ws.send(call(method, *params))
    return cbor2.loads(await ws.recv())["result"]


def connect(server, source, path="/pamprobe"):
    return websockets.connect(server.url(path), local_addr=(source, 0))


def login(server, source, *credentials):
    """``(answer, seconds)`` of one login from ``source``."""
    async def go():
        async with connect(server, source) as ws:
            started = time.monotonic()
            answer = await request(ws, "login", *credentials)
            return answer, time.monotonic() - started
    return asyncio.run(go())


def poll_until_true(server, source, *credentials, limit=WINDOW + 3):
    """Log in every 0.1 s until it succeeds; the seconds it took."""
    started = time.monotonic()
    while True:
        answer, _ = login(server, source, *credentials)
        if answer == [True]:
            return time.monotonic() - started
        assert answer == TOO_MANY
        assert time.monotonic() - started < limit, "the limit did not reset"
        time.sleep(0.1)


@needs_root
def test_the_right_password_logs_in(server, users):
    name, password = users["a"]
    assert login(server, "127.0.0.11", "lapps", name, password)[0] == [True]


@needs_root
def test_wrong_password_and_unknown_user_give_the_same_padded_answer(server, users):
    name, password = users["a"]
    wrong, wrong_took = login(server, "127.0.0.12", "lapps", name, password + "x")
    unknown, unknown_took = login(server, "127.0.0.12", "lapps", "lpt-nosuch-user", password)
    assert wrong == unknown == FAILED
    assert wrong_took >= PADDING and unknown_took >= PADDING


@needs_root
def test_a_service_not_allowed_is_refused_without_pam(server, users):
    import pam
    name, password = users["a"]
    # PAM itself would accept this login on "login" (a stack every Debian has) ...
    assert pam.authenticate(name, password, service="login", resetcreds=False)
    # ... but it is not in pam_auth.services: refused at once, no PAM call, no padding
    answer, took = login(server, "127.0.0.13", "login", name, password)
    assert answer == NOT_ALLOWED and took < PADDING
    server.wait_for(r"on service 'login' from tcp4:127\.0\.0\.13:\d+: PAM service not allowed")


@needs_root
def test_wrong_usage_gets_the_usage_text(server):
    async def go():
        async with connect(server, "127.0.0.19") as ws:
            return await request(ws, "usage")

    usage = "usage: pam_auth:login(service, username, password), three non-empty strings"
    assert asyncio.run(go()) == [[False, usage]] * 8 + [[False, usage + " without NUL bytes"]]


@needs_root
def test_the_per_user_limit_trips_and_resets(server, users):
    name, password = users["b"]
    first = time.monotonic()
    for _ in range(MAX_FAILURES):
        assert login(server, "127.0.0.14", "lapps", name, "wrong")[0] == FAILED
    # the right password is refused now, at once, from any peer
    answer, took = login(server, "127.0.0.14", "lapps", name, password)
    assert answer == TOO_MANY and took < PADDING
    assert login(server, "127.0.0.15", "lapps", name, password)[0] == TOO_MANY
    poll_until_true(server, "127.0.0.15", "lapps", name, password)
    # the window slides: the limit lifts when the first failure is WINDOW old
    assert WINDOW < time.monotonic() - first < WINDOW + 1.5


@needs_root
def test_the_per_peer_limit_trips_and_resets(server, users):
    name, password = users["a"]
    first = time.monotonic()
    for i in range(MAX_FAILURES):  # a different unknown user each time: no user limit trips
        assert login(server, "127.0.0.16", "lapps", f"lpt-nosuch-{i}", "x")[0] == FAILED
    assert login(server, "127.0.0.16", "lapps", name, password)[0] == TOO_MANY
    assert login(server, "127.0.0.17", "lapps", name, password)[0] == [True]  # another peer
    poll_until_true(server, "127.0.0.16", "lapps", name, password)
    assert WINDOW < time.monotonic() - first < WINDOW + 1.5


@needs_root
def test_other_connections_are_served_while_pam_works(server, users):
    name, password = users["a"]

    async def go():
        async with connect(server, "127.0.0.18") as slow, \
                websockets.connect(server.url("/echo")) as echo:
            started = time.monotonic()
            await slow.send(call("login", SLOW, name, password))
            await asyncio.to_thread(server.wait_for, r"pamprobe::login ")
            await asyncio.sleep(0.2)           # PAM is now in pam_exec's sleep
            echo_started = time.monotonic()
            await echo.send("ping")
            assert await echo.recv() == "ping"
            echo_took = time.monotonic() - echo_started
            answer = cbor2.loads(await slow.recv())["result"]
            return answer, echo_took, time.monotonic() - started, echo_started - started

    answer, echo_took, login_took, echo_at = asyncio.run(go())
    assert answer == [True] and login_took >= 1.0
    assert echo_at < login_took, "the echo was not sent while the login was in progress"
    assert echo_took < 0.1, f"the echo took {echo_took:.3f} s while PAM worked"


@needs_root
def test_a_standalone_instance_blocks_its_thread_for_the_answer(server):
    assert server.wait_for(r"pamsolo 1 (\S+) (.*)").groups() == ("true", "nil")
    assert server.wait_for(r"pamsolo 2 (\S+) (.*)").groups() == ("false", "authentication failed")
    assert server.wait_for(r"pamsolo 3 (\S+) (.*)").groups() == ("false", "PAM service not allowed")


@needs_root
def test_results_are_logged_and_passwords_never(server, users):
    name, password = users["a"]
    assert login(server, "127.0.0.20", "lapps", name, password)[0] == [True]
    assert login(server, "127.0.0.20", "lapps", "lpt-nosuch-log", password)[0] == FAILED
    server.wait_for(r"pamsolo 3 ")
    server.stop()
    text = "\n".join(server.lines)
    assert f"PAM login of '{name}' on service 'lapps' from tcp4:127.0.0.20:" in text
    assert "PAM login of 'lpt-nosuch-log' on service 'lapps' from tcp4:127.0.0.20:" in text
    assert "from None: authentication failed" in text  # the standalone instance
    for _, password in users.values():
        assert password not in text


# The limiter itself, on a fake clock and a fake pool (no root, no PAM).

class _Reactor(Clock):
    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)

    def getThreadPool(self):
        return _Pool()


class _Pool:
    """Runs nothing until ``finish`` is called."""

    started = False

    def __init__(self):
        self.calls = []

    def start(self):
        self.started = True

    def stop(self):
        self.started = False

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        self.calls.append((on_result, f, args, kwargs))

    def finish(self):
        calls, self.calls = self.calls, []
        for on_result, f, args, kwargs in calls:
            try:
                on_result(True, f(*args, **kwargs))
            except Exception:
                on_result(False, Failure())


@pytest.fixture
def limiter():
    """A started PamAuth whose PAM accepts only ("lapps", "u", "right")."""
    reactor, clock = _Reactor(), [100.0]
    seen = []

    def authenticate(service, user, password):
        seen.append((service, user))
        if user == b"boom":
            raise RuntimeError("libpam is gone")
        ok = (user, password) == (b"u", b"right")
        return ok, 0 if ok else 7, "Success" if ok else "Authentication failure"

    auth = pam_service.PamAuth({"min_failure_seconds": 1.0, "max_failures": 2,
                                "window_seconds": 10}, reactor, authenticate,
                               now=lambda: clock[0])
    auth.pool = _Pool()
    auth.startService()

    def advance(seconds):
        clock[0] += seconds
        reactor.advance(seconds)

    def attempt(user, password, peer="tcp4:10.0.0.1:4000", service=b"lapps"):
        d = auth.login(service, user, password, peer)
        auth.pool.finish()
        answers = []
        d.addBoth(answers.append)
        return answers
    yield auth, attempt, advance, seen
    auth.stopService()


def test_failures_are_padded_on_the_reactor(limiter):
    auth, attempt, advance, _ = limiter
    answers = attempt(b"u", b"wrong")
    assert answers == []
    advance(0.99)
    assert answers == []
    advance(0.01)
    assert answers == [(False, pam_service.FAILED)]
    assert attempt(b"u", b"right") == [(True,)]  # a success is not padded


def test_a_crashing_pam_call_is_a_plain_failure(limiter):
    _, attempt, advance, _ = limiter
    answers = attempt(b"boom", b"x")
    advance(1)
    assert answers == [(False, pam_service.FAILED)]


def test_limits_count_calls_under_way_and_age_out(limiter):
    auth, attempt, advance, seen = limiter
    d1 = auth.login(b"lapps", b"x", b"p", "tcp4:10.0.0.9:1")
    d2 = auth.login(b"lapps", b"x", b"p", "tcp4:10.0.0.9:2")  # same user and peer, in flight
    refused = []
    auth.login(b"lapps", b"x", b"p", "tcp4:10.0.0.8:3").addBoth(refused.append)
    assert refused == [(False, pam_service.TOO_MANY)] and len(auth.pool.calls) == 2
    auth.pool.finish()
    advance(1)
    assert [d1.called, d2.called] == [True, True]
    del seen[:]
    advance(8.9)
    assert attempt(b"x", b"p", peer=None) == [(False, pam_service.TOO_MANY)] and seen == []
    advance(0.2)  # the two failures are now more than 10 s old
    assert attempt(b"u", b"right", peer="tcp4:10.0.0.9:5") == [(True,)]


def test_peers_are_limited_by_address(limiter):
    _, attempt, advance, seen = limiter
    attempt(b"a", b"w", peer="tcp6:2001:db8::1:1000")
    attempt(b"b", b"w", peer="tcp6:2001:db8::2:1001")    # the same /64
    advance(1)
    assert attempt(b"u", b"right", peer="tcp6:2001:db8::3:1002") == [(False, pam_service.TOO_MANY)]
    assert attempt(b"u", b"right", peer="tcp6:2001:db9::1:1003") == [(True,)]
    assert pam_service.peer_key("tcp6:::ffff:10.1.2.3:80") == "10.1.2.3"
    assert pam_service.peer_key("tcp4:10.1.2.3:80") == "10.1.2.3"
    assert pam_service.peer_key(None) is None


def test_a_service_not_allowed_never_reaches_pam(limiter):
    _, attempt, _, seen = limiter
    assert attempt(b"u", b"right", service=b"sshd") == [(False, pam_service.NOT_ALLOWED)]
    assert seen == []


def test_stopping_answers_padded_failures_at_once(limiter):
    auth, attempt, _, _ = limiter
    answers = attempt(b"u", b"wrong")
    auth.stopService()
    assert answers == [(False, pam_service.STOPPING)]
    assert attempt(b"u", b"right") == [(False, pam_service.STOPPING)]
