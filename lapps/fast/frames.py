"""The fast path: the common WebSocket frame in and out without Autobahn's
chain of callbacks, and writes that go out at once.

Autobahn runs every frame through ``processData`` → ``onFrameBegin`` →
``onFrameData`` → ``onFrameEnd`` → ``onMessageBegin`` ... ``onMessageEnd``,
builds a masker object per frame, fires a txaio event (a Deferred) per
message, and formats debug-log arguments (``hltype``/``hlval``: inspect and
click) on every read and every write even with debug logging off; Twisted
then writes on the reactor's next turn (an epoll registration and a wake-up
per message). Measured, that was most of the CPU a small echo cost.

:class:`FastPath`, mixed into the server protocol, takes over only the
common case and gives every other byte to Autobahn unchanged:

- **In** (``dataReceived``): while Autobahn stands between frames (state
  OPEN, no frame or fragmented message begun), each *complete* frame at the
  front of the data that is a final text or binary frame (``FIN`` set, no
  RSV bit, opcode 1 or 2), masked, with its length in minimal encoding and
  within ``maxFramePayloadSize`` and ``maxMessagePayloadSize``, and (text)
  valid UTF-8 as a whole, is unmasked and handed to ``onMessage``, with the
  traffic counters and the keepalive bookkeeping Autobahn keeps for it. At
  the first frame that is anything else (a control frame, a fragment, RSV,
  unmasked, oversize, bad UTF-8, or not complete yet) the rest goes to
  Autobahn's own ``consumeData``, which reads it exactly as it would have
  read it all along: same messages, same close codes, same fail-fast on a
  partial frame; Autobahn then finishes that frame or message before the
  fast path looks again. Once the connection is closing, or a message
  handler has begun to close it, everything is Autobahn's.
- **Out** (``sendMessage``): a message sent whole (no fragment size, not
  ``sync``, nothing in Autobahn's own send queue, within ``autoFragmentSize``
  and ``maxMessagePayloadSize``) is framed here, as an unmasked server frame,
  and written by :meth:`FastPath._write`. The writes Autobahn makes itself
  (control frames, other messages, bcast's prepared frames) reach
  ``sendData``, which writes them the same way without Autobahn's debug-log
  formatting. ``_write`` is the one way out: it does the outbound accounting
  of :class:`lapps.protocols.backpressure.OutboundCap` as that class asks of
  writers that bypass its ``sendData``, so backpressure counts every byte.
- **Writes** (:class:`lapps.fast.transport.EagerServer`, the listening
  port's TCP transport): while nothing is queued, ``write`` sends at once;
  what the socket does not take is queued by Twisted as before, so its
  buffering and the streaming producer's pause and resume are unchanged
  when the socket is full. TLS (:class:`lapps.fast.stdtls.StdTLS`) writes
  its records to that transport. It gathers a connection's small writes
  into one record flushed on the next turn, which measured cheaper than a
  record per write (and than a record at the end of each read); its
  flushes of one turn are made from a single reactor call
  (:class:`lapps.fast.transport.CoalescingClock`). The reactor dispatches
  these transports' events under a log context cached on the transport
  (:mod:`lapps.fast.dispatch`, ``twistd lapps`` on the epoll reactor).

What the frame path relies on, checked when the connection opens
(``_onOpen``), else the connection stays on Autobahn's path: the server
switch ``fast_path`` (``factory.fast_path``; off, every connection is
Autobahn's and Twisted's alone); RFC 6455 framing (not Hixie-76); no
extension in use (a ``permessage_deflate`` connection stays on Autobahn's
path); unmasking on, server frames unmasked; no frame, octet or timing
logging; nobody subscribed to Autobahn's ``message`` event; and a protocol
that, like lapps's, overrides none of Autobahn's per-frame callbacks
(``onMessageBegin``, ``onMessageFrame*``, ``onMessageEnd``), which the fast
path does not call.

Unmasking uses the C ``apply_mask`` of websockets's speedups (a dependency
of lapps; its wheels carry them), or Python's big integers where websockets
was installed without them; UTF-8 is checked by ``bytes.isascii`` or else
by Autobahn's own validator, so the verdict is Autobahn's. Nothing here
needs a compiler.
"""

