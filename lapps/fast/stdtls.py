"""TLS on the standard library's ``ssl`` (an ``SSLObject`` over two
``MemoryBIO``\\ s), for the listener with ``fast_path`` and for ``cws``'s
``wss`` connections (the client side starts the handshake on connecting).

Twisted's :class:`~twisted.protocols.tls.TLSMemoryBIOProtocol` drives
pyOpenSSL, whose calls go through cffi and report "nothing more" by raising
``WantReadError`` (an error-queue look-up and an exception, twice per
message). The same OpenSSL reached through ``ssl`` costs less than half as
much per message (2.35 against 5.36 µs for the crypto calls of an echo;
the bench's whole wss echo, 22.9 against 32.8 CPU-µs), and the memory BIOs say how many octets they hold
(``pending``), so :class:`StdTLS` makes no call whose answer is known:

- **in**: what the socket read goes into the incoming BIO; each ``read``
  returns one record's plaintext (it asks for more than a record holds, so
  nothing of it stays in the SSL object). Reading stops when the BIO is
  empty, or when the record header at the front of what is left (its
  octets are the tail of the data just fed) says that record is not whole
  yet; then ``read`` is not called until enough has arrived.
  ``SSLWantReadError`` is raised only when that header is not in the data
  just fed (cut by the read, or fed earlier), or a record held no
  application data (a KeyUpdate). A close_notify makes ``read`` return ``b""`` (or raise
  ``SSLZeroReturnError`` once ours is sent).
- **out**: a connection's writes of one reactor turn are gathered and
  encrypted together on the next turn (the factory's ``clock``, the
  listener's :class:`~lapps.fast.transport.CoalescingClock`), as
  Twisted's ``BufferingTLSTransport`` does; 64 kB gathered are flushed at
  once. What the SSL object put in the outgoing BIO (handshake flights,
  alerts, a KeyUpdate answer) goes to the TCP transport when ``pending``
  says there is some.

The rest follows Twisted's TLS transport: writes before the handshake wait
for it; ``loseConnection`` flushes, and sends close_notify once no producer
is registered (ITransport's rule), closing TCP when the peer's
close_notify arrives or the peer closes; ``abortConnection`` sends
close_notify and aborts; a TLS error ends the connection with it as the
reason (``ssl.SSLError``; metrics count it as ``tls_failed``), while an
end without close_notify is ``ConnectionLost``. A producer is registered
with the TCP transport itself, so its pause and resume come from there.
``getHandle()`` is the ``SSLObject`` (``version()`` names the protocol).
The TLS settings come from :func:`lapps.tls.server_context`, or the
client's from :class:`lapps.tls.ClientTLS` (``ssl`` checks the name).
"""

from ssl import MemoryBIO, SSLEOFError, SSLError, SSLWantReadError, SSLZeroReturnError

from twisted.internet.main import CONNECTION_LOST
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

_READ = 2**15  # more than a record's plaintext (2**14): one read empties a record
_HEADER = 5  # a TLS record's header: type, version (2), length (2)
_GATHER = 64_000  # gathered write octets flushed at once, as Twisted's aggregation


def _record_end(data, left):
    """The octets the incoming BIO must hold for its first record to be
    whole, when it holds ``left`` octets, the tail of ``data``; 0 if not
    known (the header is not within ``data``)."""
    start = len(data) - left
    if start < 0 or left < _HEADER:
        return 0
    return _HEADER + ((data[start + 3] << 8) | data[start + 4])


