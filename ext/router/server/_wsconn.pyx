"""The asyncio glue between a TCP transport and the WebSocket codec.

``WebSocketProtocol`` is a ``BufferedProtocol`` (uvloop and asyncio detect
``get_buffer``) and a ``FrameCodec`` subclass: one object per connection,
all state in C fields.

Memory per connection (docs/websocket.md):

* Reads land in one shared 256 KiB buffer per process. ``get_buffer`` hands
  out a view of it; this is safe because the loop calls ``buffer_updated``
  synchronously right after the read, before any other protocol reads
  (uvloop ``__uv_stream_buffered_on_read``, asyncio ``_read_ready__get_buffer``).
  The codec parses it in place and copies out only a partial frame.
* No timer handle per connection: one sweep per event loop (``_Sweeper``)
  runs every ``timer_resolution`` seconds over the connections of that loop
  and fires handshake, close and keepalive timeouts.
* Counters are C globals read at scrape time by :func:`stats`.

Writes: frames produced while reading (``buffer_updated``) leave in one write
at the end of the read. A frame sent otherwise (a backend reply) goes to the
socket with one ``send(2)`` when the transport is uvloop's plain TCP transport
and holds nothing for it (``_tx``); the rest, and everything on TLS or the
asyncio loop, goes through ``transport.write``, which keeps order,
backpressure and error handling.
"""

import asyncio
import logging

from cpython.bytes cimport (
    PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE,
)
from libc.stdint cimport uint8_t, uint64_t
from libc.stddef cimport size_t

from router.ws._codec cimport (
    FrameCodec, UpgradeRequest, encode_frame, encode_close, write_frame_header, R_CLOSED,
    R_FAILED,
)
from router.ws._codec import HandshakeParser, accept_response, error_response, negotiate_deflate
from router.ws.errors import (
    HandshakeError,
    InvalidState,
    UnsupportedVersion,
    WebSocketError,
    close_code_for,
    public_reason_for,
)
from router.ws.settings import WSSettings

from uvloop.loop import TCPTransport as _UV_TCP


cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void* buf, size_t n, int flags)
    enum: MSG_NOSIGNAL
    enum: MSG_DONTWAIT

cdef extern from "time.h" nogil:
    ctypedef int clockid_t
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk, timespec* ts)
    clockid_t CLOCK_MONOTONIC

logger = logging.getLogger("router.ws")

cdef object _DEFAULT_SETTINGS = WSSettings()

# Messages at least this long go out as header + payload through writelines()
# (one writev) instead of being copied behind their header.
cdef Py_ssize_t _LARGE = 16384

# --- the shared receive buffer (see the module docstring)
cdef Py_ssize_t _RBUF_SIZE = 256 * 1024
cdef bytearray _rbuf = bytearray(_RBUF_SIZE)
cdef uint8_t* _rptr = <uint8_t*><char*>_rbuf
cdef object _rview = memoryview(_rbuf)

# --- counters (C globals; stats() reads them)
cdef uint64_t _connections_total = 0
cdef uint64_t _connections_open = 0
cdef uint64_t _handshake_rejected = 0
cdef uint64_t _handshake_failed = 0
cdef uint64_t _handshake_timeouts = 0
cdef uint64_t _bytes_in = 0
cdef uint64_t _bytes_out = 0
cdef uint64_t _messages_out = 0
cdef uint64_t _messages_dropped = 0
cdef uint64_t _pings_sent = 0
cdef uint64_t _ping_timeouts = 0
cdef uint64_t _close_timeouts = 0
cdef uint64_t _err_1002 = 0
cdef uint64_t _err_1007 = 0
cdef uint64_t _err_1008 = 0
cdef uint64_t _err_1009 = 0
cdef uint64_t _err_1011 = 0

cdef double _coarse_now = 0.0

# Frames sent while one connection processes one read (F_BATCH): they leave
# in one write()/writev at the end of buffer_updated instead of one syscall
# per message (batch per read, like picows' last_in_buffer). Only one
# connection is inside buffer_updated at a time, so one list serves all.
cdef list _out = []


cdef inline double _monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


