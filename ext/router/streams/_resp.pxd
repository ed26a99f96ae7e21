# Declarations of router.streams._resp: RESP2 request encoding for the hot
# Redis commands. Pure byte building, no I/O (see docs/architecture.md).
#
# RESP request format (https://redis.io/docs/latest/develop/reference/protocol-spec/):
# a command is an array of bulk strings, "*<argc>\r\n" followed by
# "$<len>\r\n<bytes>\r\n" for every argument.


cdef class CommandBuffer:
    # Output bytes live in one malloc'd block that grows by doubling and is
    # reused across take() calls, so a steady publisher allocates nothing but
    # the bytes object take() returns.
    cdef char* _data            # start of the block
    cdef Py_ssize_t _len        # bytes written since the last take()
    cdef Py_ssize_t _cap        # allocated size of the block
    cdef Py_ssize_t _initial    # size to shrink back to after a spike
    cdef Py_ssize_t _ncmd       # commands written since the last take()

    # All inline helpers are final; each fallible one declares its error return.
    cdef inline int _reserve(self, Py_ssize_t extra) except -1
    cdef inline int _raw(self, const char* p, Py_ssize_t n) except -1
    cdef inline int _lit(self, bytes b) except -1
    cdef inline int _header(self, char kind, long long n) except -1
    cdef inline int _bulk(self, const char* p, Py_ssize_t n) except -1
    cdef inline int _bulk_int(self, long long v) except -1
    cdef int _arg(self, object value) except -1
    cdef int _xadd_head(self, object key, object maxlen, Py_ssize_t nfields) except -1
    cdef int _xadd_trim(self, long long cap) except -1
    cdef int _xadd_head_split(self, bytes prefix, const char* rest, Py_ssize_t nrest,
                              object maxlen, Py_ssize_t nfields) except -1
    cdef int inbound(self, object key, object maxlen, object kind, object cs, object proto,
                     object node, object conn, long long ts_ms, object id, object action,
                     object payload, object extra) except -1


cdef class ReplyReader:
    # Received bytes live in one block; [_start, _end) is not parsed yet.
    cdef char* _buf
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _initial
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end
    # Completeness scan of the reply at _start, resumed across feeds:
    cdef Py_ssize_t _scan_pos        # where to continue (-1: not started)
    cdef long long _need             # elements still to see
    cdef Py_ssize_t _reply_end       # one past the reply once _scan returned 1

    cdef int _append(self, const char* p, Py_ssize_t n) except -1
    cdef int _consumed(self, Py_ssize_t upto) except -1
    cdef Py_ssize_t _line(self, Py_ssize_t pos) except -2
    cdef long long _int(self, Py_ssize_t pos, Py_ssize_t stop) except? -9
    cdef int _scan(self) except -1
    cdef object _build(self, Py_ssize_t* at, int depth)


cdef struct Span:
    Py_ssize_t off                   # offset in StreamEntries._raw
    Py_ssize_t len


cdef struct EntryRec:
    Span id
    Py_ssize_t first                 # index of its first field name in _spans
    Py_ssize_t nfields               # name/value pairs


cdef class StreamEntries:
    cdef bytes _raw                  # the whole reply, as received
    cdef EntryRec* _ent
    cdef Py_ssize_t _n
    cdef Py_ssize_t _ent_cap
    cdef Span* _spans                # name, value, name, value ... of every entry
    cdef Py_ssize_t _nspans
    cdef Py_ssize_t _span_cap

    cdef int _grow(self) except -1
    cdef int _grow_spans(self, Py_ssize_t need) except -1
    cdef long long _header(self, const char* buf, Py_ssize_t* at, char kind) except? -9
    cdef int _bulk(self, const char* buf, Py_ssize_t* at, Span* out) except -1
    cdef int _entries(self, const char* buf, Py_ssize_t* at) except -1
    cdef int _index(self) except -1
    cdef int _skip_bulk(self, const char* buf, Py_ssize_t* at) except -1
    cdef inline bytes _bytes(self, Span* sp)
    cdef bytes ref_c(self, Py_ssize_t i)
    cdef dict fields_c(self, Py_ssize_t i)
    cdef const char* base(self)
    cdef Py_ssize_t find_c(self, Py_ssize_t i, const char* name, Py_ssize_t n)
    cdef inline bint _nonempty(self, Py_ssize_t j)
    cdef Py_ssize_t _check(self, Py_ssize_t i) except -1
