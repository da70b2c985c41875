#!/usr/bin/env python3
"""The whole Autobahn testsuite (cases 1-13, 517 cases) against the shipped
echo service with permessage-deflate on, over ws or, with --wss, over TLS
through a socat bridge. About 7 minutes over ws and 9 over wss on two cores:
too long for the test suite (tests/test_autobahn.py runs a subset), so apart.

Usage, from the repository root (socat: bash tests/setup.sh):
  python3 tests/conformance/full.py [--wss] [-o DIR] [TOOL ARGS...]

It starts its own server (twistd) on a loopback port, runs
../shared/tools/autobahn-conformance with the TOOL ARGS (e.g. -i '12.*' for
a part, -p 2 for two cases at a time), prints the tool's summary, stops the
server and exits with the tool's status: 0 when every case passed. The
report goes to DIR (default: reports/conformance-ws or -wss).
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import REPO, Server, write_config  # noqa: E402
from support.conformance import ECHO, missing_tool, run, socat_bridge  # noqa: E402
from support.pki import PKI  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wss", action="store_true", help="over TLS, through socat")
    parser.add_argument("-o", "--outdir", help="the report's folder")
    args, tool_args = parser.parse_known_args()
    if missing_tool():
        sys.exit(missing_tool())
    outdir = args.outdir or REPO / "reports" / ("conformance-wss" if args.wss else "conformance-ws")
    with tempfile.TemporaryDirectory(prefix="lapps-conformance-") as scratch:
        pki = PKI(scratch) if args.wss else None
        server = Server(write_config(scratch, ECHO, pki.server() if pki else None))
        bridge = None
        try:  # (the server stops also when the bridge cannot start)
            bridge = socat_bridge(server, pki.ca) if pki else None
            result = run((bridge or server).url("/echo"), outdir, tool_args)
        finally:
            for process in (bridge, server):
                if process is not None:
                    process.stop()
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
