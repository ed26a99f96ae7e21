# permessage-deflate (RFC 7692): negotiation, zlib streams, bounded inflate.
#
# Memory design: with *_no_context_takeover (the default we ask for) the
# compressor/decompressor is reset after every message anyway, so one stream
# per process serves every connection (the event loop is single-threaded):
# such connections hold no zlib memory at all. Only connections that keep
# context get their own stream, created on their first compressed message
# with the negotiated (small) window.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.ref cimport PyObject
from libc.stdint cimport uint8_t
from libc.stdlib cimport calloc, free
from libc.string cimport memmove

cdef extern from "zlib.h" nogil:
    int Z_OK, Z_STREAM_END, Z_NEED_DICT, Z_BUF_ERROR, Z_MEM_ERROR, Z_DATA_ERROR
    int Z_SYNC_FLUSH, Z_DEFLATED, Z_DEFAULT_STRATEGY
    int inflateInit2(z_stream* strm, int window_bits)
    int inflate(z_stream* strm, int flush)
    int inflateReset(z_stream* strm)
    int inflateEnd(z_stream* strm)
    int deflateInit2(z_stream* strm, int level, int method, int window_bits,
                     int mem_level, int strategy)
    int deflate(z_stream* strm, int flush)
    int deflateReset(z_stream* strm)
    int deflateEnd(z_stream* strm)
    unsigned long deflateBound(z_stream* strm, unsigned long source_len)

cdef extern from "Python.h":
    PyObject* _bytes_new "PyBytes_FromStringAndSize"(const char* s, Py_ssize_t n)
    char* _bytes_ptr "PyBytes_AS_STRING"(PyObject* o)
    int _PyBytes_Resize(PyObject** o, Py_ssize_t n)
    void Py_DECREF(PyObject* o)

# RFC 7692 §7.2.2: the sender strips this trailer of the final empty stored
# block; the receiver appends it back before inflating.
cdef const uint8_t* _TAIL = b"\x00\x00\xff\xff"

cdef z_stream* _inflate_shared = NULL
# One shared compressor per (window bits, level, memLevel): 16 * 10 * 10.
cdef z_stream* _deflate_shared[1600]


cdef z_stream* _new_inflater(int wbits) except NULL:
    cdef z_stream* s = <z_stream*>calloc(1, sizeof(z_stream))
    if s == NULL:
        raise MemoryError()
    # Negative window bits: raw deflate, no zlib header (RFC 7692 §7.2.1).
    if inflateInit2(s, -wbits) != Z_OK:
        free(s)
        raise MemoryError()
    return s


cdef z_stream* _new_deflater(int wbits, int level, int mem_level) except NULL:
    cdef z_stream* s = <z_stream*>calloc(1, sizeof(z_stream))
    if s == NULL:
        raise MemoryError()
    if deflateInit2(s, level, Z_DEFLATED, -wbits, mem_level, Z_DEFAULT_STRATEGY) != Z_OK:
        free(s)
        raise MemoryError()
    return s


cdef void _free_inflater(z_stream* s) noexcept:
    inflateEnd(s)
    free(s)


cdef void _free_deflater(z_stream* s) noexcept:
    deflateEnd(s)
    free(s)


cdef z_stream* _shared_inflater() except NULL:
    # A 15-bit window inflates every stream whatever window the peer used.
    global _inflate_shared
    if _inflate_shared == NULL:
        _inflate_shared = _new_inflater(15)
    return _inflate_shared


cdef z_stream* _shared_deflater(int wbits, int level, int mem_level) except NULL:
    cdef int i = wbits * 100 + level * 10 + mem_level
    if _deflate_shared[i] == NULL:
        _deflate_shared[i] = _new_deflater(wbits, level, mem_level)
    return _deflate_shared[i]