import struct

from autobahn.websocket.protocol import WebSocketProtocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets installed without its C speedups: big integers
    apply_mask = None

_OPEN = WebSocketProtocol.STATE_OPEN
_CONNECTING = WebSocketProtocol.STATE_CONNECTING
_PROXY_CONNECTING = WebSocketProtocol.STATE_PROXY_CONNECTING
_TEXT, _BINARY = 0x81, 0x82  # first header octet: FIN, no RSV, opcode 1 or 2
_NO_LIMIT = 1 << 63

#: The headers of unmasked server frames of 0-125 octets, by length.
_SHORT_TEXT = [bytes((_TEXT, n)) for n in range(126)]
_SHORT_BINARY = [bytes((_BINARY, n)) for n in range(126)]


#: The headers of unmasked server frames with 16-bit and 64-bit lengths.
_HEADER_16, _HEADER_64 = struct.Struct(">BBH").pack, struct.Struct(">BBQ").pack


def payload_bounds(data, pos, size, n, mask_size):
    """(start, length) of the payload of the frame at ``pos`` whose 7-bit
    length is ``n`` (126 or 127: a longer length follows) and whose mask
    takes ``mask_size`` octets; an end past ``size`` (never reached) when
    the length is not all there or not in its minimal encoding, which
    Autobahn then waits for or fails."""
    if n == 126:
        start = pos + 4 + mask_size
        if start > size:
            return start, size
        n = data[pos + 2] << 8 | data[pos + 3]
        return (start, n) if n >= 126 else (start, size)
    start = pos + 10 + mask_size
    if start > size:
        return start, size
    n = int.from_bytes(data[pos + 2:pos + 10], "big")
    return (start, n) if 0x10000 <= n < _NO_LIMIT else (start, size)


def _least(*limits):
    """The smallest of Autobahn's size limits that is set (0 is no limit)."""
    return min((n for n in limits if n > 0), default=_NO_LIMIT)