class StdTLS(ProtocolWrapper):
    """A TLS connection over the stdlib's ``SSLObject`` (see the module
    docstring); the transport of the protocol it wraps."""

    _handshake_done = False
    #: The TLS session is over (close_notify, an error, or the TCP connection gone).
    _lost = False
    _aborted = False
    _reason = None
    _producer = None
    #: The pending flush of gathered writes (a delayed call of the factory's clock).
    _flush_call = None
    #: Octets the incoming BIO must hold before a read can give anything.
    _need = 0

    def makeConnection(self, transport):
        self._incoming, self._outgoing = MemoryBIO(), MemoryBIO()
        hostname = self.factory.hostname
        self._tls = self.factory.context().wrap_bio(self._incoming, self._outgoing,
                                                    server_side=hostname is None,
                                                    server_hostname=hostname)
        self._gathered, self._gathered_size = [], 0
        ProtocolWrapper.makeConnection(self, transport)
        if hostname is not None:  # the client speaks first
            self._handshake()

    def getHandle(self):
        return self._tls

    # In.

    def dataReceived(self, data):
        incoming = self._incoming
        incoming.write(data)
        if not self._handshake_done:
            if not self._handshake():
                return
        elif incoming.pending < self._need:
            return
        self._read(data)

    def _handshake(self):
        """Go on with the handshake; True once it is done."""
        if self._aborted or self._lost:
            return False
        try:
            self._tls.do_handshake()
        except SSLWantReadError:
            self._send_records()
            return False
        except SSLError:
            self._tls_finished(Failure())
            return False
        self._handshake_done = True
        self._send_records()
        if self._gathered:
            self._flush()
        if self.disconnecting and self._producer is None:  # closed while handshaking
            self._shutdown()
        return True

    def _read(self, data):
        """Deliver the plaintext of every whole record in the incoming BIO."""
        tls, incoming = self._tls, self._incoming
        self._need = 0
        while True:
            try:
                plain = tls.read(_READ)
            except SSLWantReadError:
                self._need = _record_end(data, incoming.pending)
                break
            except SSLZeroReturnError:  # close_notify after ours
                plain = b""
            except SSLError:
                self._tls_finished(Failure())
                return
            if not plain:  # close_notify: answer it, after what this read made; TLS is over
                self._flush()
                self._shutdown()
                self._tls_finished(None)
                return
            if not self._aborted:
                self.wrappedProtocol.dataReceived(plain)
            if self._lost:
                return
            left = incoming.pending
            if not left:
                break
            need = _record_end(data, left)
            if need > left:
                self._need = need
                break
        if self._outgoing.pending:
            self._send_records()

    # Out.

    def write(self, data):
        if self._lost or (self.disconnecting and self._producer is None):
            return
        self._gathered.append(data)
        self._gathered_size += len(data)
        if not self._handshake_done:
            return  # sent when the handshake is done
        if self._gathered_size > _GATHER:
            self._flush()
        elif self._flush_call is None:
            self._flush_call = self.factory.clock.callLater(0, self._flush)

    def writeSequence(self, data):
        self.write(b"".join(data))

    def _flush(self):
        """Encrypt the gathered writes and send the records."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        gathered = self._gathered
        if not gathered or self._lost or self._aborted or not self._handshake_done:
            return  # (an abort drops what is gathered: its close_notify is already out)
        data = gathered[0] if len(gathered) == 1 else b"".join(gathered)
        self._gathered, self._gathered_size = [], 0
        try:
            self._tls.write(data)
        except SSLError:
            self._tls_finished(Failure())
            return
        self._send_records()

    def _send_records(self):
        """Give the TCP transport what the SSL object has put out."""
        records = self._outgoing.read()
        if records:
            self.transport.write(records)

    # Producer.

    def registerProducer(self, producer, streaming):
        if self._lost:
            producer.stopProducing()
            return
        self.transport.registerProducer(producer, streaming)
        self._producer = producer

    def unregisterProducer(self):
        if self._producer is None:
            return
        self._producer = None
        self.transport.unregisterProducer()
        if self.disconnecting:
            self._flush()  # what was written since loseConnection goes before close_notify
            self._shutdown()

    # The end.

    def loseConnection(self):
        if self.disconnecting or not self.connected:
            return
        if not self._handshake_done and not self._gathered:
            self.abortConnection()
            return
        self.disconnecting = True
        self._flush()
        if self._producer is None:
            self._shutdown()

    def abortConnection(self):
        self._aborted = True
        self.disconnecting = True
        self._shutdown()
        self.transport.abortConnection()

    def _shutdown(self):
        """Send close_notify (or answer the peer's); close TCP once both
        have been sent."""
        if self._tls is None:
            return
        try:
            self._tls.unwrap()
        except (SSLWantReadError, SSLError, ValueError):  # the peer's is still to come, or no TLS yet
            done = False
        else:
            done = True
        self._send_records()
        if done:
            self.transport.loseConnection()

    def _tls_finished(self, reason):
        """TLS is over: with ``reason`` (a Failure) on an error, else with
        the TCP connection's own reason; close TCP."""
        if reason is not None and reason.check(SSLEOFError):
            reason = Failure(CONNECTION_LOST)
        if self._reason is None:
            self._reason = reason
        self._lost = True
        self._send_records()
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._gathered = []
        if not self._lost:  # TCP ended without close_notify: what Twisted's TLS reports
            self._lost = True
            if self._reason is None:
                self._reason = Failure(CONNECTION_LOST)
        reason, self._reason = self._reason or reason, None
        self.connected = False
        ProtocolWrapper.connectionLost(self, reason)
        self._tls = None


class StdTLSFactory(WrappingFactory):
    """Wraps the listener's protocols in :class:`StdTLS`; the same
    arguments as Twisted's ``TLSMemoryBIOFactory``. ``tls`` is the server's
    :class:`lapps.tls.ServerTLS`: each connection takes its current
    ``context``, so a reload's certificate reaches new connections. A
    client (``is_client``) names the ``hostname`` it connects to, and
    ``tls`` is its :class:`lapps.tls.ClientTLS`."""

    protocol = StdTLS
    noisy = False

    def __init__(self, tls, is_client, wrapped_factory, clock=None, hostname=None):
        if is_client == (hostname is None):
            raise ValueError("a client names the host it connects to; a server none")
        super().__init__(wrapped_factory)
        self.tls, self.hostname = tls, hostname
        if clock is None:  # imported late: importing this module installs no reactor
            from twisted.internet import reactor as clock
        self.clock = clock

    def context(self):
        return self.tls.context

    def logPrefix(self):
        return f"{self.wrappedFactory.__class__.__name__} (TLS)"