def stats():
    """Process-wide WebSocket counters, read at scrape time.

    Keys: connections_total, connections_open, handshake_rejected (reject()
    called), handshake_failed (bad request answered 4xx), handshake_timeouts,
    bytes_in, bytes_out, frames_in, messages_in, messages_out,
    messages_dropped (sent after closing started), pings_sent, ping_timeouts,
    close_timeouts, and errors_by_close_code {1002, 1007, 1008, 1009, 1011}:
    connections we failed, by the close code we sent.
    """
    from router.ws._codec import counters
    c = counters()
    return {
        "connections_total": _connections_total,
        "connections_open": _connections_open,
        "handshake_rejected": _handshake_rejected,
        "handshake_failed": _handshake_failed,
        "handshake_timeouts": _handshake_timeouts,
        "bytes_in": _bytes_in,
        "bytes_out": _bytes_out,
        "frames_in": c["frames_in"],
        "messages_in": c["messages_in"],
        "messages_out": _messages_out,
        "messages_dropped": _messages_dropped,
        "pings_sent": _pings_sent,
        "ping_timeouts": _ping_timeouts,
        "close_timeouts": _close_timeouts,
        "errors_by_close_code": {
            1002: _err_1002, 1007: _err_1007, 1008: _err_1008,
            1009: _err_1009, 1011: _err_1011,
        },
    }


cdef dict _sweepers = {}


cdef class _Sweeper:

    def __init__(self, loop, double resolution):
        self.loop = loop
        self.conns = set()
        self.handle = None
        self.resolution = resolution

    cdef int add(self, WebSocketProtocol conn) except -1:
        self.conns.add(conn)
        if self.handle is None:
            self.handle = self.loop.call_later(self.resolution, self.tick)
        return 0

    cdef int discard(self, WebSocketProtocol conn) except -1:
        self.conns.discard(conn)
        if not self.conns:
            # Nothing to watch: stop ticking so an idle (or closed) loop holds
            # no handle of ours.
            if self.handle is not None:
                self.handle.cancel()
                self.handle = None
            if _sweepers.get(self.loop) is self:
                del _sweepers[self.loop]
        return 0

    def tick(self):
        global _coarse_now
        cdef double now = _monotonic()
        cdef WebSocketProtocol conn
        _coarse_now = now
        self.handle = None
        for conn in list(self.conns):
            try:
                conn._tick(now)
            except Exception:
                logger.exception("websocket timer failed")
                conn.abort()
        if self.conns and not self.loop.is_closed():
            self.handle = self.loop.call_later(self.resolution, self.tick)


def start_timers(loop=None, double resolution=1.0):
    """Create the sweep of ``loop`` ahead of the first connection.

    Optional: connections start the sweep of their loop on demand with their
    settings' ``timer_resolution``; call this to choose the resolution.

    Args:
        loop: the event loop (default: the running loop).
        resolution: seconds between sweeps.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    sweeper = _sweepers.get(loop)
    if sweeper is None:
        _sweepers[loop] = _Sweeper(loop, resolution)
    else:
        (<_Sweeper>sweeper).resolution = resolution


def active_connections(loop=None):
    """Number of connections the sweep of ``loop`` watches (tests, drain).

    Args:
        loop: the event loop (default: the running loop).
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    sweeper = _sweepers.get(loop)
    return 0 if sweeper is None else len((<_Sweeper>sweeper).conns)