def unmask_python(payload, mask):
    """``payload`` XORed with the 4-octet ``mask`` repeated (RFC 6455 5.3),
    as one big-integer XOR: where websockets has no C ``apply_mask``."""
    n = len(payload)
    key = int.from_bytes((mask * ((n + 3) >> 2))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


#: ``unmask(payload, mask)``: websockets's C ``apply_mask`` where it is installed.
unmask = unmask_python if apply_mask is None else apply_mask


class FastPath:
    """Mixed into an Autobahn Twisted server protocol that has
    :class:`~lapps.protocols.backpressure.OutboundCap`, first in the bases
    (its ``sendData`` does OutboundCap's accounting on the writes it makes
    itself, and leaves the others to OutboundCap's). ``factory.fast_path``
    turns it on for the connections the factory makes."""

    #: Whether this connection takes the fast path (decided in ``_onOpen``).
    fast_path_on = False
    #: The largest payload the fast path takes in, and sends out, whole.
    _in_limit = _out_limit = 0

    def _onOpen(self):
        self.fast_path_on = self._fast_path_applies()
        if self.fast_path_on:
            self._in_limit = _least(self.maxFramePayloadSize, self.maxMessagePayloadSize)
            self._out_limit = _least(self.autoFragmentSize, self.maxMessagePayloadSize)
        super()._onOpen()

    def _fast_path_applies(self):
        listeners = self._listeners
        return bool(self.factory.fast_path
                    and self.websocket_version != 0
                    and self._perMessageCompress is None
                    and self.applyMask and not self.maskServerFrames
                    and not (self.logFrames or self.logOctets or self.trackedTimings)
                    and not (listeners and listeners.get("message")))

    # In.

    def dataReceived(self, data):
        if (self.fast_path_on and self.state == _OPEN and self.current_frame is None
                and not self.inside_message):
            self.trafficStats.incomingOctetsWireLevel += len(data)
            if self.data:  # the beginning of a frame header, kept by Autobahn
                data, self.data = self.data + data, b""
            rest = self._receive_frames(data)
            if rest:
                self.data = rest
                self.consumeData()
        elif self.factory.fast_path:  # Autobahn's, without its adapter's debug-log formatting
            self._dataReceived(data)
        else:
            super().dataReceived(data)

    def _receive_frames(self, data):
        """Deliver the fast frames at the front of ``data``; return the rest."""
        pos, size, frame_at = 0, len(data), self._frame_at
        while True:
            found = frame_at(data, pos, size)
            if found is None or not self._fast_message(found[1], found[2]):
                break  # Autobahn waits for it, or reads it (and fails what is wrong)
            pos = found[0]
            if self.state != _OPEN:
                break  # closing or closed by the handler: Autobahn's from here
        return data[pos:] if pos else data

    def _frame_at(self, data, pos, size):
        """(end, unmasked payload, first octet) of the whole fast client
        frame at ``pos``, or None: not complete yet, not a final
        unfragmented data frame without RSV, unmasked, not in minimal
        length encoding, or over a limit."""
        if size - pos < 6:  # the smallest masked frame
            return None
        b0, b1 = data[pos], data[pos + 1]
        if (b0 != _BINARY and b0 != _TEXT) or b1 < 0x80:
            return None
        n = b1 & 0x7F
        if n < 126:
            start = pos + 6
        else:
            start, n = payload_bounds(data, pos, size, n, 4)
        end = start + n
        if end > size or n > self._in_limit:
            return None
        return end, unmask(data[start:end], data[start - 4:start]), b0

    def _fast_message(self, payload, b0):
        """Hand a whole message to ``onMessage`` with the counters and the
        keepalive bookkeeping Autobahn keeps for it; False (nothing done)
        when it is text that is not valid UTF-8, for Autobahn to fail."""
        n = len(payload)
        if b0 == _TEXT and self.utf8validateIncoming and not payload.isascii():
            validator = self.utf8validator
            validator.reset()
            valid, complete = validator.validate(payload)[:2]
            if not (valid and complete):
                return False
        stats = self.trafficStats
        stats.incomingOctetsWebSocketLevel += n
        stats.incomingOctetsAppLevel += n
        stats.incomingWebSocketFrames += 1
        stats.incomingWebSocketMessages += 1
        if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
            self._cancelAutoPingTimeoutCall()
        self.onMessage(payload, b0 == _BINARY)
        return True

    # Out.

    def sendMessage(self, payload, isBinary=False, fragmentSize=None, sync=False,
                    doNotCompress=False):
        n = len(payload)
        if (not self.fast_path_on or self.state != _OPEN or n > self._out_limit or self.send_queue
                or fragmentSize is not None or sync or type(payload) is not bytes):
            return super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)
        stats = self.trafficStats
        stats.outgoingWebSocketMessages += 1
        stats.outgoingOctetsAppLevel += n
        stats.outgoingOctetsWebSocketLevel += n
        stats.outgoingWebSocketFrames += 1
        self._write(self._frame(payload, n, isBinary))

    def _frame(self, payload, n, isBinary):
        """One unmasked server frame of ``payload`` (``n`` octets)."""
        if n < 126:
            header = _SHORT_BINARY[n] if isBinary else _SHORT_TEXT[n]
        else:
            b0 = _BINARY if isBinary else _TEXT
            header = _HEADER_16(b0, 126, n) if n < 0x10000 else _HEADER_64(b0, 127, n)
        return header + payload

    def sendData(self, data, sync=False, chopsize=None):
        """Autobahn's ``sendData`` without its debug-log formatting, on
        every connection of a ``fast_path`` server (deflate ones too)."""
        if sync or chopsize or self.send_queue or self.logOctets or not self.factory.fast_path:
            return super().sendData(data, sync, chopsize)
        self._write(data)

    def _write(self, data):
        """Every write of this class: first the outbound accounting, as
        :class:`~lapps.protocols.backpressure.OutboundCap` asks of a writer
        that bypasses its ``sendData`` (a frame it refuses is dropped), then
        the transport and the counters Autobahn's ``sendData`` keeps."""
        if self.outbound_paused and not self.outbound_admits(data):
            return
        self.transport.write(data)
        state = self.state
        if state == _OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif state == _CONNECTING or state == _PROXY_CONNECTING:
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
