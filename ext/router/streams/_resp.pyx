"""RESP2 request encoding of the hot Redis commands (compiled core).

``CommandBuffer`` appends complete commands to one growing byte block;
``take()`` hands the whole batch out as one ``bytes`` object, ready for one
``transport.write``. The XADD of an inbound entry (docs/streams.md, "Inbound
entries") has its own entry point that writes the field names as C literals,
so the per-message cost is a few ``memcpy`` calls.

Arguments are accepted as ``bytes``, ``str`` (encoded as UTF-8), ``int``
(decimal ASCII, as the stream contract wants numbers) or any object exporting
a contiguous buffer (``bytearray``, ``memoryview``). A failed append (bad
argument type, lone surrogate in a ``str``) leaves the buffer exactly as it
was, so a half-written command never reaches Redis.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.long cimport PyLong_AsLongLong, PyLong_Check
from cpython.unicode cimport PyUnicode_Check
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

cdef extern from "Python.h":
    # Returns the str's cached UTF-8 form (no copy for ASCII strings).
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL

# Keep the block after take() unless a spike grew it past this; then shrink
# back, so one burst does not pin memory for the life of the process.
cdef Py_ssize_t SHRINK_ABOVE = 4 * 1024 * 1024


cdef class CommandBuffer:
    """Accumulates RESP-encoded commands; ``take()`` returns them as one write.

    Args:
        initial: initial size of the byte block (it grows as needed).
    """

    def __cinit__(self, Py_ssize_t initial=16384):
        if initial < 64:
            initial = 64
        self._data = <char*>malloc(initial)
        if self._data == NULL:
            raise MemoryError()
        self._cap = initial
        self._initial = initial
        self._len = 0
        self._ncmd = 0

    def __dealloc__(self):
        free(self._data)
        self._data = NULL

    # -- low-level writers --------------------------------------------------

    cdef inline int _reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t need = self._len + extra
        cdef Py_ssize_t cap
        cdef char* block
        if need <= self._cap:
            return 0
        cap = self._cap
        while cap < need:
            cap *= 2
        block = <char*>realloc(self._data, cap)
        if block == NULL:
            raise MemoryError()
        self._data = block
        self._cap = cap
        return 0

    cdef inline int _raw(self, const char* p, Py_ssize_t n) except -1:
        self._reserve(n)
        memcpy(self._data + self._len, p, n)
        self._len += n
        return 0

    cdef inline int _lit(self, bytes b) except -1:
        # Constant protocol fragments: no hand-counted lengths to get wrong.
        return self._raw(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))

    cdef inline int _header(self, char kind, long long n) except -1:
        # "<kind><decimal>\r\n"; kind is '*' (array) or '$' (bulk length).
        cdef char tmp[24]
        cdef int i = 23
        cdef bint neg = n < 0
        cdef unsigned long long u = <unsigned long long>(-n if neg else n)
        self._reserve(26)
        tmp[i] = b'\n'
        i -= 1
        tmp[i] = b'\r'
        i -= 1
        while True:
            tmp[i] = <char>(48 + u % 10)
            u //= 10
            if u == 0:
                break
            i -= 1
        if neg:
            i -= 1
            tmp[i] = b'-'
        i -= 1
        tmp[i] = kind
        memcpy(self._data + self._len, tmp + i, 24 - i)
        self._len += 24 - i
        return 0

    cdef inline int _bulk(self, const char* p, Py_ssize_t n) except -1:
        self._header(b'$', n)
        self._reserve(n + 2)
        memcpy(self._data + self._len, p, n)
        self._len += n
        self._data[self._len] = b'\r'
        self._data[self._len + 1] = b'\n'
        self._len += 2
        return 0

    cdef inline int _bulk_int(self, long long v) except -1:
        # Numbers are decimal ASCII (docs/streams.md: "numbers are decimal ASCII").
        cdef char tmp[24]
        cdef int i = 24
        cdef bint neg = v < 0
        cdef unsigned long long u = <unsigned long long>(-v if neg else v)
        while True:
            i -= 1
            tmp[i] = <char>(48 + u % 10)
            u //= 10
            if u == 0:
                break
        if neg:
            i -= 1
            tmp[i] = b'-'
        return self._bulk(tmp + i, 24 - i)

    cdef int _arg(self, object value) except -1:
        cdef Py_ssize_t n
        cdef const char* p
        cdef Py_buffer view
        if PyBytes_CheckExact(value):
            return self._bulk(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
        if PyUnicode_Check(value):
            p = PyUnicode_AsUTF8AndSize(value, &n)
            return self._bulk(p, n)
        if PyLong_Check(value) and not isinstance(value, bool):
            return self._bulk_int(PyLong_AsLongLong(value))
        if value is None or isinstance(value, (bool, float)):
            raise TypeError(
                f"a Redis argument must be bytes, str or int, not {type(value).__name__}")
        PyObject_GetBuffer(value, &view, PyBUF_SIMPLE)
        try:
            self._bulk(<const char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef int _xadd_head(self, object key, object maxlen, Py_ssize_t nfields) except -1:
        # XADD key [MAXLEN ~ n] * field value ...   (https://redis.io/commands/xadd/)
        # "~" lets Redis trim whole radix-tree nodes only, which is what keeps
        # capped XADD O(1) amortised; the contract documents the cap as approximate.
        cdef long long cap = 0
        if maxlen is not None:
            cap = maxlen
            if cap <= 0:
                raise ValueError("maxlen must be positive or None")
        self._header(b'*', 3 + (3 if cap else 0) + nfields)
        self._lit(b"$4\r\nXADD\r\n")
        self._arg(key)
        if cap:
            self._lit(b"$6\r\nMAXLEN\r\n$1\r\n~\r\n")
            self._bulk_int(cap)
        self._lit(b"$1\r\n*\r\n")
        return 0

    # -- public API ---------------------------------------------------------

    def append_command(self, *args):
        """Append one command, e.g. ``append_command(b"XDEL", key, entry_id)``.

        Args:
            *args: the command name and its arguments (bytes, str, int or buffer).

        Raises:
            ValueError: no arguments.
            TypeError: an argument of another type; the buffer is unchanged.
        """
        cdef Py_ssize_t mark = self._len
        cdef object a
        if not args:
            raise ValueError("a command needs at least its name")
        try:
            self._header(b'*', len(args))
            for a in args:
                self._arg(a)
        except BaseException:
            self._len = mark
            raise
        self._ncmd += 1

    def append_xadd(self, key, maxlen, fields):
        """Append ``XADD key [MAXLEN ~ maxlen] * f1 v1 f2 v2 ...``.

        Args:
            key: the stream key.
            maxlen: approximate cap of the stream, or None for no cap.
            fields: a sequence alternating field names and values.

        Raises:
            ValueError: an odd or empty field list, or a non-positive maxlen.
            TypeError: a field of an unsupported type; the buffer is unchanged.
        """
        cdef Py_ssize_t mark = self._len
        cdef Py_ssize_t n = len(fields)
        cdef object f
        if n == 0 or n % 2:
            raise ValueError("fields must alternate names and values (even, non-empty)")
        try:
            self._xadd_head(key, maxlen, n)
            for f in fields:
                self._arg(f)
        except BaseException:
            self._len = mark
            raise
        self._ncmd += 1

    def append_inbound(self, key, maxlen, kind, cs, proto, node, conn, long long ts_ms,
                       id=None, action=None, payload=None, extra=()):
        """Append the XADD of one inbound entry (docs/streams.md, contract v1).

        Writes ``v 1 kind cs proto node conn ts`` and then ``id``, ``action``,
        ``payload`` when not None, then the ``extra`` name/value pairs (``code``,
        ``description``, ``details``, ``addr``, ``msgtype``, ``ref`` ...).

        Args:
            key: the inbound stream key (``KeySpace.inbound(shard)``).
            maxlen: approximate cap (``MAXLEN ~``), or None for no cap.
            kind, cs, proto, node, conn: contract fields (str or bytes).
            ts_ms: receive time, ms since the Unix epoch.
            id, action, payload: optional contract fields.
            extra: a sequence alternating more field names and values.

        Raises:
            ValueError: an odd ``extra`` or a non-positive maxlen.
            TypeError: a field of an unsupported type; the buffer is unchanged.
        """
        cdef Py_ssize_t mark = self._len
        cdef Py_ssize_t nextra = len(extra)
        cdef Py_ssize_t nfields = 14 + nextra
        cdef object f
        if nextra % 2:
            raise ValueError("extra must alternate names and values")
        if id is not None:
            nfields += 2
        if action is not None:
            nfields += 2
        if payload is not None:
            nfields += 2
        try:
            self._xadd_head(key, maxlen, nfields)
            # Field names are fixed by the contract: write them as literals.
            self._lit(b"$1\r\nv\r\n$1\r\n1\r\n$4\r\nkind\r\n")
            self._arg(kind)
            self._lit(b"$2\r\ncs\r\n")
            self._arg(cs)
            self._lit(b"$5\r\nproto\r\n")
            self._arg(proto)
            self._lit(b"$4\r\nnode\r\n")
            self._arg(node)
            self._lit(b"$4\r\nconn\r\n")
            self._arg(conn)
            self._lit(b"$2\r\nts\r\n")
            self._bulk_int(ts_ms)
            if id is not None:
                self._lit(b"$2\r\nid\r\n")
                self._arg(id)
            if action is not None:
                self._lit(b"$6\r\naction\r\n")
                self._arg(action)
            if payload is not None:
                self._lit(b"$7\r\npayload\r\n")
                self._arg(payload)
            for f in extra:
                self._arg(f)
        except BaseException:
            self._len = mark
            raise
        self._ncmd += 1

    def take(self):
        """Return every pending command as one ``bytes`` and empty the buffer."""
        cdef bytes out = PyBytes_FromStringAndSize(self._data, self._len)
        self.clear()
        return out

    def clear(self):
        """Drop every pending command."""
        cdef char* block
        self._len = 0
        self._ncmd = 0
        if self._cap > SHRINK_ABOVE and self._initial < self._cap:
            block = <char*>realloc(self._data, self._initial)
            if block != NULL:
                self._data = block
                self._cap = self._initial

    def __len__(self):
        """Number of commands pending (since the last ``take``)."""
        return self._ncmd

    @property
    def nbytes(self):
        """Number of encoded bytes pending."""
        return self._len

    @property
    def capacity(self):
        """Bytes allocated for the block (memory accounting, tests)."""
        return self._cap


def xread_entries(reply):
    """Flatten an XREAD reply for one stream into ``[(id, {field: value})]``.

    hiredis returns ``[[key, [[id, [f1, v1, ...]], ...]]]`` for XREAD and None
    when BLOCK timed out (https://redis.io/commands/xread/). An entry whose field
    list is nil (deleted while pending, XREADGROUP only) yields an empty dict.

    Args:
        reply: the parsed XREAD reply.

    Raises:
        TypeError, ValueError: the reply does not have the XREAD shape.
    """
    cdef list out = []
    cdef list stream_entries
    cdef list entry
    cdef list flat
    cdef dict fields
    cdef Py_ssize_t i, n
    if reply is None:
        return out
    for stream in reply:
        stream_entries = stream[1]
        for entry in stream_entries:
            fields = {}
            flat = entry[1]
            if flat is not None:
                n = len(flat)
                if n % 2:
                    raise ValueError("odd field list in a stream entry")
                i = 0
                while i < n:
                    fields[flat[i]] = flat[i + 1]
                    i += 2
            out.append((entry[0], fields))
    return out