cdef class WebSocketProtocol(FrameCodec):
    """One server-side WebSocket connection (subclass it and override hooks).

    Hooks run in the event loop; ``data`` passed to ``on_text``/``on_binary``
    is a new bytes object the hook may keep.
    """

    def __init__(self, settings=None):
        """Create the protocol for one accepted TCP connection.

        Args:
            settings: a WSSettings (default: WSSettings()).
        """
        if settings is None:
            settings = _DEFAULT_SETTINGS
        elif not isinstance(settings, WSSettings):
            raise TypeError("settings must be a WSSettings")
        self.settings = settings
        self._state = S_CONNECTING
        self.sock_fd = -1
        self.close_code = 1006
        self.close_reason = ""
        self.ping_interval = settings.ping_interval
        self.ping_timeout = settings.ping_timeout
        self.close_timeout = settings.close_timeout

    # ------------------------------------------------------------ properties

    @property
    def state(self):
        """0 connecting, 1 open, 2 closing, 3 closed (router.ws.ConnectionState)."""
        return self._state

    def write_buffer_size(self):
        """Bytes queued in the transport, not yet written to the socket."""
        if self.transport is None:
            return 0
        return self.transport.get_write_buffer_size()

    # ------------------------------------------------------------ hooks

    def on_request(self, UpgradeRequest request):
        """Decide on the upgrade: call accept() or reject(), now or later.

        Reading is paused until then; the handshake timeout still applies.
        The default accepts without a subprotocol.
        """
        self.accept(None)

    def on_open(self):
        """Called after the 101 response was written."""

    def on_text(self, bytes data):
        """A complete, UTF-8-valid text message (bytes, not decoded)."""

    def on_binary(self, bytes data):
        """A complete binary message."""

    def on_closed(self, int code, str reason):
        """Called exactly once per accepted connection when it has ended.

        ``code`` is the peer's close code (RFC 6455 §7.1.5; 1005 when its
        close frame had none), the code we sent when we failed the connection
        (1002/1007/1009/1011, see docs/websocket.md), or 1006 when TCP ended
        without a close handshake (connection lost, abort, keepalive timeout).
        """

    def on_rejected(self):
        """Called once when a connection ends before it was opened (rejected,
        bad request, handshake timeout, connection lost)."""

    def on_post(self, bytes data):
        """The connection's first request is a POST, not an upgrade.

        Return True after taking the transport over (``transport.set_protocol``
        and feeding ``data``, the bytes received so far, to the new protocol):
        this object then lets go of the connection and reports nothing more.
        The default returns False: the request is answered 405 like any
        non-GET.
        """
        return False

    # ------------------------------------------------------------ asyncio protocol

    def connection_made(self, transport):
        global _connections_total, _coarse_now
        cdef object cls = type(self)
        cdef object loop
        cdef object sweeper
        self.transport = transport
        if type(transport) is _UV_TCP:
            # Plain TCP on uvloop (never TLS: that transport is another type).
            # The descriptor stays open until after connection_lost (uvloop
            # closes the handle only then), and _tx is not used past it.
            self.sock_fd = transport.get_extra_info("socket").fileno()
        _coarse_now = _monotonic()
        self.deadline = _coarse_now + self.settings.handshake_timeout
        self.last_rx = _coarse_now
        transport.set_write_buffer_limits(high=self.settings.write_high_water,
                                          low=self.settings.write_low_water)
        # Unbound functions of the class: called as fn(self, data), they cost
        # no bound-method object per message and make no reference cycle.
        self.text_fn = cls.on_text
        self.binary_fn = cls.on_binary
        loop = asyncio.get_running_loop()
        sweeper = _sweepers.get(loop)
        if sweeper is None:
            sweeper = _Sweeper(loop, self.settings.timer_resolution)
            _sweepers[loop] = sweeper
        self.sweeper = <_Sweeper>sweeper
        self.sweeper.add(self)
        _connections_total += 1

    def get_buffer(self, Py_ssize_t sizehint):
        return _rview

    def buffer_updated(self, Py_ssize_t nbytes):
        global _bytes_in
        _bytes_in += <uint64_t>nbytes
        self.last_rx = _coarse_now
        if self._state == S_CONNECTING:
            self._handshake_data(PyBytes_FromStringAndSize(<char*>_rptr, nbytes))
            return
        if (self._state == S_CLOSED or not (self.flags & F_OPENED)
                or self.rstate >= R_CLOSED):
            # Rejected (the HTTP error is on its way), after a close frame or
            # after a failure: discard what the peer still sends (§7.1.1).
            return
        self.flags |= F_BATCH
        try:
            self.receive(_rptr, nbytes)
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._end_batch()

    def eof_received(self):
        # Returning False lets the transport close itself (half-open TCP is of
        # no use to a WebSocket server, RFC 6455 §7.1.1).
        return False

    def connection_lost(self, exc):
        global _connections_open
        if self._state == S_CLOSED:
            return
        if self.flags & F_OPENED:
            _connections_open -= 1
        self._state = S_CLOSED
        self.sock_fd = -1
        if self.sweeper is not None:
            self.sweeper.discard(self)
            self.sweeper = None
        self.release()
        self.handshake = None
        self.early = None
        self._report()

    def pause_writing(self):
        # The peer does not read what we send: stop reading what it sends.
        self.read_pause |= P_WRITE
        self._update_reading()

    def resume_writing(self):
        self.read_pause &= ~P_WRITE
        self._update_reading()

    # ------------------------------------------------------------ actions

    def accept(self, subprotocol=None, headers=()):
        """Answer the upgrade with 101 and open the connection.

        permessage-deflate is negotiated here from the request and settings.
        A call after the connection was dropped while on_request was still
        deciding (handshake timeout, peer gone) does nothing.

        Args:
            subprotocol: one of ``request.subprotocols``, or None.
            headers: extra response headers as (name, value) pairs.

        Raises:
            InvalidState: no request yet, or already answered.
            ValueError: subprotocol not offered, or a header with CR/LF.
        """
        global _connections_open, _bytes_out
        cdef object s = self.settings
        cdef object pmd = None
        cdef bytes resp
        if self.request is None or self.flags & F_RESPONDED:
            raise InvalidState("accept() needs a pending upgrade request")
        if self._state != S_CONNECTING:
            return      # dropped meanwhile (handshake timeout, peer gone)
        if s.permessage_deflate and self.request.extensions:
            pmd = negotiate_deflate(self.request.extensions, s.server_max_window_bits,
                                    s.client_max_window_bits, s.server_no_context_takeover,
                                    s.client_no_context_takeover)
        resp = accept_response(self.request, subprotocol,
                               None if pmd is None else pmd.response, headers)
        self.configure(s.max_message_size, pmd, s.compression_level,
                       s.compression_mem_level, s.compression_threshold)
        self.flags |= F_RESPONDED | F_OPENED
        self._state = S_OPEN
        self.deadline = 0
        self.last_rx = _coarse_now
        _connections_open += 1
        _bytes_out += <uint64_t>len(resp)
        self._tx(resp)
        self.read_pause &= ~P_HANDSHAKE
        self._update_reading()
        try:
            self.on_open()
        except Exception as exc:
            # Like any hook failure on an open connection: close 1011.
            self._fail(exc)
            return
        if self.early is not None and self._state == S_OPEN:
            self._receive_early()

    def reject(self, int status, headers=(), bytes body=b""):
        """Answer the upgrade with an HTTP error and close the connection.

        Args:
            status: 4xx/5xx, e.g. 401 (bad credentials), 404 (unknown
                charger), 503 (draining; add a Retry-After header).
            headers: extra response headers as (name, value) pairs.
            body: response body.

        A call after the connection was dropped does nothing (as accept()).

        Raises:
            InvalidState: no request yet, or already answered.
            ValueError: bad status or header.
        """
        global _handshake_rejected, _bytes_out
        cdef bytes resp
        if self.request is None or self.flags & F_RESPONDED:
            raise InvalidState("reject() needs a pending upgrade request")
        if self._state != S_CONNECTING:
            return      # dropped meanwhile (handshake timeout, peer gone)
        resp = error_response(status, headers, body)
        self.flags |= F_RESPONDED
        self._state = S_CLOSING
        self.deadline = _coarse_now + self.close_timeout
        _handshake_rejected += 1
        _bytes_out += <uint64_t>len(resp)
        self._tx(resp)
        self._stop_tx()
        self.transport.close()

    def send_text(self, data):
        """Send a text message; ``data`` must be UTF-8 (not re-checked).

        Once closing has started the message is dropped (and counted).

        Raises:
            InvalidState: the connection is not open yet.
        """
        self._send(1, data)

    def send_binary(self, data):
        """Send a binary message. Dropped once closing has started.

        Raises:
            InvalidState: the connection is not open yet.
        """
        self._send(2, data)

    def close(self, int code=1000, str reason=""):
        """Start the close handshake (RFC 6455 §7.1.2).

        TCP is closed when the peer's close frame arrives or after
        ``close_timeout``. Before the connection is open this drops TCP
        (prefer reject()). Idempotent.

        Args:
            code: 1000-1003, 1007-1014 or 3000-4999.
            reason: up to 123 UTF-8 bytes (cut beyond).

        Raises:
            ValueError: a code that must not be sent (RFC 6455 §7.4).
        """
        if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
            raise ValueError(f"close code {code} may not be sent")
        if self._state == S_CONNECTING:
            self._state = S_CLOSING
            self.deadline = _coarse_now + self.close_timeout
            self._stop_tx()
            self.transport.close()
            return
        if self._state != S_OPEN:
            return
        self._send_close(code, reason)
        self._state = S_CLOSING
        self.deadline = _coarse_now + self.close_timeout

    def abort(self):
        """Drop TCP now (no close handshake); on_closed gets 1006."""
        if self.transport is not None and self._state != S_CLOSED:
            if self._state == S_OPEN or not (self.flags & F_FAILED):
                self.close_code = 1006
                self.close_reason = ""
            self._state = S_CLOSING
            if self.flags & F_BATCH:
                _out.clear()
            self._stop_tx()
            self.transport.abort()

    def pause_reading(self):
        """Stop reading from the peer (backpressure from the application).

        Messages already received in the current read are still delivered.
        """
        self.read_pause |= P_APP
        self._update_reading()

    def resume_reading(self):
        """Undo pause_reading()."""
        self.read_pause &= ~P_APP
        self._update_reading()

    # ------------------------------------------------------------ internals

    cdef int _handshake_data(self, bytes data) except -1:
        cdef UpgradeRequest req
        if self.request is not None:
            # The request is complete and on_request has not decided yet:
            # keep what the client sent early (reading is paused, so at most
            # one read's worth).
            self.early = data if self.early is None else self.early + data
            return 0
        if self.handshake is None:
            if self.early is not None:
                data = self.early + data    # a first line held back below
                self.early = None
            if PyBytes_GET_SIZE(data) and PyBytes_AS_STRING(data)[0] == b"P":
                # Not an upgrade (that is a GET, RFC 6455 §4.1): a POST may be
                # taken over by the application (OCPP-S, router.server.soap).
                if PyBytes_GET_SIZE(data) < 5 and b"POST "[:PyBytes_GET_SIZE(data)] == data:
                    self.early = data       # "P", "PO" …: decide on the next read
                    return 0
                if data[:5] == b"POST " and self.on_post(data):
                    return self._handed_over()
            # Created on the first bytes, not in connection_made: during an
            # accept burst, connections that have sent nothing yet hold no
            # parser (and a request that arrives in one read frees it within
            # the same call).
            self.handshake = HandshakeParser(self.settings.max_header_bytes,
                                             self.settings.max_headers)
        try:
            req = self.handshake.feed(data)
        except HandshakeError as exc:
            return self._reject_error(exc)
        if req is None:
            return 0
        self.request = req
        if self.handshake.leftover:
            self.early = self.handshake.leftover
        self.handshake = None
        try:
            self.on_request(req)
        except Exception:
            logger.exception("on_request failed")
            if self._state == S_CONNECTING and not self.flags & F_RESPONDED:
                self.reject(500)
            return 0
        if self._state == S_CONNECTING and not self.flags & F_RESPONDED:
            self.read_pause |= P_HANDSHAKE
            self._update_reading()
        return 0

    cdef int _handed_over(self) except -1:
        # on_post gave the transport to another protocol: forget it, report nothing.
        self._state = S_CLOSED
        self.flags |= F_REPORTED
        self.sock_fd = -1
        if self.sweeper is not None:
            self.sweeper.discard(self)
            self.sweeper = None
        self.release()
        self.transport = None
        return 0

    cdef int _reject_error(self, object exc) except -1:
        # The one place mapping handshake errors to HTTP responses.
        global _handshake_failed, _bytes_out
        cdef list headers = []
        cdef bytes resp
        if isinstance(exc, UnsupportedVersion):
            # RFC 6455 §4.4: tell the client which version we speak.
            headers = [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
        resp = error_response(exc.status, headers)
        _handshake_failed += 1
        self.handshake = None
        self.flags |= F_RESPONDED
        self._state = S_CLOSING
        self.deadline = _coarse_now + self.close_timeout
        _bytes_out += <uint64_t>len(resp)
        self._tx(resp)
        self._stop_tx()
        self.transport.close()
        return 0

    cdef int _receive_early(self) except -1:
        cdef bytearray buf = bytearray(self.early)
        self.early = None
        try:
            self.receive(<uint8_t*><char*>buf, len(buf))
        except BaseException as exc:
            self._fail(exc)
        return 0

    cdef int _send(self, int opcode, object data) except -1:
        global _messages_out, _messages_dropped, _bytes_out
        cdef const uint8_t* p
        cdef Py_ssize_t n
        cdef const uint8_t[::1] view
        cdef bytes frame
        if self._state != S_OPEN:
            if self._state == S_CONNECTING:
                raise InvalidState("the connection is not open yet")
            _messages_dropped += 1
            return 0
        if PyBytes_CheckExact(data):
            p = <const uint8_t*>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        else:
            view = data
            n = view.shape[0]
            p = &view[0] if n else NULL
        _messages_out += 1
        if n >= _LARGE and not (self.pmd and n >= self.compress_threshold):
            # Large and uncompressed: header and payload leave in one writev,
            # without copying the payload.
            frame = _large_header(opcode, n)
            _bytes_out += <uint64_t>(len(frame) + n)
            if self.flags & F_BATCH:
                _out.append(frame)
                _out.append(data if PyBytes_CheckExact(data) else bytes(data))
            else:
                self.flags |= F_TR_QUEUED
                self.transport.writelines((frame, data))
            return 0
        return self._write(self.encode_message(opcode, p, n))

    cdef int _write(self, bytes frame) except -1:
        global _bytes_out
        _bytes_out += <uint64_t>PyBytes_GET_SIZE(frame)
        if self.flags & F_BATCH:
            _out.append(frame)
        else:
            self._tx(frame)
        return 0

    cdef int _tx(self, bytes data) except -1:
        # Write now. Plain TCP with nothing queued in the transport: straight
        # to the socket, one send(2) without uvloop's write path (what the
        # bare picows responder does too). What the kernel does not take goes
        # to the transport, which then keeps the order, the backpressure
        # (pause_writing) and the error handling; so does every send error.
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t sent
        cdef object transport = self.transport
        if self.sock_fd >= 0 and n:
            if self.flags & F_TR_QUEUED:
                if transport.get_write_buffer_size():
                    transport.write(data)
                    return 0
                self.flags &= ~F_TR_QUEUED
            if not transport.is_closing():
                sent = send(self.sock_fd, PyBytes_AS_STRING(data), <size_t>n,
                            MSG_NOSIGNAL | MSG_DONTWAIT)
                if sent == n:
                    return 0
                if sent > 0:
                    data = data[sent:]
        self.flags |= F_TR_QUEUED
        transport.write(data)
        return 0

    cdef int _stop_tx(self) except -1:
        # Closing: from here on everything goes through the transport.
        self.sock_fd = -1
        return 0

    cdef int _flush(self) except -1:
        # Hand queued frames to the transport now (before it closes).
        if not (self.flags & F_BATCH) or not _out:
            return 0
        if len(_out) == 1:
            self._tx(_out[0])
        else:
            self.flags |= F_TR_QUEUED
            self.transport.writelines(_out)
        _out.clear()
        return 0

    cdef int _end_batch(self) except -1:
        try:
            if _out and self._state != S_CLOSED and not self.transport.is_closing():
                self._flush()
        finally:
            _out.clear()
            self.flags &= ~F_BATCH
        return 0

    cdef int _send_close(self, int code, str reason) except -1:
        if self.flags & F_CLOSE_SENT:
            return 0
        self.flags |= F_CLOSE_SENT
        if code == 1005:
            # The peer's close had no code: echo an empty close (§5.5.1).
            return self._write(encode_frame(8, NULL, 0, False))
        return self._write(encode_close(code, reason))

    cdef int _fail(self, object exc) except -1:
        """Fail the connection (RFC 6455 §7.1.7): the one place mapping errors
        to close codes for an open connection."""
        global _err_1002, _err_1007, _err_1008, _err_1009, _err_1011
        cdef int code = close_code_for(exc)
        if not isinstance(exc, WebSocketError):
            logger.error("websocket hook failed", exc_info=exc)
        elif isinstance(exc, InvalidState):
            logger.error("websocket misuse in a hook", exc_info=exc)
        if code == 1002:
            _err_1002 += 1
        elif code == 1007:
            _err_1007 += 1
        elif code == 1008:
            _err_1008 += 1
        elif code == 1009:
            _err_1009 += 1
        else:
            _err_1011 += 1
        self.rstate = R_FAILED
        if self._state != S_OPEN and self._state != S_CLOSING:
            return 0
        if not (self.flags & F_CLOSE_RECEIVED):
            self.close_code = code
            self.close_reason = public_reason_for(exc)
        self.flags |= F_FAILED
        self._send_close(code, public_reason_for(exc))
        self._state = S_CLOSING
        self.deadline = _coarse_now + self.close_timeout
        # Lingering close: FIN after our close frame, then read and discard
        # until the peer closes, so unread input never turns our close into
        # a TCP reset that could destroy the close frame in flight.
        self._flush()
        self._stop_tx()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()
        return 0

    cdef int _update_reading(self) except -1:
        cdef bint want = (self.read_pause & ~P_TRANSPORT) != 0
        cdef bint paused = (self.read_pause & P_TRANSPORT) != 0
        if self.transport is None or self._state == S_CLOSED or want == paused:
            return 0
        if want:
            self.read_pause |= P_TRANSPORT
            self.transport.pause_reading()
        else:
            self.read_pause &= ~P_TRANSPORT
            self.transport.resume_reading()
        return 0

    cdef int _tick(self, double now) except -1:
        global _handshake_timeouts, _pings_sent, _ping_timeouts, _close_timeouts
        if self._state == S_CONNECTING:
            if now >= self.deadline:
                # Slowloris guard: no response, just drop TCP.
                _handshake_timeouts += 1
                self._state = S_CLOSING
                self._stop_tx()
                self.transport.abort()
        elif self._state == S_OPEN:
            if self.ping_interval <= 0:
                return 0
            if self.ping_sent > 0:
                if self.last_rx >= self.ping_sent:
                    self.ping_sent = 0      # anything received proves liveness
                elif now - self.ping_sent >= self.ping_timeout:
                    _ping_timeouts += 1
                    self.abort()
            elif now - self.last_rx >= self.ping_interval:
                _pings_sent += 1
                self.ping_sent = now
                self._write(encode_frame(9, NULL, 0, False))
        elif self._state == S_CLOSING:
            if self.deadline > 0 and now >= self.deadline:
                _close_timeouts += 1
                self._stop_tx()
                self.transport.abort()
        return 0

    cdef int _report(self) except -1:
        if self.flags & F_REPORTED:
            return 0
        self.flags |= F_REPORTED
        try:
            if self.flags & F_OPENED:
                self.on_closed(self.close_code, self.close_reason)
            else:
                self.on_rejected()
        except Exception:
            logger.exception("websocket close hook failed")
        return 0

    # ------------------------------------------------------------ codec events

    cdef int on_message_event(self, int opcode, bytes data) except -1:
        if self._state != S_OPEN:
            return 0    # closing: the application asked to stop (§7.1.2)
        if opcode == 1:
            self.text_event(data)
        else:
            self.binary_fn(self, data)
        return 0

    cdef int text_event(self, bytes data) except -1:
        # A text message for the application: on_text, unless a compiled
        # subclass handles it in C (router.server._charger.ChargerCore).
        self.text_fn(self, data)
        return 0

    cdef int on_control_event(self, int opcode, bytes data) except -1:
        if opcode == 9 and self._state == S_OPEN:
            # §5.5.3: a pong carries the ping's application data.
            self._write(encode_frame(10, <const uint8_t*>PyBytes_AS_STRING(data),
                                     PyBytes_GET_SIZE(data), False))
        return 0

    cdef int on_close_event(self, int code, str reason) except -1:
        self.flags |= F_CLOSE_RECEIVED
        if not (self.flags & F_FAILED):
            self.close_code = code
            self.close_reason = reason
        if self._state == S_OPEN:
            # Peer-initiated: echo code and reason (§5.5.1), then close TCP; the
            # server closes first (§7.1.1).
            self._send_close(code, reason)
        self._state = S_CLOSING
        self.deadline = _coarse_now + self.close_timeout
        self._flush()
        self._stop_tx()
        self.transport.close()
        return 0


cdef bytes _large_header(int opcode, Py_ssize_t n):
    cdef uint8_t b[10]
    cdef Py_ssize_t hlen = 4 if n < 65536 else 10
    write_frame_header(b, opcode, n, hlen, False)
    return (<char*>b)[:hlen]
