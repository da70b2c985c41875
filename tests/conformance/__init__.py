"""The Autobahn testsuite against lapps: the echo service it is run against,
the conformance tool (../shared/tools/autobahn-conformance, which drives the
kosoku client), and a socat bridge for wss, since kosoku has no TLS. Used by
tests/test_autobahn.py and by the full run, tests/conformance/full.py."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, Server, reactive

TOOL = Path(os.environ.get("LAPPS_SHARED", REPO.parent / "shared")) / "tools" / "autobahn-conformance"
#: The service under test: the shipped echo, with permessage-deflate (cases 12
#: and 13) and no keepalive pings: a suite case ends at the first ping it did
#: not ask for (Autobahn's ``Case.onPing``), and over wss many of the 12.x cases
#: run longer than the default ``ping_interval`` of 30 s.
ECHO = {"echo": reactive("/echo", instances=4, permessage_deflate=True, ping_interval=0)}
_SOCAT_LISTENING = re.compile(r"listening on AF=2 (\S+):(\d+)")


def run(url, outdir, tool_args, timeout=None):
    """The tool against ``url``, its report in ``outdir``; kosoku is found
    beside this Python. Returns the CompletedProcess, output captured."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([sys.executable, str(TOOL), url, "-o", str(outdir), *tool_args],
                          capture_output=True, text=True, timeout=timeout, env=env)


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
