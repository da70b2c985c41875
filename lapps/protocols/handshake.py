"""Limits on the opening handshake: its size, checked as its bytes arrive,
and its duration.

Autobahn keeps every byte of the handshake in ``self.data`` and looks for
the blank line that ends it each time more arrives, with no bound: one
endless header line is buffered for as long as the client sends it.
:class:`HandshakeLimits` looks at the new bytes first and refuses the
handshake as soon as the request line passes ``max_request_line`` (414),
a header line ``max_header_line`` or the whole head ``max_header_block``
(431), so at most one read past a limit is ever held; a first byte that
cannot start a request line (0x16, a TLS ClientHello on a plain port, or
binary junk) gets 400 at once. The scan resumes at
the start of the line still incomplete; like Autobahn's own search for the
blank line, it looks at no more than the capped head per read.

The time limit is Autobahn's ``openHandshakeTimeout``, which the factory
sets from ``handshake_timeout`` (kept on time by
:mod:`lapps.protocols.timers`): it runs from the accept (the WebSocket
protocol is connected before the TLS handshake starts, so a TLS handshake
that never completes is cut too) to the 101, and the connection is then
dropped without an answer. :meth:`HandshakeLimits.onOpenHandshakeTimeout`
logs it as ``handshake.timeout``.
"""

from twisted.logger import Logger

from lapps import metrics

log = Logger(namespace="lapps.connection")


#: What a request line can start with: a method's token character (RFC 9110
#: §5.6.2), or the empty line RFC 9112 §2.2 lets a client send before it
#: (which Autobahn then refuses, once the head is complete).
_REQUEST_START = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                           b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\r\n")
_TLS_HANDSHAKE_RECORD = 0x16


def _not_http(first):
    """Why a head starting with the byte ``first`` is refused at once
    rather than held until ``handshake_timeout`` (as nginx answers 400)."""
    if first == _TLS_HANDSHAKE_RECORD:
        return "a TLS handshake on a port without TLS: use ws://, not wss://"
    return f"not an HTTP request (first byte 0x{first:02x})"


class HandshakeLimits:
    """Mixed into an Autobahn server protocol (before it in the bases);
    reads the server's ``limits`` from ``self.factory.limits``."""

    #: Where the line not yet complete starts in ``self.data``.
    _line_start = 0

    def processHandshake(self):
        refusal = self._over_limit()
        if refusal is not None:
            return self.failHandshake(*refusal)
        return super().processHandshake()

    def _over_limit(self):
        """``(reason, status)`` once the head received so far is over a
        limit, else None (and the scan moves on to the incomplete line)."""
        data, limits, start = self.data, self.factory.limits, self._line_start
        if start == 0 and data and data[0] not in _REQUEST_START:
            return _not_http(data[0]), 400
        while True:
            end = data.find(b"\r\n", start)
            length = (len(data) if end < 0 else end) - start
            if start == 0:
                if length > limits["max_request_line"]:
                    return f"request line over {limits['max_request_line']} bytes", 414
            elif length > limits["max_header_line"]:
                return f"a header line over {limits['max_header_line']} bytes", 431
            if end < 0 or end == start > 0:  # incomplete, or the blank line that ends the head
                break
            start = end + 2
        self._line_start = start
        size = len(data) if end < 0 else end + 2
        if size > limits["max_header_block"]:
            return f"request head over {limits['max_header_block']} bytes", 431
        return None

    def onOpenHandshakeTimeout(self):
        if self.state == self.STATE_CONNECTING:
            metrics.handshake_result(self, "timeout")
            log.info("{peer} did not complete the opening handshake in {timeout} s; dropped",
                     lapps_event="handshake.timeout", peer=self.peer,
                     timeout=self.openHandshakeTimeout)
        super().onOpenHandshakeTimeout()
