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