cdef object inflate_message(z_stream* s, const uint8_t* p, Py_ssize_t n, Py_ssize_t limit):
    """Inflate one message (RFC 7692 §7.2.2) into a new bytes object.

    The output grows geometrically and never beyond ``limit + 1`` bytes, so a
    deflate bomb closes with 1009 having allocated at most the limit.

    Raises:
        InvalidPayload: the data is not a valid deflate stream (1007).
        MessageTooBig: the output exceeds ``limit`` (1009).
    """
    cdef Py_ssize_t cap = n * 4 + 64
    cdef PyObject* out
    cdef int ret
    cdef bint tail = False
    cdef Py_ssize_t produced
    cdef object result
    if cap > limit + 1:
        cap = limit + 1
    out = _bytes_new(NULL, cap)
    if out == NULL:
        raise MemoryError()
    s.next_in = <uint8_t*>p
    s.avail_in = <unsigned int>n
    s.next_out = <uint8_t*>_bytes_ptr(out)
    s.avail_out = <unsigned int>cap
    try:
        while True:
            if s.avail_in == 0 and not tail:
                s.next_in = <uint8_t*>_TAIL
                s.avail_in = 4
                tail = True
            ret = inflate(s, Z_SYNC_FLUSH)
            if ret == Z_STREAM_END:
                # BFINAL was set (allowed, RFC 7692 §7.2.3.3): the message ends
                # here; the next one starts a fresh stream.
                inflateReset(s)
                break
            if ret == Z_MEM_ERROR:
                raise MemoryError()
            if ret != Z_OK and ret != Z_BUF_ERROR:
                inflateReset(s)
                raise InvalidPayload("compressed message does not inflate")
            if s.avail_out == 0:
                produced = cap
                if cap > limit:
                    inflateReset(s)
                    raise MessageTooBig("inflated message exceeds max_message_size")
                cap = cap * 2
                if cap > limit + 1:
                    cap = limit + 1
                if _PyBytes_Resize(&out, cap) < 0:
                    out = NULL
                    raise MemoryError()
                s.next_out = <uint8_t*>_bytes_ptr(out) + produced
                s.avail_out = <unsigned int>(cap - produced)
                continue
            if s.avail_in == 0 and tail:
                break
            if ret == Z_BUF_ERROR:
                inflateReset(s)
                raise InvalidPayload("compressed message does not inflate")
        produced = cap - s.avail_out
        if _PyBytes_Resize(&out, produced) < 0:
            out = NULL
            raise MemoryError()
        result = <object>out
    finally:
        if out != NULL:
            Py_DECREF(out)
    return result


cdef bytes deflate_frame(z_stream* s, int opcode, const uint8_t* p, Py_ssize_t n):
    """Compress one message and frame it with RSV1 (RFC 7692 §7.2.1): the
    payload is deflated into the output bytes object behind a 10-byte gap, then
    the header is written and the frame moved down once."""
    cdef Py_ssize_t cap = <Py_ssize_t>deflateBound(s, n) + 16 + 10
    cdef PyObject* out = _bytes_new(NULL, cap)
    cdef uint8_t* b
    cdef Py_ssize_t used, clen, hlen
    cdef int ret
    cdef object result
    if out == NULL:
        raise MemoryError()
    try:
        b = <uint8_t*>_bytes_ptr(out)
        s.next_in = <uint8_t*>p
        s.avail_in = <unsigned int>n
        s.next_out = b + 10
        s.avail_out = <unsigned int>(cap - 10)
        while True:
            ret = deflate(s, Z_SYNC_FLUSH)
            if ret != Z_OK and ret != Z_BUF_ERROR:
                raise InternalError("deflate failed")
            if s.avail_out != 0:
                break
            # deflateBound does not count the sync flush marker: grow (rare).
            used = cap
            cap += 64
            if _PyBytes_Resize(&out, cap) < 0:
                out = NULL
                raise MemoryError()
            b = <uint8_t*>_bytes_ptr(out)
            s.next_out = b + used
            s.avail_out = <unsigned int>(cap - used)
        clen = cap - s.avail_out - 10
        if (clen >= 4 and b[10 + clen - 4] == 0 and b[10 + clen - 3] == 0
                and b[10 + clen - 2] == 0xFF and b[10 + clen - 1] == 0xFF):
            # Strip the 00 00 ff ff the sync flush ends with (RFC 7692 §7.2.1).
            clen -= 4
        elif clen == 0:
            # An empty message after an earlier flush produces no output; send
            # the empty stored block instead (RFC 7692 §7.2.3.6: one 0x00 byte).
            b[10] = 0
            clen = 1
        hlen = 2 if clen < 126 else (4 if clen < 65536 else 10)
        write_frame_header(b + 10 - hlen, opcode, clen, hlen, True)
        if hlen != 10:
            memmove(b, b + 10 - hlen, hlen + clen)
        if _PyBytes_Resize(&out, hlen + clen) < 0:
            out = NULL
            raise MemoryError()
        result = <object>out
    finally:
        if out != NULL:
            Py_DECREF(out)
    return <bytes>result


