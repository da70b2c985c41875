"""Scripts of tests/browser run by node (playwright-core driving Chromium,
and lapps-client.js's codec), for the browser and status page tests."""

import json
import os
import queue
import shutil
import signal
import subprocess
import threading

from conftest import REPO


BROWSER = REPO / "tests" / "browser"
SETUP = "run `bash tests/browser/setup.sh` (as root) first"


class NodeScript:
    """``node tests/browser/SCRIPT ARGS``, running: a test can act on each
    line it prints (:meth:`line`) before it ends (:meth:`finish`). As a
    context manager, it is killed on exit if it still runs."""

    def __init__(self, script, *args):
        executable = shutil.which("node")
        assert executable, f"node is not installed: {SETUP}"
        self.script = script
        # Its own process group, so that a kill also ends the Chromium it started.
        self.process = subprocess.Popen([executable, str(BROWSER / script), *map(str, args)],
                                        cwd=BROWSER, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
        self.stdout, self.stderr, self._lines = [], [], queue.Queue()
        self._readers = [threading.Thread(target=self._drain, args=(stream, kept), daemon=True)
                         for stream, kept in ((self.process.stdout, self.stdout),
                                              (self.process.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    def _drain(self, stream, kept):
        for text in stream:
            kept.append(text)
            if kept is self.stdout:
                self._lines.put(text)

    def output(self):
        return f"stdout:\n{''.join(self.stdout)}\nstderr:\n{''.join(self.stderr)}"

    def line(self, timeout):
        """The next line the script prints, as JSON."""
        try:
            return json.loads(self._lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"{self.script} printed no line for {timeout}s\n"
                                 f"{self.output()}") from None

    def finish(self, timeout):
        """Wait for the end: (exit code, last stdout line as JSON, the whole output)."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.script} timed out after {timeout}s\n"
                                 f"{self.output()}") from None
        for reader in self._readers:
            reader.join()
        output = self.output()
        assert self.stdout, \
            f"{self.script} printed nothing (exit {self.process.returncode})\n{output}"
        return self.process.returncode, json.loads(self.stdout[-1]), output

    def kill(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.kill()
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()


def node(script, *args, timeout):
    """Run ``node tests/browser/SCRIPT ARGS``; return (exit code, last stdout
    line as JSON, the whole output)."""
    with NodeScript(script, *args) as running:
        return running.finish(timeout)
