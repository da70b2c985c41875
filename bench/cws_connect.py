#!/usr/bin/env python3
"""How fast ``cws`` opens connections, LAppS's way (spec §7.2).

    python3 bench/cws_connect.py [--instances 4] [--sockets 800] [--scheme wss]

One lapps server runs the echo (4 instances, over wss with certificates made
at run time); a second one runs ``tests/apps/cwsmany`` (LAppS's benchmark
pattern: ``cws:new`` in a loop, ``cws:eventLoop()`` every 10 creations) in
``--instances`` standalone instances of ``--sockets`` each, verifying the
echo's certificate. Each instance reports the milliseconds from its first
``cws:new`` until every socket has opened (``onopen``) or failed; the
output is the slowest instance's time and sockets per second over all.
Defaults are LAppS's demo: 4 × 800 wss.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run  # noqa: E402

SETTLED = re.compile(r"cwsmany: open (\d+) failed (\d+) outside eventLoop \d+")
TOOK = re.compile(r"cwsmany: all settled (\d+(?:\.\d+)?) ms")


def config(path, port, services, tls, certs):
    server = {"ip": "127.0.0.1", "port": port, "tls": tls,
              "tls_certificates": certs, "workers": {"max_connections": 20000}}
    path.write_text(json.dumps({"server": server, "directories": {
        "applications": str(run.REPO / "tests" / "apps")}, "services": services}))
    return run.twistd() + ["-n", "--pidfile=", "lapps", "--config", str(path)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", type=int, default=4)
    p.add_argument("--sockets", type=int, default=800, help="per instance")
    p.add_argument("--scheme", choices=("ws", "wss"), default="wss")
    args = p.parse_args()
    tls = args.scheme == "wss"
    procs = run.Processes()
    with tempfile.TemporaryDirectory(prefix="lapps-cws-connect-") as tmp:
        tmp = Path(tmp)
        certs = run.make_certs(tmp)
        echo_port = run.free_port()
        echo = procs.start(config(tmp / "echo.json", echo_port, {"echo": {
            "instances": 4, "protocol": "raw", "request_target": "/echo"}}, tls, certs),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            run.wait_listening(echo, echo_port, what="echo")
            client = procs.start(config(tmp / "client.json", run.free_port(), {"cwsmany": {
                "standalone": True, "instances": args.instances,
                "preload": ["cws", "nap", "time"],
                "settings": {"target": f"{args.scheme}://127.0.0.1:{echo_port}/echo",
                             "max_connections": args.sockets}}}, False, certs),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            settled, took = [], []
            for line in client.stdout:
                if m := SETTLED.search(line):
                    settled.append((int(m.group(1)), int(m.group(2))))
                elif m := TOOK.search(line):
                    took.append(float(m.group(1)))
                    if len(took) == args.instances:
                        break
            # what it prints from now on (rates, then the closes at stop) must not fill the pipe
            threading.Thread(target=client.stdout.read, daemon=True).start()
            opened = sum(o for o, _ in settled)
            failed = sum(f for _, f in settled)
            slowest = max(took)
            print(f"{args.instances} × {args.sockets} {args.scheme} sockets: {opened} open, "
                  f"{failed} failed; all settled {slowest:.0f} ms after the first cws:new "
                  f"(slowest instance), {opened / slowest * 1000:,.0f} sockets/s")
        finally:
            procs.stop_all()


if __name__ == "__main__":
    main()
