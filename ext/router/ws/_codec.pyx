# cython: freethreading_compatible = False
"""Sans-I/O WebSocket codec: RFC 6455 frames, RFC 7692 permessage-deflate and
the HTTP/1.1 upgrade (server side).

Bytes in, events and bytes out; nothing here touches a socket. The parts:

* ``utf8.pxi``      incremental UTF-8 validation (RFC 3629 §4)
* ``mask.pxi``      masking 8 bytes per step (RFC 6455 §5.3)
* ``deflate.pxi``   permessage-deflate negotiation and zlib streams (RFC 7692)
* ``handshake.pxi`` upgrade request parsing and 101/error responses (RFC 6455 §4)
* this file         frame reader (FrameCodec) and frame encoding (§5.2)

Buffers handed to :meth:`FrameCodec.receive` are unmasked *in place* where
that saves a copy: callers pass memory they own (the shared receive buffer of
``router.server._wsconn`` or a private copy in :class:`Connection`).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

from router.ws.errors import (
    InternalError,
    InvalidPayload,
    MessageTooBig,
    ProtocolError,
)

include "utf8.pxi"
include "mask.pxi"
include "deflate.pxi"
include "handshake.pxi"

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

cdef uint64_t _frames_in = 0
cdef uint64_t _messages_in = 0


cdef uint64_t frames_in_total():
    return _frames_in


def counters():
    """Process-wide codec counters, read at scrape time: ``frames_in`` and
    ``messages_in`` (router.server.wsconn.stats() includes them)."""
    return {"frames_in": _frames_in, "messages_in": _messages_in}


cdef inline Py_ssize_t _header_size(uint8_t b1) noexcept nogil:
    # RFC 6455 §5.2: 2 bytes, then 0/2/8 bytes of extended length, then the
    # 4-byte masking key when MASK is set.
    cdef uint8_t l7 = b1 & 0x7F
    cdef Py_ssize_t n = 2
    if l7 == 126:
        n = 4
    elif l7 == 127:
        n = 10
    if b1 & 0x80:
        n += 4
    return n


cdef inline bint _valid_close_code(int code) noexcept nogil:
    # RFC 6455 §7.4.1/§7.4.2 and the IANA registry: 1004-1006 and 1015 are
    # reserved or local-only and must not appear on the wire; 1016-2999 are
    # unassigned; 3000-4999 are for libraries and applications.
    if 1000 <= code <= 1003 or 1007 <= code <= 1014:
        return True
    return 3000 <= code <= 4999


cdef bytes encode_frame(int opcode, const uint8_t* p, Py_ssize_t n, bint rsv1):
    """One unmasked FIN frame (server to client, RFC 6455 §5.1: servers do not
    mask) in a single bytes object: header and payload with one copy."""
    cdef Py_ssize_t hlen = 2 if n < 126 else (4 if n < 65536 else 10)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, hlen + n)
    cdef uint8_t* b = <uint8_t*>PyBytes_AS_STRING(out)
    write_frame_header(b, opcode, n, hlen, rsv1)
    if n:
        memcpy(b + hlen, p, n)
    return out


cdef bytes encode_close(int code, str reason):
    """A close frame (RFC 6455 §5.5.1); the reason is cut to the 123 bytes a
    control frame can carry, at a character boundary."""
    cdef bytes r = reason.encode("utf-8")
    cdef bytes payload
    if len(r) > 123:
        r = r[:123].decode("utf-8", "ignore").encode("utf-8")
    payload = bytes(((code >> 8) & 0xFF, code & 0xFF)) + r
    return encode_frame(8, <const uint8_t*>PyBytes_AS_STRING(payload), len(payload), False)


def encode(int opcode, data, bint rsv1=False):
    """Encode one unmasked FIN frame (server to client).

    Args:
        opcode: RFC 6455 §5.2 opcode.
        data: payload (bytes-like).
        rsv1: set RSV1 (the payload is already deflated, RFC 7692 §6).
    """
    cdef const uint8_t[::1] view = data
    return encode_frame(opcode, &view[0] if len(view) else NULL, len(view), rsv1)


def close_frame(int code=1000, str reason=""):
    """Encode a close frame.

    Args:
        code: close code (RFC 6455 §7.4).
        reason: UTF-8 reason, cut to 123 bytes.
    """
    return encode_close(code, reason)


cdef class FrameCodec:

    def __cinit__(self):
        self.max_message_size = 1024 * 1024
        self.compress_threshold = 128
        self.rstate = R_HEADER
        self.z_level = 6
        self.z_mem_level = 5

    def __dealloc__(self):
        self.release()

    cdef void release(self) noexcept:
        """Free every buffer and zlib stream (idempotent)."""
        if self.m_buf != NULL:
            free(self.m_buf)
            self.m_buf = NULL
        self.m_len = self.m_cap = 0
        if self.c_buf != NULL:
            free(self.c_buf)
            self.c_buf = NULL
        if self.inflater != NULL:
            _free_inflater(self.inflater)
            self.inflater = NULL
        if self.deflater != NULL:
            _free_deflater(self.deflater)
            self.deflater = NULL

    cdef int configure(self, Py_ssize_t max_message_size, DeflateParams pmd,
                       int level, int mem_level, Py_ssize_t threshold) except -1:
        self.max_message_size = max_message_size
        self.compress_threshold = threshold
        self.z_level = level
        self.z_mem_level = mem_level
        self.pmd = 0
        if pmd is not None:
            self.pmd = PMD_ON
            if pmd.server_no_context_takeover:
                self.pmd |= PMD_SERVER_NO_CTX
            if pmd.client_no_context_takeover:
                self.pmd |= PMD_CLIENT_NO_CTX
            self.server_wbits = pmd.server_max_window_bits
            self.client_wbits = pmd.client_max_window_bits
        return 0

    cdef int receive(self, uint8_t* p, Py_ssize_t n) except -1:
        """Parse ``n`` bytes at ``p`` (modified in place: unmasking), firing
        the event hooks for every complete message and control frame.

        Raises:
            ProtocolError, InvalidPayload, MessageTooBig: the peer broke the
                protocol; the codec ignores all later input.
        """
        global _frames_in
        cdef Py_ssize_t need, k
        while n > 0:
            if self.rstate == R_HEADER:
                if self.hdr_len == 0 and n >= 2:
                    # Common case: the whole header is in this read; parse it
                    # where it lies, no copy.
                    need = _header_size(p[1])
                    if n < need:
                        memcpy(self.hdr, p, n)
                        self.hdr_len = <uint8_t>n
                        return 0
                    self._header(p)
                    p += need
                    n -= need
                else:
                    # A header split across reads: collect it in hdr[14].
                    if self.hdr_len < 2:
                        self.hdr[self.hdr_len] = p[0]
                        self.hdr_len += 1
                        p += 1
                        n -= 1
                        if self.hdr_len < 2:
                            continue
                    need = _header_size(self.hdr[1]) - self.hdr_len
                    k = need if need < n else n
                    memcpy(self.hdr + self.hdr_len, p, k)
                    self.hdr_len += <uint8_t>k
                    p += k
                    n -= k
                    if k < need:
                        return 0
                    self.hdr_len = 0
                    self._header(self.hdr)
                _frames_in += 1
                if self.f_remaining == 0:
                    self._finish_frame()
                    if self.rstate >= R_CLOSED:
                        return 0
                continue
            elif self.rstate == R_PAYLOAD:
                k = <Py_ssize_t>self.f_remaining if self.f_remaining < <uint64_t>n else n
                self._payload(p, k)
                p += k
                n -= k
                if self.f_remaining == 0:
                    self._finish_frame()
            if self.rstate >= R_CLOSED:
                return 0
        return 0

    cdef int _header(self, const uint8_t* h) except -1:
        """Validate a complete frame header (RFC 6455 §5.2) and enter R_PAYLOAD."""
        cdef uint8_t b0 = h[0]
        cdef uint8_t b1 = h[1]
        cdef uint8_t opcode = b0 & 0x0F
        cdef uint8_t fin = b0 & 0x80
        cdef uint8_t rsv1 = b0 & 0x40
        cdef uint64_t length = b1 & 0x7F
        cdef int off = 2
        self.rstate = R_FAILED      # until the header proves valid
        # §5.2: RSV2/RSV3 must be 0 unless an extension defines them; none does.
        if b0 & 0x30:
            raise ProtocolError("reserved bits RSV2/RSV3 set")
        if opcode >= 8:
            # §5.5: control frames are never fragmented and carry <= 125 bytes;
            # RFC 7692 §6: RSV1 is for data messages only.
            if opcode > 10:
                raise ProtocolError("reserved control opcode")
            if not fin:
                raise ProtocolError("fragmented control frame")
            if rsv1:
                raise ProtocolError("RSV1 on a control frame")
            if length > 125:
                raise ProtocolError("control frame longer than 125 bytes")
        elif opcode == 0:
            if self.m_opcode == 0:
                raise ProtocolError("continuation frame without a message")
            if rsv1:
                # RFC 7692 §6.1: only the first frame of a message has RSV1.
                raise ProtocolError("RSV1 on a continuation frame")
        elif opcode <= 2:
            if self.m_opcode != 0:
                # §5.4: fragments of one message are not interleaved with another.
                raise ProtocolError("new message before the previous one ended")
            if rsv1 and not (self.pmd & PMD_ON):
                raise ProtocolError("RSV1 set without permessage-deflate")
        else:
            raise ProtocolError("reserved data opcode")
        if not (b1 & 0x80):
            # §5.1: "a server MUST close the connection upon receiving a frame
            # that is not masked" (1002, §7.4.1).
            raise ProtocolError("unmasked client frame")
        if length == 126:
            length = (<uint64_t>h[2] << 8) | h[3]
            off = 4
            if length < 126:
                # §5.2: "the minimal number of bytes MUST be used".
                raise ProtocolError("non-minimal payload length")
        elif length == 127:
            length = ((<uint64_t>h[2] << 56) | (<uint64_t>h[3] << 48) |
                      (<uint64_t>h[4] << 40) | (<uint64_t>h[5] << 32) |
                      (<uint64_t>h[6] << 24) | (<uint64_t>h[7] << 16) |
                      (<uint64_t>h[8] << 8) | <uint64_t>h[9])
            off = 10
            if length >> 63:
                raise ProtocolError("payload length with the most significant bit set")
            if length < 65536:
                raise ProtocolError("non-minimal payload length")
        if opcode < 8:
            if opcode != 0:
                self.m_opcode = opcode
                self.m_compressed = 1 if rsv1 else 0
                self.m_utf8 = 0
                self.m_total = 0
            # Checked on the header, before a byte is buffered: a 1009 never
            # costs the memory it protects (§10.4).
            if length > <uint64_t>self.max_message_size - self.m_total:
                raise MessageTooBig("message exceeds max_message_size")
            self.m_total += length
        else:
            self.c_len = 0
        memcpy(self.f_key, h + off, 4)
        self.f_opcode = opcode
        self.f_fin = 1 if fin else 0
        self.f_len = length
        self.f_remaining = length
        self.f_mask_off = 0
        self.rstate = R_PAYLOAD
        return 0

    cdef int _payload(self, uint8_t* p, Py_ssize_t k) except -1:
        """Consume ``k`` payload bytes of the current frame."""
        global _messages_in
        cdef bytes data
        cdef uint8_t* d
        cdef uint8_t op
        cdef bint whole = (self.f_fin and self.m_len == 0 and
                           <uint64_t>k == self.f_len and self.f_remaining == self.f_len)
        if self.f_opcode >= 8:
            if self.c_buf == NULL:
                self.c_buf = <uint8_t*>malloc(125)
                if self.c_buf == NULL:
                    raise MemoryError()
            unmask_copy(self.c_buf + self.c_len, p, k, self.f_key, self.f_mask_off)
            self.c_len += <uint8_t>k
        elif whole and not self.m_compressed:
            # Fast path: a whole unfragmented frame in this read. Unmask
            # straight into the bytes object handed to the application: one
            # pass, one copy.
            data = PyBytes_FromStringAndSize(NULL, k)
            d = <uint8_t*>PyBytes_AS_STRING(data)
            unmask_copy(d, p, k, self.f_key, 0)
            op = self.m_opcode
            if op == 1 and utf8_step(0, d, k) != 0:
                self.rstate = R_FAILED
                raise InvalidPayload("text message is not valid UTF-8")
            self.f_remaining = 0
            self.m_opcode = 0
            _messages_in += 1
            self.rstate = R_HEADER
            self.f_opcode = 0xFF     # tells _finish_frame the message is delivered
            self.on_message_event(op, data)
            return 0
        elif whole:
            # A whole compressed frame: unmask in place, inflate from there.
            unmask_copy(p, p, k, self.f_key, 0)
            op = self.m_opcode
            self.f_remaining = 0
            self.m_opcode = 0
            self.rstate = R_HEADER
            self.f_opcode = 0xFF
            data = self._inflate(p, k)
            if op == 1 and utf8_step(0, <uint8_t*>PyBytes_AS_STRING(data), len(data)) != 0:
                self.rstate = R_FAILED
                raise InvalidPayload("text message is not valid UTF-8")
            _messages_in += 1
            self.on_message_event(op, data)
            return 0
        else:
            self._append(p, k)
            unmask_copy(self.m_buf + self.m_len, p, k, self.f_key, self.f_mask_off)
            if self.m_opcode == 1 and not self.m_compressed:
                # §8.1 + Autobahn 6.4: fail fast on invalid UTF-8, even in
                # the middle of a fragment.
                self.m_utf8 = utf8_step(self.m_utf8, self.m_buf + self.m_len, k)
                if self.m_utf8 == UTF8_REJECT:
                    self.rstate = R_FAILED
                    raise InvalidPayload("text message is not valid UTF-8")
            self.m_len += k
        self.f_mask_off = <uint8_t>((self.f_mask_off + k) & 3)
        self.f_remaining -= <uint64_t>k
        return 0

    cdef int _append(self, const uint8_t* p, Py_ssize_t k) except -1:
        """Make room for ``k`` more bytes in m_buf (geometric growth)."""
        cdef Py_ssize_t need = self.m_len + k
        cdef Py_ssize_t cap
        cdef uint8_t* nb
        if need <= self.m_cap:
            return 0
        # Grow with the bytes that actually arrived, never with the length a
        # header announces: a peer cannot make us allocate max_message_size
        # per connection by sending headers alone.
        cap = self.m_cap * 2
        if cap < 4096:
            cap = 4096
        if cap < need:
            cap = need
        if cap > self.max_message_size:
            cap = self.max_message_size if self.max_message_size >= need else need
        nb = <uint8_t*>realloc(self.m_buf, cap)
        if nb == NULL:
            raise MemoryError()
        self.m_buf = nb
        self.m_cap = cap
        return 0

    cdef int _finish_frame(self) except -1:
        cdef uint8_t op = self.f_opcode
        cdef bytes payload
        self.rstate = R_HEADER
        if op == 0xFF:
            return 0
        if op >= 8:
            payload = PyBytes_FromStringAndSize(<char*>self.c_buf, self.c_len)
            if self.c_buf != NULL:
                free(self.c_buf)
                self.c_buf = NULL
            self.c_len = 0
            if op == 8:
                return self._close(payload)
            return self.on_control_event(op, payload)
        if self.f_fin:
            return self._finish_message()
        return 0

    cdef int _close(self, bytes payload) except -1:
        # §5.5.1: empty, or a 2-byte code followed by a UTF-8 reason.
        cdef Py_ssize_t n = len(payload)
        cdef const uint8_t* b = <const uint8_t*>PyBytes_AS_STRING(payload)
        cdef int code = 1005    # §7.1.5: close frame without a status code
        cdef str reason = ""
        self.rstate = R_FAILED
        if n == 1:
            raise ProtocolError("close frame with a 1-byte payload")
        if n >= 2:
            code = (b[0] << 8) | b[1]
            if not _valid_close_code(code):
                raise ProtocolError("invalid close code")
            if utf8_step(0, b + 2, n - 2) != 0:
                raise InvalidPayload("close reason is not valid UTF-8")
            reason = payload[2:].decode("utf-8")
        self.rstate = R_CLOSED
        return self.on_close_event(code, reason)

    cdef int _finish_message(self) except -1:
        global _messages_in
        cdef uint8_t op = self.m_opcode
        cdef bytes data
        self.m_opcode = 0
        if self.m_compressed:
            data = self._inflate(self.m_buf, self.m_len)
            if op == 1 and utf8_step(0, <uint8_t*>PyBytes_AS_STRING(data), len(data)) != 0:
                self.rstate = R_FAILED
                raise InvalidPayload("text message is not valid UTF-8")
        else:
            if op == 1 and self.m_utf8 != 0:
                # A message may not end inside a character.
                self.rstate = R_FAILED
                raise InvalidPayload("text message ends inside a UTF-8 sequence")
            data = PyBytes_FromStringAndSize(<char*>self.m_buf, self.m_len)
        # The reassembly buffer does not outlive its message: an idle
        # connection holds no payload memory.
        if self.m_buf != NULL:
            free(self.m_buf)
            self.m_buf = NULL
        self.m_len = self.m_cap = 0
        _messages_in += 1
        return self.on_message_event(op, data)

    cdef object _inflate(self, const uint8_t* p, Py_ssize_t n):
        cdef z_stream* strm
        if self.pmd & PMD_CLIENT_NO_CTX:
            strm = _shared_inflater()
        else:
            if self.inflater == NULL:
                self.inflater = _new_inflater(self.client_wbits)
            strm = self.inflater
        try:
            return inflate_message(strm, p, n, self.max_message_size)
        except BaseException:
            self.rstate = R_FAILED
            raise
        finally:
            if self.pmd & PMD_CLIENT_NO_CTX:
                inflateReset(strm)

    cdef bytes encode_message(self, int opcode, const uint8_t* p, Py_ssize_t n):
        """Encode one message as a single FIN frame, deflated when
        permessage-deflate is on and the message is long enough."""
        cdef z_stream* strm
        if not (self.pmd & PMD_ON) or n < self.compress_threshold:
            return encode_frame(opcode, p, n, False)
        if self.pmd & PMD_SERVER_NO_CTX:
            strm = _shared_deflater(self.server_wbits, self.z_level, self.z_mem_level)
        else:
            if self.deflater == NULL:
                self.deflater = _new_deflater(self.server_wbits, self.z_level,
                                              self.z_mem_level)
            strm = self.deflater
        try:
            return deflate_frame(strm, opcode, p, n)
        finally:
            if self.pmd & PMD_SERVER_NO_CTX:
                deflateReset(strm)

    cdef int on_message_event(self, int opcode, bytes data) except -1:
        return 0

    cdef int on_control_event(self, int opcode, bytes data) except -1:
        return 0

    cdef int on_close_event(self, int code, str reason) except -1:
        return 0


cdef class Connection(FrameCodec):
    """Sans-I/O server side of one WebSocket connection.

    Events are tuples: ``(OP_TEXT, bytes)``, ``(OP_BINARY, bytes)``,
    ``(OP_PING, bytes)``, ``(OP_PONG, bytes)``, ``(OP_CLOSE, code, reason)``
    (``code`` 1005 when the close frame had none, RFC 6455 §7.1.5).
    """

    def __init__(self, Py_ssize_t max_message_size=1024 * 1024,
                 DeflateParams deflate=None, int compression_level=6,
                 int compression_mem_level=5, Py_ssize_t compression_threshold=0):
        """Create a codec.

        Args:
            max_message_size: largest message after reassembly/decompression.
            deflate: negotiated permessage-deflate parameters, or None.
            compression_level: zlib level for outgoing messages.
            compression_mem_level: zlib memLevel for outgoing messages.
            compression_threshold: shorter outgoing messages are not compressed.
        """
        self.events = []
        self.configure(max_message_size, deflate, compression_level,
                       compression_mem_level, compression_threshold)

    def receive_data(self, data):
        """Feed bytes from the peer; return the events they complete.

        If it raises, the events completed before the error are returned by
        :meth:`events_received`.

        Args:
            data: bytes-like; copied (the codec unmasks in place).

        Raises:
            ProtocolError: RFC 6455 framing violation (close 1002).
            InvalidPayload: bad UTF-8 or bad deflate data (close 1007).
            MessageTooBig: over ``max_message_size`` (close 1009).
        """
        cdef bytearray buf = bytearray(data)
        cdef list events
        if len(buf):
            # On an error the events completed before it stay queued for
            # events_received().
            self.receive(<uint8_t*><char*>buf, len(buf))
        events = self.events
        self.events = []
        return events

    def events_received(self):
        """Return and clear queued events: after receive_data() raised, the
        events completed before the error."""
        cdef list events = self.events
        self.events = []
        return events

    @property
    def closed(self):
        """True once a close frame was received (later bytes are ignored)."""
        return self.rstate == R_CLOSED

    @property
    def failed(self):
        """True once an error was raised (later bytes are ignored)."""
        return self.rstate == R_FAILED

    def send(self, int opcode, data):
        """Encode a text (1) or binary (2) message, compressed if negotiated.

        Args:
            opcode: 1 or 2.
            data: payload bytes.
        """
        cdef const uint8_t[::1] view = data
        if opcode != 1 and opcode != 2:
            raise ValueError("send() takes OP_TEXT or OP_BINARY")
        return self.encode_message(opcode, &view[0] if len(view) else NULL, len(view))

    cdef int on_message_event(self, int opcode, bytes data) except -1:
        self.events.append((opcode, data))
        return 0

    cdef int on_control_event(self, int opcode, bytes data) except -1:
        self.events.append((opcode, data))
        return 0

    cdef int on_close_event(self, int code, str reason) except -1:
        self.events.append((8, code, reason))
        return 0
