"""The events of a server run with ``--logger lapps.logs.json_lines``, read
from its output lines: what the logging, access log, metrics, backpressure
and fast path tests check of what the server did."""

import json
import re


def events(server, name=None):
    """The events the server logged so far, or those named ``name``."""
    found = []
    for line in server.lines:
        if line.startswith("{"):
            event = json.loads(line)
            if "lapps_event" in event and (name is None or event["lapps_event"] == name):
                found.append(event)
    return found


def wait_event(server, name, **fields):
    """The first ``name`` event (arrived or arriving) with these field values."""
    pattern = re.compile(rf'"lapps_event": "{re.escape(name)}"')
    count = 1
    while True:
        server.wait_for(pattern, count=count, timeout=60)
        matching = [e for e in events(server, name)
                    if all(e.get(k) == v for k, v in fields.items())]
        if matching:
            return matching[0]
        count += 1
