# The declaration file of router.server._wsconn: the asyncio BufferedProtocol
# that drives the WebSocket codec for one TCP connection.
#
# It sits beside _wsconn.pyx at the path of the dotted module name; the .pyx
# declares no cdef field itself, so a lost .pxd fails the build
# (tests/test_build.py checks the compiled result too).

from libc.stdint cimport uint8_t

from router.ws._codec cimport FrameCodec, UpgradeRequest


# WebSocketProtocol.state (router.ws.types.ConnectionState mirrors these).
cdef enum:
    S_CONNECTING = 0    # TCP accepted, upgrade not answered yet
    S_OPEN = 1          # 101 written
    S_CLOSING = 2       # close frame sent/received, or rejected: waiting for TCP to end
    S_CLOSED = 3        # connection_lost was called

# Reasons reading is paused (WebSocketProtocol.read_pause bits).
cdef enum:
    P_HANDSHAKE = 1     # on_request has not answered yet
    P_APP = 2           # the application called pause_reading()
    P_WRITE = 4         # the transport's write buffer is above the high-water mark
    P_TRANSPORT = 128   # transport.pause_reading() is in effect

# WebSocketProtocol.flags bits.
cdef enum:
    F_OPENED = 1            # the 101 was written: on_closed (not on_rejected) ends it
    F_REPORTED = 2          # on_closed/on_rejected was called
    F_CLOSE_SENT = 4
    F_CLOSE_RECEIVED = 8
    F_FAILED = 16           # we failed the connection (close code is ours)
    F_RESPONDED = 32        # accept() or reject() wrote the HTTP response
    F_BATCH = 64            # inside buffer_updated: frames queue in _out, one write at the end
    F_TR_QUEUED = 128       # the transport was handed bytes it may not have written yet


cdef class _Sweeper:
    """The process-wide timer of one event loop: a coarse tick walks the
    connections of that loop (no timer handle per connection)."""
    cdef object loop
    cdef set conns
    cdef object handle
    cdef double resolution

    cdef int add(self, WebSocketProtocol conn) except -1
    cdef int discard(self, WebSocketProtocol conn) except -1


cdef class WebSocketProtocol(FrameCodec):
    # --- objects (8 bytes each)
    cdef readonly object transport
    cdef readonly UpgradeRequest request
    cdef object settings                # WSSettings
    cdef object handshake               # HandshakeParser until the request head is complete
    cdef bytes early                    # bytes after the request head, before accept()
    cdef object text_fn                 # type(self).on_text (unbound: no reference cycle)
    cdef object binary_fn               # type(self).on_binary
    cdef _Sweeper sweeper
    cdef object close_reason            # str: reason of the close we report
    # --- timers (monotonic seconds; 0 = not armed)
    cdef double deadline                # handshake or close deadline
    cdef double last_rx                 # coarse time of the last read
    cdef double ping_sent               # keepalive ping outstanding since
    cdef float ping_interval
    cdef float ping_timeout
    cdef float close_timeout
    # --- state
    cdef int close_code                 # code reported to on_closed
    cdef int sock_fd                    # plain TCP socket for direct sends, or -1 (_tx)
    cdef uint8_t _state                 # S_*
    cdef uint8_t read_pause             # P_* bits
    cdef uint8_t flags                  # F_* bits

    cdef int _handshake_data(self, bytes data) except -1
    cdef int _handed_over(self) except -1
    cdef int _reject_error(self, object exc) except -1
    cdef int _receive_early(self) except -1
    cdef int _send(self, int opcode, object data) except -1
    cdef int _write(self, bytes frame) except -1
    cdef int _tx(self, bytes data) except -1
    cdef int _stop_tx(self) except -1
    cdef int _flush(self) except -1
    cdef int _end_batch(self) except -1
    cdef int _send_close(self, int code, str reason) except -1
    cdef int _fail(self, object exc) except -1
    cdef int _update_reading(self) except -1
    cdef int _tick(self, double now) except -1
    cdef int _report(self) except -1
    cdef int text_event(self, bytes data) except -1
