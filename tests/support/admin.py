"""The admin listener as a test reaches it: its settings on a free port,
the port it logs once it is up, and /metrics scraped until a condition
holds (for the admin, reload and status page tests)."""

import http.client
import time

from prometheus_client.parser import text_string_to_metric_families

from redis_server import free_port


def admin_settings(**extra):
    return {"admin": {"ip": "127.0.0.1", "port": free_port(), **extra}}


def admin_port(server):
    """The admin port, from the line the admin listener logs when it is up."""
    return int(server.wait_for(r"admin interface on http://127\.0\.0\.1:(\d+)/").group(1))


def poll_metrics(port, condition, timeout=15):
    """Whether ``condition(sample)`` held for a scrape of /metrics within
    ``timeout`` seconds; ``sample(name, **labels)`` is a value (0 if absent)."""
    deadline = time.monotonic() + timeout
    while True:
        values = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                  for family in text_string_to_metric_families(get(port, "/metrics")[2])
                  for sample in family.samples}
        if condition(lambda name, **labels: values.get((name, tuple(sorted(labels.items()))), 0)):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def get(port, path, method="GET"):
    """(status, headers, body text) of one HTTP request to 127.0.0.1:port."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode("utf-8")
    finally:
        connection.close()
