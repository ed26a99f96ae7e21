"""RESP2 for the router's Redis connections (compiled core): request
encoding of the hot commands, and a reply parser.

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

``ReplyReader`` parses replies. ``gets()`` builds Python objects the way
hiredis does (bytes, int, None, lists; error replies as
:class:`RedisReplyError` values). ``gets_xread()`` takes an XREAD reply as
one ``StreamEntries``: the raw bytes of the
reply and the offsets of every entry id, field name and value, with no Python
object per field. The router's out-stream dispatch reads the fields it needs
from there in C (``router.server._charger``); everything else asks for a
dict per entry.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.unicode cimport PyUnicode_DecodeUTF8
from cpython.long cimport PyLong_AsLongLong, PyLong_Check
from cpython.unicode cimport PyUnicode_Check
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memmove

from router.streams.errors import RedisProtocolError, RedisReplyError

cdef extern from "Python.h":
    # Returns the str's cached UTF-8 form (no copy for ASCII strings).
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL

# Keep the block after take() unless a spike grew it past this; then shrink
# back, so one burst does not pin memory for the life of the process.
cdef Py_ssize_t SHRINK_ABOVE = 4 * 1024 * 1024


# The growable byte block of CommandBuffer (output) and ReplyReader (input).

cdef char* _block_new(Py_ssize_t* cap) except NULL:
    # A block of cap bytes (at least 64; cap is updated).
    cdef char* block
    if cap[0] < 64:
        cap[0] = 64
    block = <char*>malloc(cap[0])
    if block == NULL:
        raise MemoryError()
    return block


cdef int _block_grow(char** data, Py_ssize_t* cap, Py_ssize_t need) except -1:
    # Double the block until it holds need bytes.
    cdef Py_ssize_t size = cap[0]
    cdef char* block
    while size < need:
        size *= 2
    block = <char*>realloc(data[0], size)
    if block == NULL:
        raise MemoryError()
    data[0] = block
    cap[0] = size
    return 0


cdef void _block_shrink(char** data, Py_ssize_t* cap, Py_ssize_t initial) noexcept:
    # An empty block that a spike grew past SHRINK_ABOVE goes back to its
    # initial size (if realloc fails, the larger block is kept).
    cdef char* block
    if cap[0] > SHRINK_ABOVE and initial < cap[0]:
        block = <char*>realloc(data[0], initial)
        if block != NULL:
            data[0] = block
            cap[0] = initial


cdef long long _cap(object maxlen) except -1:
    # An XADD's MAXLEN argument: 0 for None (no cap), else a positive count.
    cdef long long cap
    if maxlen is None:
        return 0
    cap = maxlen
    if cap <= 0:
        raise ValueError("maxlen must be positive or None")
    return cap


cdef class CommandBuffer:
    """Accumulates RESP-encoded commands; ``take()`` returns them as one write.

    Args:
        initial: initial size of the byte block (it grows as needed).
    """

    def __cinit__(self, Py_ssize_t initial=16384):
        self._data = _block_new(&initial)
        self._cap = initial
        self._initial = initial
        self._len = 0
        self._ncmd = 0

    def __dealloc__(self):
        free(self._data)
        self._data = NULL

    # -- low-level writers --------------------------------------------------

    cdef inline int _reserve(self, Py_ssize_t extra) except -1:
        if self._len + extra <= self._cap:
            return 0
        return _block_grow(&self._data, &self._cap, self._len + extra)

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
        cdef char* d
        cdef char tmp[24]
        if 0 <= n < 100:
            # Most lengths of an XADD (field names, ids, small values).
            self._reserve(5)
            d = self._data + self._len
            d[0] = kind
            if n < 10:
                d[1] = <char>(48 + n)
                d[2] = b'\r'
                d[3] = b'\n'
                self._len += 4
            else:
                d[1] = <char>(48 + n // 10)
                d[2] = <char>(48 + n % 10)
                d[3] = b'\r'
                d[4] = b'\n'
                self._len += 5
            return 0
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
        cdef long long cap = _cap(maxlen)
        self._header(b'*', 3 + (3 if cap else 0) + nfields)
        self._lit(b"$4\r\nXADD\r\n")
        self._arg(key)
        return self._xadd_trim(cap)

    cdef int _xadd_trim(self, long long cap) except -1:
        # The part of an XADD after its key.
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
        self.inbound(key, maxlen, kind, cs, proto, node, conn, ts_ms, id, action, payload,
                     extra)

    cdef int inbound(self, object key, object maxlen, object kind, object cs, object proto,
                     object node, object conn, long long ts_ms, object id, object action,
                     object payload, object extra) except -1:
        # append_inbound, callable from C (router.streams._publisher).
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
        return 0

    def append_reply(self, bytes key_prefix, StreamEntries entries, Py_ssize_t i, payload,
                     maxlen):
        """Append the XADD answering entry ``i`` of ``entries`` (a charger CALL)
        with a CALLRESULT: ``XADD <key_prefix><node> [MAXLEN ~ maxlen] * kind
        result cs <cs> conn <conn> id <id> payload <payload>`` (docs/streams.md,
        "Outbound entries"). ``node``, ``cs``, ``conn`` and ``id`` are copied
        from the entry's bytes, with no Python object made for them.

        Args:
            key_prefix: the out streams' prefix, e.g. ``b"ocpp:out:"``.
            entries: a group read (``ReplyReader.gets_xread``).
            i: the entry's index.
            payload: the encoded CALLRESULT payload (bytes or buffer).
            maxlen: approximate cap of the out stream, or None.

        Raises:
            ValueError: the entry lacks node, cs, conn or id (the buffer is unchanged).
            IndexError: no entry ``i``.
            TypeError: a payload of another type (the buffer is unchanged).
        """
        cdef Py_ssize_t mark = self._len
        cdef Py_ssize_t node, cs, conn, mid
        cdef const char* base = entries.base()
        i = entries._check(i)
        node = entries.find_c(i, b"node", 4)
        cs = entries.find_c(i, b"cs", 2)
        conn = entries.find_c(i, b"conn", 4)
        mid = entries.find_c(i, b"id", 2)
        if node < 0 or cs < 0 or conn < 0 or mid < 0 or entries._spans[node].len == 0:
            raise ValueError("the entry lacks node, cs, conn or id")
        try:
            self._xadd_head_split(key_prefix, base + entries._spans[node].off,
                                  entries._spans[node].len, maxlen, 10)
            self._lit(b"$4\r\nkind\r\n$6\r\nresult\r\n$2\r\ncs\r\n")
            self._bulk(base + entries._spans[cs].off, entries._spans[cs].len)
            self._lit(b"$4\r\nconn\r\n")
            self._bulk(base + entries._spans[conn].off, entries._spans[conn].len)
            self._lit(b"$2\r\nid\r\n")
            self._bulk(base + entries._spans[mid].off, entries._spans[mid].len)
            self._lit(b"$7\r\npayload\r\n")
            self._arg(payload)
        except BaseException:
            self._len = mark
            raise
        self._ncmd += 1

    cdef int _xadd_head_split(self, bytes prefix, const char* rest, Py_ssize_t nrest,
                              object maxlen, Py_ssize_t nfields) except -1:
        # _xadd_head with the key written as prefix + rest (no key object).
        cdef long long cap = _cap(maxlen)
        cdef Py_ssize_t np = PyBytes_GET_SIZE(prefix)
        self._header(b'*', 3 + (3 if cap else 0) + nfields)
        self._lit(b"$4\r\nXADD\r\n")
        self._header(b'$', np + nrest)
        self._reserve(np + nrest + 2)
        memcpy(self._data + self._len, PyBytes_AS_STRING(prefix), np)
        memcpy(self._data + self._len + np, rest, nrest)
        self._len += np + nrest
        self._data[self._len] = b'\r'
        self._data[self._len + 1] = b'\n'
        self._len += 2
        return self._xadd_trim(cap)

    def append_xack(self, key, group, list ids):
        """Append ``XACK key group id …`` (ids as bytes or str; at least one).

        Raises:
            ValueError: no ids.
            TypeError: an id of another type (the buffer is unchanged).
        """
        cdef Py_ssize_t mark = self._len
        cdef object eid
        if not ids:
            raise ValueError("XACK needs at least one id")
        try:
            self._header(b'*', 3 + len(ids))
            self._lit(b"$4\r\nXACK\r\n")
            self._arg(key)
            self._arg(group)
            for eid in ids:
                self._arg(eid)
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
        self._len = 0
        self._ncmd = 0
        _block_shrink(&self._data, &self._cap, self._initial)

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


# -- replies ------------------------------------------------------------------

# Nesting limit of a reply built as Python objects (hiredis allows 7 levels;
# the deepest reply the router reads, XREAD, has 5).
cdef int MAX_DEPTH = 32


cdef class ReplyReader:
    """An incremental RESP2 reply parser
    (https://redis.io/docs/latest/develop/reference/protocol-spec/).

    ``feed`` appends bytes as they arrive; ``gets`` and ``gets_xread``
    return one complete reply, or False while it is incomplete. A reply is
    scanned for completeness once, resuming where the last feed ended, and
    built only when whole.

    Raises (from ``gets`` / ``gets_entries``):
        RedisProtocolError: bytes that are not RESP2; the stream cannot be
            resynchronised, so the connection must be dropped.
    """

    def __cinit__(self, Py_ssize_t initial=65536):
        self._buf = _block_new(&initial)
        self._cap = initial
        self._initial = initial
        self._start = 0
        self._end = 0
        self._scan_pos = -1
        self._need = 0

    def __dealloc__(self):
        free(self._buf)
        self._buf = NULL

    def feed(self, data):
        """Append received bytes (any contiguous buffer)."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._append(<const char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef int _append(self, const char* p, Py_ssize_t n) except -1:
        cdef Py_ssize_t live = self._end - self._start
        if n == 0:
            return 0
        if self._end + n > self._cap:
            if self._start > 0:
                # Move the unparsed tail to the front (scan offsets move with it).
                memmove(self._buf, self._buf + self._start, live)
                if self._scan_pos >= 0:
                    self._scan_pos -= self._start
                    self._reply_end -= self._start
                self._start = 0
                self._end = live
            if self._end + n > self._cap:
                _block_grow(&self._buf, &self._cap, self._end + n)
        memcpy(self._buf + self._end, p, n)
        self._end += n
        return 0

    cdef int _consumed(self, Py_ssize_t upto) except -1:
        self._start = upto
        self._scan_pos = -1
        if self._start == self._end:
            self._start = self._end = 0
            _block_shrink(&self._buf, &self._cap, self._initial)
        return 0

    cdef Py_ssize_t _line(self, Py_ssize_t pos) except -2:
        # Offset of the "\r\n" ending the line that starts at pos; -1 if not here yet.
        cdef const char* nl = <const char*>memchr(self._buf + pos, b'\n', self._end - pos)
        cdef Py_ssize_t at
        if nl == NULL:
            return -1
        at = nl - self._buf
        if at == pos or self._buf[at - 1] != b'\r':
            raise RedisProtocolError("bad RESP from Redis: line not ended by CRLF")
        return at - 1

    cdef long long _int(self, Py_ssize_t pos, Py_ssize_t stop) except? -9:
        # The decimal integer in buf[pos:stop] (RESP lengths and integers).
        cdef unsigned long long v = 0
        cdef bint neg = False
        cdef char ch
        if pos < stop and self._buf[pos] == b'-':
            neg = True
            pos += 1
        if pos == stop or stop - pos > 19:
            raise RedisProtocolError("bad RESP from Redis: malformed number")
        while pos < stop:
            ch = self._buf[pos]
            if ch < b'0' or ch > b'9':
                raise RedisProtocolError("bad RESP from Redis: malformed number")
            v = v * 10 + <unsigned long long>(ch - 48)
            pos += 1
        if v > <unsigned long long>9223372036854775807ULL:
            raise RedisProtocolError("bad RESP from Redis: number out of range")
        return -<long long>v if neg else <long long>v

    cdef int _scan(self) except -1:
        """1 when a whole reply is buffered (ending at self._reply_end), else 0."""
        cdef Py_ssize_t pos, eol
        cdef long long n
        cdef char t
        if self._scan_pos < 0:
            self._scan_pos = self._start
            self._need = 1
        elif self._need == 0:
            return 1            # scanned whole before, not consumed yet
        pos = self._scan_pos
        while self._need > 0:
            if pos >= self._end:
                self._scan_pos = pos
                return 0
            eol = self._line(pos)
            if eol < 0:
                self._scan_pos = pos
                return 0
            t = self._buf[pos]
            if t == b'$':
                n = self._int(pos + 1, eol)
                if n >= 0:
                    if eol + 2 + n + 2 > self._end:
                        self._scan_pos = pos
                        return 0
                    if self._buf[eol + 2 + n] != b'\r' or self._buf[eol + 3 + n] != b'\n':
                        raise RedisProtocolError("bad RESP from Redis: bulk string length")
                    eol += n + 2
                elif n != -1:
                    raise RedisProtocolError("bad RESP from Redis: negative length")
            elif t == b'*':
                n = self._int(pos + 1, eol)
                if n > 0:
                    self._need += n
                elif n < -1:
                    raise RedisProtocolError("bad RESP from Redis: negative length")
            elif t == b':':
                self._int(pos + 1, eol)
            elif t != b'+' and t != b'-':
                raise RedisProtocolError(
                    f"bad RESP from Redis: unknown type byte {bytes([<unsigned char>t])!r}")
            pos = eol + 2
            self._need -= 1
        self._scan_pos = pos
        self._reply_end = pos
        return 1

    cdef object _build(self, Py_ssize_t* at, int depth):
        # The reply at *at as Python objects; *at moves past it. Only called
        # on a reply _scan found whole and well-formed.
        cdef Py_ssize_t pos = at[0]
        cdef Py_ssize_t eol = self._line(pos)
        cdef long long n, i
        cdef char t = self._buf[pos]
        cdef list items
        at[0] = eol + 2
        if t == b'$':
            n = self._int(pos + 1, eol)
            if n < 0:
                return None
            at[0] = eol + 2 + n + 2
            return PyBytes_FromStringAndSize(self._buf + eol + 2, n)
        if t == b'*':
            n = self._int(pos + 1, eol)
            if n < 0:
                return None
            if depth >= MAX_DEPTH:
                raise RedisProtocolError("bad RESP from Redis: nested too deeply")
            items = [None] * n
            for i in range(n):
                items[i] = self._build(at, depth + 1)
            return items
        if t == b':':
            return self._int(pos + 1, eol)
        if t == b'+':
            return PyBytes_FromStringAndSize(self._buf + pos + 1, eol - pos - 1)
        return RedisReplyError(PyUnicode_DecodeUTF8(self._buf + pos + 1, eol - pos - 1,
                                                    "replace"))

    def gets(self):
        """The next reply as Python objects (bytes, int, None, list,
        :class:`RedisReplyError` for an error reply), or False if incomplete."""
        cdef Py_ssize_t at
        cdef object reply
        if not self._scan():
            return False
        at = self._start
        reply = self._build(&at, 0)
        self._consumed(self._reply_end)
        return reply

    def gets_into(self, list out, Py_ssize_t limit):
        """Append up to ``limit`` complete replies to ``out`` (as :meth:`gets`
        builds them); return how many were appended."""
        cdef Py_ssize_t k = 0, at
        while k < limit and self._scan():
            at = self._start
            out.append(self._build(&at, 0))
            self._consumed(self._reply_end)
            k += 1
        return k

    def gets_xread(self):
        """The next reply, an XREAD's, as a :class:`StreamEntries` (empty when
        BLOCK timed out); an error reply as :class:`RedisReplyError`; False if
        incomplete.

        Raises:
            RedisProtocolError: not RESP2, or not the shape of an XREAD reply.
        """
        cdef StreamEntries entries
        if not self._scan():
            return False
        if self._buf[self._start] == b'-':
            return self.gets()
        entries = StreamEntries.__new__(StreamEntries)
        entries._raw = PyBytes_FromStringAndSize(self._buf + self._start,
                                                 self._reply_end - self._start)
        self._consumed(self._reply_end)
        entries._index()
        return entries


# The kinds of inbound entries (docs/streams.md); StreamEntries.head returns
# these very str objects, so a consumer compares kinds by identity or equality
# without decoding.
_KINDS = ("call", "result", "error", "send", "connected", "disconnected", "failed")
cdef tuple _KINDS_B = tuple(k.encode() for k in _KINDS)


cdef class StreamEntries:
    """The entries of one XREAD reply, kept as the reply's bytes and offsets.

    A sequence of ``(id, {field: value})`` tuples (built on access), plus
    ``ref(i)`` / ``fields(i)`` / ``last_id`` that build only what they return.
    The entries of several streams are flattened in reply order.
    """

    def __dealloc__(self):
        free(self._ent)
        free(self._spans)

    cdef int _grow(self) except -1:
        cdef Py_ssize_t cap = self._ent_cap * 2 if self._ent_cap else 16
        cdef EntryRec* block = <EntryRec*>realloc(self._ent, cap * sizeof(EntryRec))
        if block == NULL:
            raise MemoryError()
        self._ent = block
        self._ent_cap = cap
        return 0

    cdef int _grow_spans(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self._span_cap * 2 if self._span_cap else 128
        cdef Span* block
        while cap < need:
            cap *= 2
        block = <Span*>realloc(self._spans, cap * sizeof(Span))
        if block == NULL:
            raise MemoryError()
        self._spans = block
        self._span_cap = cap
        return 0

    cdef long long _header(self, const char* buf, Py_ssize_t* at, char kind) except? -9:
        # Parse "<kind><n>\r\n" at *at (the reply was checked whole by the
        # scanner); return n and move past the line.
        cdef Py_ssize_t pos = at[0], stop
        cdef long long v = 0
        cdef bint neg = False
        if buf[pos] != kind:
            raise RedisProtocolError("bad RESP from Redis: not the shape of a stream read")
        pos += 1
        if buf[pos] == b'-':
            neg = True
            pos += 1
        stop = pos
        while buf[stop] != b'\r':
            v = v * 10 + (buf[stop] - 48)
            stop += 1
        at[0] = stop + 2
        return -v if neg else v

    cdef int _bulk(self, const char* buf, Py_ssize_t* at, Span* out) except -1:
        cdef long long n = self._header(buf, at, b'$')
        if n < 0:
            raise RedisProtocolError("bad RESP from Redis: nil in a stream entry")
        out.off = at[0]
        out.len = n
        at[0] += n + 2
        return 0

    cdef int _entries(self, const char* buf, Py_ssize_t* at) except -1:
        # *<m> entries, each *2 [id, *<2k> fields | *-1]
        cdef long long m = self._header(buf, at, b'*'), k, j, _e
        cdef EntryRec* rec
        for _e in range(m):
            if self._n == self._ent_cap:
                self._grow()
            rec = &self._ent[self._n]
            if self._header(buf, at, b'*') != 2:
                raise RedisProtocolError("bad RESP from Redis: not the shape of a stream read")
            self._bulk(buf, at, &rec.id)
            rec.first = self._nspans
            if buf[at[0]] == b'$':
                k = self._header(buf, at, b'$')     # a nil written as a nil bulk
                if k != -1:
                    raise RedisProtocolError(
                        "bad RESP from Redis: not the shape of a stream read")
            else:
                k = self._header(buf, at, b'*')
            if k < 0:
                k = 0       # XREADGROUP: an entry deleted while pending
            if k % 2:
                raise RedisProtocolError("bad RESP from Redis: odd field list in a stream entry")
            if self._nspans + k > self._span_cap:
                self._grow_spans(self._nspans + k)
            for j in range(k):
                self._bulk(buf, at, &self._spans[self._nspans + j])
            self._nspans += k
            rec.nfields = k // 2
            self._n += 1
        return 0

    cdef int _index(self) except -1:
        # XREAD: nil (BLOCK timed out) or *<streams> of *2 [key, *<entries>].
        cdef const char* buf = PyBytes_AS_STRING(self._raw)
        cdef Py_ssize_t at = 0
        cdef long long nstreams, _i
        self._n = 0
        self._nspans = 0
        nstreams = self._header(buf, &at, b'*')
        for _i in range(nstreams):
            if self._header(buf, &at, b'*') != 2:
                raise RedisProtocolError("bad RESP from Redis: not the shape of an XREAD reply")
            self._skip_bulk(buf, &at)
            self._entries(buf, &at)
        return 0

    cdef int _skip_bulk(self, const char* buf, Py_ssize_t* at) except -1:
        cdef Span ignored
        return self._bulk(buf, at, &ignored)

    # -- access ------------------------------------------------------------

    cdef inline bytes _bytes(self, Span* sp):
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(self._raw) + sp.off, sp.len)

    cdef bytes ref_c(self, Py_ssize_t i):
        return self._bytes(&self._ent[i].id)

    cdef dict fields_c(self, Py_ssize_t i):
        cdef EntryRec* rec = &self._ent[i]
        cdef dict out = {}
        cdef Py_ssize_t j
        for j in range(rec.first, rec.first + 2 * rec.nfields, 2):
            out[self._bytes(&self._spans[j])] = self._bytes(&self._spans[j + 1])
        return out

    cdef const char* base(self):
        return PyBytes_AS_STRING(self._raw)

    cdef Py_ssize_t find_c(self, Py_ssize_t i, const char* name, Py_ssize_t n):
        # Index in _spans of the value of field `name` of entry i (the last
        # of a repeated name, as a dict would keep), or -1.
        cdef EntryRec* rec = &self._ent[i]
        cdef const char* buf = PyBytes_AS_STRING(self._raw)
        cdef Py_ssize_t j, found = -1
        for j in range(rec.first, rec.first + 2 * rec.nfields, 2):
            if self._spans[j].len == n and memcmp(buf + self._spans[j].off, name, n) == 0:
                found = j + 1
        return found

    cdef inline bint _nonempty(self, Py_ssize_t j):
        return j >= 0 and self._spans[j].len > 0

    def field(self, Py_ssize_t i, bytes name):
        """The value of field ``name`` of entry ``i`` (bytes), or None when absent."""
        cdef Py_ssize_t j
        i = self._check(i)
        j = self.find_c(i, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
        return None if j < 0 else self._bytes(&self._spans[j])

    def head(self, Py_ssize_t i):
        """What a consumer needs to route entry ``i``, in one call:
        ``(entry id, kind, action, cs, answerable)``, the id as ``str``.

        ``kind`` is one of the contract's kinds as an interned ``str``, or None
        when missing or unknown; ``action`` a ``str`` (None when absent); ``cs``
        the charger identity as bytes (None when absent or empty); ``answerable``
        whether the entry has the non-empty ``node``, ``conn`` and ``id`` a
        reply needs. An entry deleted while pending has no fields: kind None.
        """
        cdef Py_ssize_t j, k
        cdef const char* buf
        cdef object kind = None, action = None, cs = None
        cdef bint answerable
        i = self._check(i)
        buf = PyBytes_AS_STRING(self._raw)
        j = self.find_c(i, b"kind", 4)
        if j >= 0:
            for k in range(len(_KINDS)):
                if (PyBytes_GET_SIZE(_KINDS_B[k]) == self._spans[j].len
                        and memcmp(buf + self._spans[j].off, PyBytes_AS_STRING(_KINDS_B[k]),
                                   self._spans[j].len) == 0):
                    kind = _KINDS[k]
                    break
        j = self.find_c(i, b"action", 6)
        if j >= 0:
            action = PyUnicode_DecodeUTF8(buf + self._spans[j].off, self._spans[j].len,
                                          "replace")
        j = self.find_c(i, b"cs", 2)
        if j >= 0 and self._spans[j].len:
            cs = self._bytes(&self._spans[j])
        answerable = (self._nonempty(self.find_c(i, b"node", 4))
                      and self._nonempty(self.find_c(i, b"conn", 4))
                      and self._nonempty(self.find_c(i, b"id", 2)))
        return (PyUnicode_DecodeUTF8(buf + self._ent[i].id.off, self._ent[i].id.len, "strict"),
                kind, action, cs, answerable)

    def __len__(self):
        return self._n

    cdef Py_ssize_t _check(self, Py_ssize_t i) except -1:
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("entry index out of range")
        return i

    def __getitem__(self, Py_ssize_t i):
        i = self._check(i)
        return (self.ref_c(i), self.fields_c(i))

    def __iter__(self):
        cdef Py_ssize_t i
        for i in range(self._n):
            yield (self.ref_c(i), self.fields_c(i))

    def ref(self, Py_ssize_t i):
        """The id of entry ``i``."""
        return self.ref_c(self._check(i))

    def fields(self, Py_ssize_t i):
        """The fields of entry ``i`` as a dict (the last of a repeated name wins)."""
        return self.fields_c(self._check(i))

    @property
    def last_id(self):
        """The id of the last entry, or None when there is none."""
        return self.ref_c(self._n - 1) if self._n else None

    def __repr__(self):
        return f"<StreamEntries of {self._n} entries>"
