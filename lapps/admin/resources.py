"""The admin listener's HTTP resources (``twisted.web``): ``/healthz``,
``/readyz``, ``/metrics`` and the status page at ``/`` and ``/status``.
Only GET and HEAD are served (twisted.web answers 405 to the rest, 404 to
unknown paths); nothing is cached, nothing is sniffed."""

import time

from twisted.web.resource import Resource

from lapps import metrics
from lapps.admin import page


def _plain(request, code, text):
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return text.encode("utf-8")


class _Leaf(Resource):
    isLeaf = True

    def render(self, request):
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return super().render(request)


class Health(_Leaf):
    """200 as long as the process answers at all (a liveness probe)."""

    def render_GET(self, request):
        return _plain(request, 200, "ok\n")


class Ready(_Leaf):
    """200 "ready" when the server can take clients; else 503 and why, one
    reason per line (a readiness probe, or a load balancer's check)."""

    def __init__(self, status):
        super().__init__()
        self.status = status

    def render_GET(self, request):
        problems = self.status.problems()
        if problems:
            return _plain(request, 503, "".join(f"{line}\n" for line in problems))
        return _plain(request, 200, "ready\n")


class Metrics(_Leaf):
    """The Prometheus exposition of :mod:`lapps.metrics`."""

    def render_GET(self, request):
        body, content_type = metrics.exposition()
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        return body


class StatusPage(_Leaf):
    """The read-only HTML status page (:mod:`lapps.admin.page`)."""

    def __init__(self, status, recent):
        super().__init__()
        self.status, self.recent = status, recent

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Security-Policy", page.CSP.encode("ascii"))
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        status = self.status
        return page.render(status.problems(), status.services(), status.workers(),
                           self.recent.newest_first(), time.time(),
                           status.deployed()).encode("utf-8")


def root(status, recent):
    """The resource tree of the admin listener."""
    tree = Resource()
    status_page = StatusPage(status, recent)
    tree.putChild(b"", status_page)
    tree.putChild(b"status", status_page)
    tree.putChild(b"healthz", Health())
    tree.putChild(b"readyz", Ready(status))
    tree.putChild(b"metrics", Metrics())
    return tree