cdef class DeflateParams:

    def __init__(self, int server_max_window_bits=15, int client_max_window_bits=15,
                 bint server_no_context_takeover=False,
                 bint client_no_context_takeover=False, str response=""):
        """Negotiated permessage-deflate parameters (see negotiate_deflate).

        Args:
            server_max_window_bits: window we compress with (9..15).
            client_max_window_bits: window the client compresses with (8..15).
            server_no_context_takeover: we reset after each message.
            client_no_context_takeover: the client resets after each message.
            response: the Sec-WebSocket-Extensions response value.
        """
        if not 9 <= server_max_window_bits <= 15 or not 8 <= client_max_window_bits <= 15:
            raise ValueError("window bits out of range")
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.response = response

    def __repr__(self):
        return f"DeflateParams({self.response!r})"


cdef object _window_bits(str value):
    # RFC 7692 §7.1.2.1: 1*DIGIT in 8..15, possibly as a quoted-string.
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        value = value[1:len(value) - 1]
    if not value.isdigit() or len(value) > 2 or value[0] == "0":
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def negotiate_deflate(str offers, int server_max_window_bits=12,
                      int client_max_window_bits=12,
                      bint server_no_context_takeover=True,
                      bint client_no_context_takeover=True):
    """Accept the first acceptable permessage-deflate offer (RFC 7692 §5, §7.1).

    Offers with unknown, duplicate or invalid parameters are declined (§7.1:
    "a server MUST decline an extension negotiation offer" with them), and so
    is ``server_max_window_bits=8``, which zlib cannot honour for raw deflate.
    Our limits only ever lower the windows: the server window is announced
    (§7.1.2.1), the client window only when the client offered
    ``client_max_window_bits`` (§7.1.2.2; otherwise we inflate with 15 bits).

    Args:
        offers: the raw Sec-WebSocket-Extensions request header value(s).
        server_max_window_bits: our compression window limit (9..15).
        client_max_window_bits: the client window we ask for (8..15).
        server_no_context_takeover: announce that we reset per message.
        client_no_context_takeover: ask the client to reset per message.

    Returns:
        DeflateParams with the response header value, or None to decline.
    """
    cdef str offer, item, name, value
    cdef dict params
    cdef bint ok
    for offer in offers.split(","):
        items = [x.strip() for x in offer.split(";")]
        if items[0].lower() != "permessage-deflate":
            continue
        params = {}
        ok = True
        for item in items[1:]:
            if not item:
                ok = False
                break
            name, _, value = item.partition("=")
            name = name.strip().lower()
            value = value.strip()
            if name in params:
                ok = False
                break
            if name in ("server_no_context_takeover", "client_no_context_takeover"):
                if value:
                    ok = False
                    break
                params[name] = True
            elif name == "server_max_window_bits":
                bits = _window_bits(value)
                if bits is None:
                    ok = False
                    break
                params[name] = bits
            elif name == "client_max_window_bits":
                if value:
                    bits = _window_bits(value)
                    if bits is None:
                        ok = False
                        break
                    params[name] = bits
                else:
                    params[name] = 15
            else:
                ok = False
                break
        if not ok:
            continue
        s_bits = min(server_max_window_bits, params.get("server_max_window_bits", 15))
        if s_bits < 9:
            continue
        s_no_ctx = server_no_context_takeover or "server_no_context_takeover" in params
        c_no_ctx = client_no_context_takeover or "client_no_context_takeover" in params
        response = ["permessage-deflate"]
        if s_no_ctx:
            response.append("server_no_context_takeover")
        if c_no_ctx:
            response.append("client_no_context_takeover")
        if s_bits < 15 or "server_max_window_bits" in params:
            response.append(f"server_max_window_bits={s_bits}")
        c_bits = 15
        if "client_max_window_bits" in params:
            c_bits = min(client_max_window_bits, params["client_max_window_bits"])
            response.append(f"client_max_window_bits={c_bits}")
        return DeflateParams(s_bits, c_bits, s_no_ctx, c_no_ctx, "; ".join(response))
    return None
