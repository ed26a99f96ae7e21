# The declaration file of router.ws._codec: the sans-I/O WebSocket codec
# (RFC 6455 framing, RFC 7692 permessage-deflate, HTTP upgrade).
#
# Cython finds this file only because it sits beside _codec.pyx at the path of
# the dotted module name (ext/router/ws/_codec.pxd); the .pyx declares no cdef
# field of its own, so compiling without this file fails
# (tests/test_build.py checks the compiled result).

from libc.stdint cimport int8_t, uint8_t, uint32_t, uint64_t


cdef extern from "zlib.h" nogil:
    ctypedef struct z_stream:
        uint8_t* next_in
        unsigned int avail_in
        uint8_t* next_out
        unsigned int avail_out
        void* zalloc
        void* zfree
        void* opaque


# Reader states (FrameCodec.rstate).
cdef enum:
    R_HEADER = 0        # waiting for (the rest of) a frame header
    R_PAYLOAD = 1       # inside a frame payload
    R_CLOSED = 2        # a close frame was received: later bytes are ignored
    R_FAILED = 3        # a protocol error was raised: later bytes are ignored

# permessage-deflate flags (FrameCodec.pmd).
cdef enum:
    PMD_ON = 1                  # negotiated
    PMD_SERVER_NO_CTX = 2       # reset our compressor after each message
    PMD_CLIENT_NO_CTX = 4       # the client resets its compressor after each message


cdef class DeflateParams:
    """Result of the permessage-deflate negotiation (RFC 7692 §7.1)."""
    cdef readonly int server_max_window_bits    # window we compress with
    cdef readonly int client_max_window_bits    # window the client compresses with
    cdef readonly bint server_no_context_takeover
    cdef readonly bint client_no_context_takeover
    cdef readonly str response                  # Sec-WebSocket-Extensions value


cdef class UpgradeRequest:
    """A parsed HTTP/1.1 WebSocket upgrade request (RFC 6455 §4.2.1)."""
    cdef readonly str method
    cdef readonly str path                      # raw request target, not decoded
    # Headers packed in one str (name \0 value \0 ...): one object instead of
    # a list of tuples of strs (~1 KiB less per idle connection); the
    # `headers` property unpacks on demand.
    cdef str _packed_headers
    cdef readonly list subprotocols             # offered, in order
    cdef readonly object extensions             # raw Sec-WebSocket-Extensions or None
    cdef readonly object authorization
    cdef readonly object host
    cdef readonly str key                       # Sec-WebSocket-Key


cdef class FrameCodec:
    """Server-side frame reader/writer for one connection.

    All fields are C data: an idle connection costs sizeof(this struct) plus
    nothing else (no buffer is held between frames; m_buf/c_buf exist only
    while a fragmented message or a split control frame is being read, zlib
    streams only with context takeover).
    """
    # --- limits
    cdef Py_ssize_t max_message_size    # after reassembly and decompression
    cdef Py_ssize_t compress_threshold  # smaller outgoing messages are not compressed

    # --- current frame
    cdef uint64_t f_len                 # payload length of the current frame
    cdef uint64_t f_remaining           # payload bytes still to read
    cdef uint8_t rstate                 # R_* above
    cdef uint8_t hdr_len                # header bytes held in hdr (split header)
    cdef uint8_t f_opcode
    cdef uint8_t f_fin
    cdef uint8_t f_mask_off             # payload offset mod 4 (mask rotation)
    cdef uint8_t c_len                  # control payload bytes held in c_buf
    cdef uint8_t m_opcode               # 1/2 while a message is open, else 0
    cdef uint8_t m_compressed           # RSV1 on the first frame (RFC 7692 §6)
    cdef uint8_t f_key[4]               # masking key (RFC 6455 §5.3)
    cdef uint8_t hdr[14]                # a header split across reads

    # --- current message
    cdef uint32_t m_utf8                # incremental UTF-8 validator state
    cdef uint64_t m_total               # payload bytes of the message so far
    cdef Py_ssize_t m_len               # bytes held in m_buf
    cdef Py_ssize_t m_cap
    cdef uint8_t* m_buf                 # reassembly buffer (malloc, freed per message)
    cdef uint8_t* c_buf                 # split control frame payload (<= 125 bytes)

    # --- permessage-deflate
    cdef uint8_t pmd                    # PMD_* flags
    cdef int8_t server_wbits
    cdef int8_t client_wbits
    cdef int8_t z_level
    cdef int8_t z_mem_level
    cdef z_stream* inflater             # only with client context takeover
    cdef z_stream* deflater             # only with server context takeover

    cdef int configure(self, Py_ssize_t max_message_size, DeflateParams pmd,
                       int level, int mem_level, Py_ssize_t threshold) except -1
    cdef int receive(self, uint8_t* data, Py_ssize_t n) except -1
    cdef int _header(self, const uint8_t* h) except -1
    cdef int _payload(self, uint8_t* p, Py_ssize_t k) except -1
    cdef int _finish_frame(self) except -1
    cdef int _finish_message(self) except -1
    cdef int _close(self, bytes payload) except -1
    cdef int _append(self, const uint8_t* p, Py_ssize_t k) except -1
    cdef object _inflate(self, const uint8_t* p, Py_ssize_t n)
    cdef bytes encode_message(self, int opcode, const uint8_t* p, Py_ssize_t n)
    cdef void release(self) noexcept

    # Event hooks: subclasses override (the sans-I/O Connection collects
    # events; router.server._wsconn drives the socket).
    cdef int on_message_event(self, int opcode, bytes data) except -1
    cdef int on_control_event(self, int opcode, bytes data) except -1
    cdef int on_close_event(self, int code, str reason) except -1


cdef class Connection(FrameCodec):
    """The sans-I/O API over FrameCodec for tests, fuzzing and tools."""
    cdef list events


cdef bytes encode_frame(int opcode, const uint8_t* p, Py_ssize_t n, bint rsv1)
cdef bytes encode_close(int code, str reason)
cdef uint64_t frames_in_total()


cdef inline void write_frame_header(uint8_t* b, int opcode, Py_ssize_t n, Py_ssize_t hlen,
                                    bint rsv1) noexcept nogil:
    # The header of an unmasked FIN frame (server to client, RFC 6455 §5.2);
    # hlen is 2, 4 or 10 for the 7-, 16- and 64-bit length forms. Inline here,
    # in the .pxd, so the codec and the connection glue share one copy.
    b[0] = 0x80 | (0x40 if rsv1 else 0) | opcode
    if hlen == 2:
        b[1] = <uint8_t>n
    elif hlen == 4:
        b[1] = 126
        b[2] = <uint8_t>(n >> 8)
        b[3] = <uint8_t>n
    else:
        b[1] = 127
        b[2] = <uint8_t>(<uint64_t>n >> 56)
        b[3] = <uint8_t>(<uint64_t>n >> 48)
        b[4] = <uint8_t>(<uint64_t>n >> 40)
        b[5] = <uint8_t>(<uint64_t>n >> 32)
        b[6] = <uint8_t>(n >> 24)
        b[7] = <uint8_t>(n >> 16)
        b[8] = <uint8_t>(n >> 8)
        b[9] = <uint8_t>n
