"""Outbound backpressure: how much one WebSocket connection may queue for a
peer that does not read.

Twisted's transport buffers every write, without limit, and tells its
registered streaming producer to pause when its buffer passes 64 KiB and to
resume when it has drained (through TLS too: ``TLSMemoryBIOProtocol`` passes
the TCP transport's pause on). :class:`OutboundCap` makes the connection
itself that producer. While it is paused, every byte written counts in
``outbound_backlog``; past the connection's limit, or after its stall
timeout without a drain, the connection is closed 1008. A closing handshake
cannot get through a full buffer, so Autobahn's ``closeHandshakeTimeout``
then aborts the connection and the buffer is freed; the protocol's
``onClose`` runs once, as for any other end.

Every frame Autobahn writes (messages, bcast's ``PreparedMessage``, pings,
close frames) passes through ``sendData``; a writer that bypasses it must
do what ``sendData`` does here: while ``outbound_paused``, call
:meth:`OutboundCap.outbound_admits` with each frame and drop the frame if it
says no. Until the transport pauses, the cost per write is that one
attribute check.
"""

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.logger import Logger

log = Logger(namespace="lapps.connection")


class OutboundCap:
    """Mixed into an Autobahn Twisted protocol (before it in the bases).

    :meth:`cap_outbound` registers the protocol as its transport's producer
    once the connection is open. With no ``limit`` and no ``stall_timeout``
    it only counts (``cws`` refuses sends itself from the count); a
    connection that has a limit names its ``handler`` in the log."""

    #: Whether the transport's buffer is full (set by the transport).
    outbound_paused = False
    #: Bytes written since the transport asked to pause (0 when it is not paused).
    outbound_backlog = 0
    _outbound_limit = None
    _stall_timeout = None
    _stall = None

    def cap_outbound(self, limit=None, stall_timeout=None):
        self._outbound_limit, self._stall_timeout = limit, stall_timeout
        self.outbound_paused = False  # on the instance: the check in sendData finds it first
        self.transport.registerProducer(self, True)

    def sendData(self, data, sync=False, chopsize=None):
        if self.outbound_paused and not self.outbound_admits(data):
            return
        WebSocketProtocol.sendData(self, data, sync, chopsize)  # named: cheaper than super()

    def outbound_admits(self, frame):
        """Count a frame about to be written while the transport is paused:
        False (and the connection closing 1008) once the backlog would pass
        the limit; the caller then drops it. A message goes out whole once
        begun: the write that fills the transport's buffer is not counted,
        nor are the continuation frames of a fragmented message (so a
        message of any size still reaches a reading peer), and those of a
        refused one are dropped. Once the connection is closing, only
        control frames are left to write."""
        if frame[0] & 0x0F == 0:  # opcode 0: a continuation frame
            return self.state == self.STATE_OPEN
        backlog = self.outbound_backlog + len(frame)
        limit = self._outbound_limit
        if limit is None or backlog <= limit or self.state != self.STATE_OPEN:
            self.outbound_backlog = backlog
            return True
        self._refuse("connection.outbound_full", b"outbound buffer full",
                     "{peer} (handler {handler}) does not read: {backlog} bytes queued "
                     "past the transport's buffer, and {size} more would pass "
                     "max_outbound_buffer {limit}; closing 1008",
                     backlog=self.outbound_backlog, size=len(frame), limit=limit)
        return False

    # IPushProducer, called by the transport.

    def pauseProducing(self):
        if self.outbound_paused:  # the transport asks again on each write while full
            return
        self.outbound_paused = True
        if self._stall_timeout is not None:
            self._stall = self.factory.reactor.callLater(self._stall_timeout, self._stalled)

    def resumeProducing(self):
        self.outbound_paused = False
        self.outbound_backlog = 0
        self._cancel_stall()

    def stopProducing(self):
        self._cancel_stall()

    def connectionLost(self, reason):
        self._cancel_stall()  # an aborted connection must not wait for its timer to be freed
        super().connectionLost(reason)

    def _stalled(self):
        self._stall = None
        if self.state != self.STATE_OPEN:
            return  # already closing: its own timeout ends it
        self._refuse("connection.outbound_stalled", b"outbound stalled",
                     "{peer} (handler {handler}) has not drained its transport's buffer "
                     "in {timeout} s ({backlog} bytes queued past it); closing 1008",
                     timeout=self._stall_timeout,
                     backlog=self.outbound_backlog)

    def _cancel_stall(self):
        if self._stall is not None:
            if self._stall.active():
                self._stall.cancel()
            self._stall = None

    def _refuse(self, event, reason, text, **fields):
        """Close 1008. The protocol stops being the transport's producer
        first: nothing more is counted, and the close frame itself (queued
        behind the full buffer) does not pause it again."""
        self.transport.unregisterProducer()
        self.outbound_paused = False
        self._cancel_stall()
        log.info(text, lapps_event=event, peer=self.peer, handler=self.handler, **fields)
        self.sendCloseFrame(code=1008, reasonUtf8=reason, isReply=False)
