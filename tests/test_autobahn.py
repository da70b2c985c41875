"""RFC 6455 conformance of the Lua echo service: the Autobahn testsuite
(cases 1-7, 9 and 10) through ../shared/tools/autobahn-conformance."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, reactive

TOOL = Path(os.environ.get("LAPPS_SHARED", REPO.parent / "shared")) / "tools" / "autobahn-conformance"
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]


def test_autobahn_cases_pass_against_the_lua_echo(start_server, tmp_path):
    server = start_server({"echo": reactive("/echo", instances=4)})
    selection = [arg for case in CASES for arg in ("-i", case)]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [sys.executable, str(TOOL), server.url("/echo"), "-o", str(tmp_path / "report"), *selection],
        capture_output=True, text=True, timeout=900, env=env)
    print(result.stdout, result.stderr)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary.endswith(" passed, 0 failed"), summary
    assert int(summary.split()[1]) >= 300
