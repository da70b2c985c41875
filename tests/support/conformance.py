"""The Autobahn testsuite against lapps: the echo service it is run against,
the conformance tool (../shared/tools/autobahn-conformance beside the
repository, or under $LAPPS_SHARED; it drives the kosoku client), a socat
bridge for wss, since kosoku has no TLS, and the check of a run's summary.
Used by tests/test_autobahn.py, tests/test_fastpath.py and the full run,
tests/conformance/full.py.

Without the tool those tests are skipped, saying where it was looked for;
in CI (``CI`` set, and not to "0" or "false") they fail with that message."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, Server, reactive

DEFAULT_SHARED = REPO.parent / "shared"
SHARED = Path(os.environ.get("LAPPS_SHARED") or DEFAULT_SHARED)
TOOL = SHARED / "tools" / "autobahn-conformance"
#: The service under test: the shipped echo, with permessage-deflate (cases 12
#: and 13) and no keepalive pings: a suite case ends at the first ping it did
#: not ask for (Autobahn's ``Case.onPing``), and over wss many of the 12.x cases
#: run longer than the default ``ping_interval`` of 30 s.
ECHO = {"echo": reactive("/echo", instances=4, permessage_deflate=True, ping_interval=0)}
#: The core cases: all but the compression cases, 12 and 13.
CORE = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
_SOCAT_LISTENING = re.compile(r"listening on AF=2 (\S+):(\d+)")


def in_ci(environ=os.environ):
    """Whether this is a CI run: ``CI`` set to anything but "", "0" or "false"."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false")


def missing_tool():
    """Why the tool cannot run here (a sentence naming the path looked for
    and how to provide it), or None when it is there."""
    if TOOL.is_file():
        return None
    shared = os.environ.get("LAPPS_SHARED")
    state = (f"set to {shared}" if shared
             else f"not set, so {DEFAULT_SHARED}, beside the repository")
    return (f"Autobahn conformance tool not found: looked for {TOOL} "
            f"($LAPPS_SHARED/tools/autobahn-conformance, with LAPPS_SHARED {state}); "
            f"provide it by putting the shared tools (tools/autobahn-conformance) in {SHARED}, "
            f"or by setting LAPPS_SHARED to a folder that holds tools/autobahn-conformance")


def require_tool():
    """Skip the calling test when the tool is missing, or fail it in CI."""
    reason = missing_tool()
    if reason is None:
        return
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def run(url, outdir, tool_args, timeout=None):
    """The tool against ``url``, its report in ``outdir``; kosoku is found
    beside this Python. Returns the CompletedProcess, output captured."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([sys.executable, str(TOOL), url, "-o", str(outdir), *tool_args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def assert_conformant(url, outdir, cases, minimum):
    """The tool's ``cases`` (ids or globs) against ``url``: at least
    ``minimum`` of them ran, and all passed."""
    require_tool()
    result = run(url, outdir, [arg for case in cases for arg in ("-i", case)], timeout=900)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (result.stdout.strip().splitlines() or [""])[-1]
    assert summary.endswith(" passed, 0 failed"), summary
    assert int(summary.split()[1]) >= minimum, summary


def socat_bridge(server, ca):
    """A socat that listens plain on a loopback port and relays each
    connection over TLS to ``server``, verifying its certificate against
    ``ca`` for the name localhost: a :class:`conftest.Server` (``url()``,
    ``stop()``). Fails when socat is not installed (tests/setup.sh does it)."""
    socat = shutil.which("socat")
    assert socat, "socat is missing: run `bash tests/setup.sh` as root"
    return Server(None, listening=_SOCAT_LISTENING, ready=None, argv=[
        socat, "-d", "-d", "TCP-LISTEN:0,bind=127.0.0.1,reuseaddr,fork,nodelay",
        f"OPENSSL:{server.host}:{server.port},cafile={ca},verify=1,commonname=localhost,nodelay"])
