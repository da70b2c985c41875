"""Scripts of tests/browser run by node (playwright-core driving Chromium,
and lapps-client.js's codec), for the browser and status page tests."""

import json
import os
import shutil
import signal
import subprocess

from conftest import REPO


BROWSER = REPO / "tests" / "browser"
SETUP = "run `bash tests/browser/setup.sh` (as root) first"


def node(script, *args, timeout):
    """Run ``node tests/browser/SCRIPT ARGS``; return (exit code, last stdout
    line as JSON, the whole output)."""
    executable = shutil.which("node")
    assert executable, f"node is not installed: {SETUP}"
    # Its own process group, so that a timeout also ends the Chromium it started.
    process = subprocess.Popen([executable, str(BROWSER / script), *map(str, args)],
                               cwd=BROWSER, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"{script} timed out after {timeout}s\n{stdout}\n{stderr}")
    lines = stdout.strip().splitlines()
    output = f"stdout:\n{stdout}\nstderr:\n{stderr}"
    assert lines, f"{script} printed nothing (exit {process.returncode})\n{output}"
    return process.returncode, json.loads(lines[-1]), output
