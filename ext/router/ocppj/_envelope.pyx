# cython: freethreading_compatible = False
"""OCPP-J envelope decoder and encoder (compiled; public API in router.ocppj).

An OCPP-J message is a JSON array (OCPP-J 1.6 §4.1, 2.0.1 §4.1, 2.1 §4.1):

    CALL             [2, "<id>", "<action>", {payload}]
    CALLRESULT       [3, "<id>", {payload}]
    CALLERROR        [4, "<id>", "<code>", "<description>", {details}]
    CALLRESULTERROR  [5, "<id>", "<code>", "<description>", {details}]   2.1 only
    SEND             [6, "<id>", "<action>", {payload}]                  2.1 only

The decoder validates the whole text in one pass (JSON grammar of RFC 8259 §2-7,
UTF-8 of RFC 3629 §4, surrogate pairs of RFC 8259 §7) and keeps only where the
top-level elements start and end. The payload is then decoded by msgspec into
the generated type of its action, straight from the exact bytes received.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memcmp, memcpy

import msgspec

from router.ocppj import errors as _errors

# Bound once: no module attribute lookups on the hot path.
cdef object _DecodeError = msgspec.DecodeError
cdef object _OCPPJError = _errors.OCPPJError
cdef object _json_decode = msgspec.json.decode
cdef object _json_encode = msgspec.json.encode
cdef object _FormatViolation = _errors.FormatViolation
cdef object _RpcFrameworkError = _errors.RpcFrameworkError
cdef object _MessageTypeNotSupported = _errors.MessageTypeNotSupported
cdef object _ActionNotImplemented = _errors.ActionNotImplemented
cdef object _NotSupported = _errors.NotSupported
cdef object _TypeConstraintViolation = _errors.TypeConstraintViolation
cdef object _PropertyConstraintViolation = _errors.PropertyConstraintViolation

cdef bytes _EMPTY_OBJECT = b"{}"
cdef dict _VERSIONS = {"ocpp1.6": 16, "ocpp2.0.1": 201, "ocpp2.1": 21}
cdef dict _VERSION_TEXT = {16: "OCPP 1.6", 201: "OCPP 2.0.1", 21: "OCPP 2.1"}


# 1 for bytes that need no attention inside a JSON string: printable ASCII
# other than '"' and '\\'. Speed trick: the string scanner skips runs of them
# with one table load per byte instead of four comparisons.
cdef unsigned char _PLAIN[256]
for _i in range(256):
    _PLAIN[_i] = 1 if 0x20 <= _i < 0x80 and _i != 0x22 and _i != 0x5C else 0


# Byte classes for _skip_object: 1 quote, 2 opening bracket, 3 closing bracket.
cdef unsigned char _SKIP[256]
for _i in range(256):
    _SKIP[_i] = 0
_SKIP[0x22] = 1
_SKIP[0x7B] = _SKIP[0x5B] = 2
_SKIP[0x7D] = _SKIP[0x5D] = 3


class _Malformed(Exception):
    """Internal: the text is not valid JSON (args: reason, byte offset)."""


# ---------------------------------------------------------------------------
# JSON scanner: validates, builds nothing. Every function leaves c.p after the
# token it consumed and raises _Malformed on invalid input.

cdef inline void _ws(Cursor* c) noexcept nogil:
    # RFC 8259 §2: ws = *( %x20 / %x09 / %x0A / %x0D )
    while c.p < c.end and (c.p[0] == 0x20 or c.p[0] == 0x0A or c.p[0] == 0x0D or c.p[0] == 0x09):
        c.p += 1


cdef int _fail(Cursor* c, str reason) except -1:
    raise _Malformed(reason, <Py_ssize_t>(c.p - c.start))


cdef inline int _hex4(Cursor* c) except -2:
    # The 4 hex digits of a \u escape -> code unit.
    cdef int value = 0, i
    cdef unsigned char ch
    if c.end - c.p < 4:
        _fail(c, "truncated unicode escape")
    for i in range(4):
        ch = c.p[i]
        value <<= 4
        if 0x30 <= ch <= 0x39:
            value |= ch - 0x30
        elif 0x41 <= ch <= 0x46:
            value |= ch - 0x37
        elif 0x61 <= ch <= 0x66:
            value |= ch - 0x57
        else:
            _fail(c, "invalid unicode escape")
    c.p += 4
    return value


cdef int _utf8(Cursor* c) except -1:
    # One multi-byte UTF-8 sequence starting at c.p (RFC 3629 §4: no overlong
    # forms, no surrogates U+D800..U+DFFF, nothing above U+10FFFF).
    cdef unsigned char b0 = c.p[0]
    cdef unsigned char lo = 0x80, hi = 0xBF
    cdef int more, i
    if 0xC2 <= b0 <= 0xDF:
        more = 1
    elif 0xE0 <= b0 <= 0xEF:
        more = 2
        if b0 == 0xE0:
            lo = 0xA0
        elif b0 == 0xED:
            hi = 0x9F
    elif 0xF0 <= b0 <= 0xF4:
        more = 3
        if b0 == 0xF0:
            lo = 0x90
        elif b0 == 0xF4:
            hi = 0x8F
    else:
        return _fail(c, "invalid UTF-8")
    if c.end - c.p <= more:
        return _fail(c, "truncated UTF-8")
    if not (lo <= c.p[1] <= hi):
        return _fail(c, "invalid UTF-8")
    for i in range(2, more + 1):
        if not (0x80 <= c.p[i] <= 0xBF):
            return _fail(c, "invalid UTF-8")
    c.p += more + 1
    return 0


cdef inline int _string(Cursor* c, bint* plain) except -1:
    # c.p is at the opening quote. RFC 8259 §7.
    cdef unsigned char ch
    cdef int unit
    cdef const unsigned char* p = c.p + 1
    cdef const unsigned char* end = c.end
    plain[0] = True
    c.p = p
    while True:
        # Fast path: skip plain bytes (most of every string).
        p = c.p
        while p < end and _PLAIN[p[0]]:
            p += 1
        c.p = p
        if c.p >= c.end:
            return _fail(c, "unterminated string")
        ch = c.p[0]
        if ch == 0x22:  # closing quote
            c.p += 1
            return 0
        if ch == 0x5C:  # backslash
            plain[0] = False
            c.p += 1
            if c.p >= c.end:
                return _fail(c, "unterminated string")
            ch = c.p[0]
            c.p += 1
            if ch == 0x75:  # \uXXXX
                unit = _hex4(c)
                if 0xD800 <= unit <= 0xDBFF:
                    # A high surrogate must be followed by an escaped low one;
                    # lone surrogates cannot be represented in UTF-8 (RFC 8259 §8.2).
                    if c.end - c.p < 6 or c.p[0] != 0x5C or c.p[1] != 0x75:
                        return _fail(c, "unpaired surrogate escape")
                    c.p += 2
                    unit = _hex4(c)
                    if not (0xDC00 <= unit <= 0xDFFF):
                        return _fail(c, "unpaired surrogate escape")
                elif 0xDC00 <= unit <= 0xDFFF:
                    return _fail(c, "unpaired surrogate escape")
            elif not (ch == 0x22 or ch == 0x5C or ch == 0x2F or ch == 0x62 or ch == 0x66
                      or ch == 0x6E or ch == 0x72 or ch == 0x74):
                c.p -= 1
                return _fail(c, "invalid escape")
        elif ch < 0x20:
            return _fail(c, "control character in string")
        else:  # ch >= 0x80: the table sends nothing else here
            plain[0] = False
            _utf8(c)


cdef inline bint _digit(Cursor* c) noexcept nogil:
    return c.p < c.end and 0x30 <= c.p[0] <= 0x39


cdef int _number(Cursor* c) except -1:
    # RFC 8259 §6: [ minus ] int [ frac ] [ exp ]; returns 1 when it is a plain
    # non-negative integer (digits only), else 0.
    cdef bint simple = True
    if c.p[0] == 0x2D:
        simple = False
        c.p += 1
    if not _digit(c):
        return _fail(c, "invalid number")
    if c.p[0] == 0x30:
        c.p += 1
    else:
        while _digit(c):
            c.p += 1
    if c.p < c.end and c.p[0] == 0x2E:
        simple = False
        c.p += 1
        if not _digit(c):
            return _fail(c, "invalid number")
        while _digit(c):
            c.p += 1
    if c.p < c.end and (c.p[0] == 0x65 or c.p[0] == 0x45):
        simple = False
        c.p += 1
        if c.p < c.end and (c.p[0] == 0x2B or c.p[0] == 0x2D):
            c.p += 1
        if not _digit(c):
            return _fail(c, "invalid number")
        while _digit(c):
            c.p += 1
    return 1 if simple else 0


cdef int _literal(Cursor* c, const char* word, Py_ssize_t n) except -1:
    if c.end - c.p < n or memcmp(c.p, word, n) != 0:
        return _fail(c, "invalid literal")
    c.p += n
    return 0


cdef int _value(Cursor* c, int depth) except -1:
    # One JSON value at c.p (no leading whitespace).
    cdef unsigned char ch
    cdef bint plain
    if c.p >= c.end:
        return _fail(c, "unexpected end of input")
    ch = c.p[0]
    if ch == 0x22:
        return _string(c, &plain)
    if ch == 0x7B or ch == 0x5B:
        if depth >= MAX_DEPTH:
            return _fail(c, "nesting too deep")
        return _container(c, depth + 1)
    if ch == 0x2D or 0x30 <= ch <= 0x39:
        _number(c)
        return 0
    if ch == 0x74:
        return _literal(c, "true", 4)
    if ch == 0x66:
        return _literal(c, "false", 5)
    if ch == 0x6E:
        return _literal(c, "null", 4)
    return _fail(c, "unexpected character")


cdef int _container(Cursor* c, int depth) except -1:
    # An object or array at c.p (RFC 8259 §4, §5).
    cdef bint is_object = c.p[0] == 0x7B
    cdef unsigned char close = 0x7D if is_object else 0x5D
    cdef bint plain
    c.p += 1
    _ws(c)
    if c.p < c.end and c.p[0] == close:
        c.p += 1
        return 0
    while True:
        if is_object:
            if c.p >= c.end or c.p[0] != 0x22:
                return _fail(c, "expected a member name")
            _string(c, &plain)
            _ws(c)
            if c.p >= c.end or c.p[0] != 0x3A:
                return _fail(c, "expected ':'")
            c.p += 1
            _ws(c)
        _value(c, depth)
        _ws(c)
        if c.p >= c.end:
            return _fail(c, "unexpected end of input")
        if c.p[0] == 0x2C:
            c.p += 1
            _ws(c)
        elif c.p[0] == close:
            c.p += 1
            return 0
        else:
            return _fail(c, "expected ',' or a closing bracket")


cdef int _skip_object(Cursor* c, int depth) except -1:
    # Find the end of the object or array at c.p, checking only strings (UTF-8,
    # escapes, surrogate pairs) and bracket depth. Speed trick: the payload of
    # a CALL / SEND goes to msgspec next, which checks the grammar between the
    # tokens even where it skips unknown fields; if msgspec rejects the payload,
    # the error path validates it fully (_whole) before classifying. UTF-8 is
    # checked here because msgspec does not look inside skipped strings.
    cdef const unsigned char* p
    cdef const unsigned char* end = c.end
    cdef unsigned char k
    cdef bint plain
    cdef int level = 0
    while True:
        p = c.p
        while p < end and _SKIP[p[0]] == 0:
            p += 1
        c.p = p
        if p >= end:
            return _fail(c, "unexpected end of input")
        k = _SKIP[p[0]]
        if k == 1:
            _string(c, &plain)
        elif k == 2:
            level += 1
            if depth + level > MAX_DEPTH:
                return _fail(c, "nesting too deep")
            c.p += 1
        else:
            level -= 1
            c.p += 1
            if level == 0:
                return 0


cdef int _whole(const unsigned char* data, Py_ssize_t n) except -1:
    # Validate that data is exactly one JSON value (with optional whitespace).
    cdef Cursor c
    c.start = c.p = data
    c.end = data + n
    _ws(&c)
    _value(&c, 0)
    _ws(&c)
    if c.p != c.end:
        return _fail(&c, "data after the JSON value")
    return 0


cdef int _elements(Cursor* c, Span* spans, Py_ssize_t* count, bint* used_light) except -1:
    # The top-level array: record up to MAX_SPANS element spans, validate all
    # (the object payload of a CALL / SEND only lightly: see _skip_object).
    cdef Py_ssize_t i = 0
    cdef unsigned char ch
    cdef bint light = False
    c.p += 1  # '['
    _ws(c)
    if c.p < c.end and c.p[0] == 0x5D:
        c.p += 1
        count[0] = 0
        return 0
    while True:
        if c.p >= c.end:
            return _fail(c, "unexpected end of input")
        ch = c.p[0]
        if i < MAX_SPANS:
            spans[i].s = c.p
            spans[i].plain = False
            if ch == 0x22:
                _string(c, &spans[i].plain)
                spans[i].kind = ch
            elif ch == 0x2D or 0x30 <= ch <= 0x39:
                # kind b'0' marks a plain non-negative integer, b'-' any other number
                spans[i].kind = 0x30 if _number(c) else 0x2D
                if i == 0 and spans[0].kind == 0x30 and c.p - spans[0].s == 1:
                    light = spans[0].s[0] == 0x32 or spans[0].s[0] == 0x36
            elif i == 3 and light and ch == 0x7B:
                _skip_object(c, 1)
                spans[i].kind = ch
                used_light[0] = True
            else:
                _value(c, 1)
                spans[i].kind = ch
            spans[i].e = c.p
        else:
            _value(c, 1)
        i += 1
        _ws(c)
        if c.p >= c.end:
            return _fail(c, "unexpected end of input")
        if c.p[0] == 0x2C:
            c.p += 1
            _ws(c)
        elif c.p[0] == 0x5D:
            c.p += 1
            count[0] = i
            return 0
        else:
            return _fail(c, "expected ',' or ']'")


cdef str _span_str(Span* sp):
    # The Python str of a string span (without building it char by char).
    cdef Py_ssize_t n = sp.e - sp.s
    if sp.plain:
        return PyUnicode_DecodeASCII(<const char*>sp.s + 1, n - 2, NULL)
    return _json_decode(PyBytes_FromStringAndSize(<const char*>sp.s, n))


cdef bytes _span_bytes(Span* sp):
    return PyBytes_FromStringAndSize(<const char*>sp.s, sp.e - sp.s)


cdef inline bint _is_null(Span* sp) noexcept:
    return sp.kind == 0x6E


# ---------------------------------------------------------------------------
# Encoding


cdef bytes _json_str(str s):
    # JSON string literal of s: a copy for printable ASCII without '"' and
    # '\\' (ids, actions, codes), msgspec's escaping otherwise.
    cdef Py_ssize_t i, n
    cdef Py_UCS4 ch
    n = len(s)
    for i in range(n):
        ch = s[i]
        if ch < 0x20 or ch > 0x7E or ch == 0x22 or ch == 0x5C:
            return _json_encode(s)
    return b'"' + s.encode("ascii") + b'"'


cdef bytes _join(list parts):
    # Concatenate into one preallocated bytes object.
    cdef Py_ssize_t total = 0, off = 0, n
    cdef bytes part, out
    cdef char* dst
    for part in parts:
        total += PyBytes_GET_SIZE(part)
    out = PyBytes_FromStringAndSize(NULL, total)
    dst = PyBytes_AS_STRING(out)
    for part in parts:
        n = PyBytes_GET_SIZE(part)
        memcpy(dst + off, PyBytes_AS_STRING(part), n)
        off += n
    return out


cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object s)
    void* PyUnicode_DATA(object s)


cdef bytes result_frame(str id, bytes payload):
    """The CALLRESULT frame ``[3,"<id>",<payload>]`` in one allocation (the
    router's reply path); ``encode_result`` with its checks otherwise.

    Raises:
        ValueError: id longer than 36 characters.
    """
    cdef Py_ssize_t i, n = len(id), m = PyBytes_GET_SIZE(payload)
    cdef const unsigned char* src
    cdef unsigned char ch
    cdef bytes out
    cdef char* dst
    _check_id(id)
    if not PyUnicode_IS_COMPACT_ASCII(id):
        return _join([b"[3,", _json_str(id), b",", payload, b"]"])
    src = <const unsigned char*>PyUnicode_DATA(id)
    for i in range(n):
        ch = src[i]
        if ch < 0x20 or ch == 0x22 or ch == 0x5C or ch == 0x7F:
            return _join([b"[3,", _json_str(id), b",", payload, b"]"])
    out = PyBytes_FromStringAndSize(NULL, n + m + 7)
    dst = PyBytes_AS_STRING(out)
    memcpy(dst, b'[3,"', 4)
    memcpy(dst + 4, src, n)
    dst[4 + n] = b'"'
    dst[5 + n] = b','
    memcpy(dst + 6 + n, PyBytes_AS_STRING(payload), m)
    dst[6 + n + m] = b']'
    return out


cdef int _check_id(str message_id) except -1:
    if len(message_id) > MAX_ID_LEN:
        raise ValueError("message id longer than 36 characters (OCPP-J 2.0.1 §4.1.3)")
    return 0


cdef int _check_object(bytes payload, str what) except -1:
    cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload), i = 0
    try:
        _whole(data, n)
    except _Malformed:
        raise ValueError(f"{what} is not valid JSON") from None
    while i < n and data[i] in b" \t\r\n":
        i += 1
    if data[i] != 0x7B:
        raise ValueError(f"{what} is not a JSON object")
    return 0


# ---------------------------------------------------------------------------


@cython.freelist(256)
cdef class Message:
    """One decoded OCPP-J message (see router.ocppj.Message)."""

    def __repr__(self):
        return (f"Message(msgtype={self.msgtype}, id={self.id!r}, action={self.action!r}, "
                f"payload={self.payload!r}, code={self.code!r})")


cdef class Core:
    """Per-version decoder/encoder; router.ocppj.Dialect builds and extends it."""

    def __init__(self, str proto, dict call_decoders, dict send_decoders, dict csms_decoders,
                 dict response_decoders, frozenset error_codes, dict respell,
                 bint strict_datetime, bint null_payload_as_empty, bint lenient_error_codes,
                 object invalid, object post_check):
        self.proto = proto
        self.version = _VERSIONS[proto]
        self.call_decoders = call_decoders
        self.send_decoders = send_decoders
        self.csms_decoders = csms_decoders
        self.response_decoders = response_decoders
        self.actions = frozenset(call_decoders) | frozenset(send_decoders) | frozenset(
            csms_decoders) | frozenset(response_decoders)
        self.error_codes = error_codes
        self.respell = respell
        self.strict_datetime = strict_datetime
        self.null_payload_as_empty = null_payload_as_empty
        self.lenient_error_codes = lenient_error_codes
        self.invalid = invalid
        self.post_check = post_check

    # -- decoding ----------------------------------------------------------

    def decode(self, data):
        """Decode one WebSocket text message from a charger.

        Args:
            data: the message (bytes, bytearray or memoryview; read, not kept).

        Returns:
            A Message, or None for an unknown message type that OCPP-J 1.6 and
            2.1 ignore. CALL / SEND payloads are validated against the request
            schema of their action; CALLRESULT payloads are not (see
            validate_response); CALLERROR / CALLRESULTERROR fields are checked.

        Raises:
            OCPPJError: anything to answer with a CALLERROR (docs/ocppj.md).
            TypeError: data does not support the buffer protocol.
        """
        cdef Py_buffer view
        if type(data) is bytes:
            return self._decode(<const unsigned char*>PyBytes_AS_STRING(data),
                                PyBytes_GET_SIZE(data))
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self._decode(<const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef object _decode(self, const unsigned char* data, Py_ssize_t n):
        cdef Cursor c
        cdef Span spans[MAX_SPANS]
        cdef Py_ssize_t count = 0
        cdef bint light = False
        c.start = c.p = data
        c.end = data + n
        spans[1].kind = 0
        spans[1].e = NULL
        try:
            _ws(&c)
            if c.p >= c.end or c.p[0] != 0x5B:
                _whole(data, n)
                raise _RpcFrameworkError("$: an OCPP-J message must be a JSON array")
            _elements(&c, spans, &count, &light)
            _ws(&c)
            if c.p != c.end:
                _fail(&c, "data after the JSON value")
        except _Malformed as exc:
            # OCPP-J 2.0.1 §4.2.3: answer with the id when it can be read, else "-1".
            raise _FormatViolation(f"$: invalid JSON ({exc.args[0]} at byte {exc.args[1]})",
                                   message_id=_readable_id(spans, c.p), msgtype=0) from None
        if not light:
            return self._interpret(spans, count)
        # The payload was only lightly scanned (_skip_object): whenever msgspec
        # does not get to check it, check the whole frame before answering, so
        # invalid JSON is always reported as such.
        try:
            result = self._interpret(spans, count)
        except _OCPPJError:
            _frame_check(data, n, spans)
            raise
        if result is None:
            _frame_check(data, n, spans)
        return result

    cdef object _interpret(self, Span* spans, Py_ssize_t count):
        # The meaning of a syntactically valid OCPP-J array.
        cdef Py_ssize_t expected
        cdef int msgtype = 0
        cdef str message_id = "-1", action, code, description
        cdef object decode_fn, readable = None
        cdef bytes payload
        cdef Message m
        if count == 0:
            raise _RpcFrameworkError("$: empty array")
        if spans[0].kind == 0x30 and spans[0].e - spans[0].s == 1:
            msgtype = spans[0].s[0] - 0x30
        elif spans[0].kind != 0x30 and spans[0].kind != 0x2D:
            raise _RpcFrameworkError("$[0]: message type must be a number")
        if count >= 2 and spans[1].kind == 0x22:
            readable = _id_of(&spans[1])
            if readable is not None:
                message_id = readable
        if msgtype < 2 or msgtype > 6 or (msgtype >= 5 and self.version != 21):
            # OCPP-J 1.6 §4.1.3 / 2.1 §4.1.3: ignore unknown message types;
            # OCPP-J 2.0.1 §4.1.3: answer MessageTypeNotSupported.
            if self.version == 201:
                raise _MessageTypeNotSupported(
                    "$[0]: unknown message type", message_id=message_id, msgtype=0)
            return None
        if readable is None:
            raise _RpcFrameworkError(
                "$[1]: message id must be a string of at most 36 characters", msgtype=msgtype)
        expected = 4 if msgtype == 2 or msgtype == 6 else 3 if msgtype == 3 else 5
        if count != expected:
            raise _RpcFrameworkError(
                f"$: message type {msgtype} must have {expected} elements",
                message_id=message_id, msgtype=msgtype)

        m = Message.__new__(Message)
        m.msgtype = msgtype
        m.id = message_id
        m.action = m.payload = m.code = m.description = m.details = None

        if msgtype == 3:
            m.payload = self._payload(&spans[2], message_id, msgtype, 2)
            return m

        if msgtype == 2 or msgtype == 6:
            if spans[2].kind != 0x22:
                raise _RpcFrameworkError("$[2]: action must be a string",
                                         message_id=message_id, msgtype=msgtype)
            action = _span_str(&spans[2])
            decoders = self.call_decoders if msgtype == 2 else self.send_decoders
            decode_fn = decoders.get(action)
            if decode_fn is None:
                self._unknown_action(action, message_id, msgtype, 2)
            payload = self._payload(&spans[3], message_id, msgtype, 3)
            obj = _validate_fast(decode_fn, payload)
            if obj is None:
                _full_check(payload, message_id, msgtype)
                self.invalid(action, payload, False, message_id, msgtype)
            elif self.strict_datetime:
                self.post_check(action, False, obj, message_id, msgtype)
            m.action = action
            m.payload = payload
            return m

        # CALLERROR / CALLRESULTERROR
        if spans[2].kind != 0x22:
            raise _TypeConstraintViolation("$[2]: error code must be a string",
                                           message_id=message_id, msgtype=msgtype)
        code = _span_str(&spans[2])
        if code not in self.error_codes:
            raise _PropertyConstraintViolation(
                f"$[2]: not an error code of {_VERSION_TEXT[self.version]}",
                message_id=message_id, msgtype=msgtype)
        if spans[3].kind != 0x22:
            raise _TypeConstraintViolation("$[3]: error description must be a string",
                                           message_id=message_id, msgtype=msgtype)
        description = _span_str(&spans[3])
        if self.version != 16 and len(description) > 255:
            # OCPP-J 2.0.1 §4.2.3: ErrorDescription is string[0..255].
            raise _PropertyConstraintViolation(
                "$[3]: error description longer than 255 characters",
                message_id=message_id, msgtype=msgtype)
        if spans[4].kind != 0x7B:
            raise _TypeConstraintViolation("$[4]: error details must be a JSON object",
                                           message_id=message_id, msgtype=msgtype)
        m.code = self.respell.get(code, code)
        m.description = description
        m.details = _span_bytes(&spans[4])
        return m

    cdef object _payload(self, Span* sp, str message_id, int msgtype, int index):
        # OCPP-J §4.2: the payload is a JSON object.
        if sp.kind == 0x7B:
            return _span_bytes(sp)
        if self.null_payload_as_empty and _is_null(sp):
            return _EMPTY_OBJECT
        raise _TypeConstraintViolation(f"$[{index}]: payload must be a JSON object",
                                       message_id=message_id, msgtype=msgtype)

    cdef int _unknown_action(self, str action, str message_id, int msgtype,
                             int index) except -1:
        if action in self.actions:
            raise _NotSupported(
                f"$[{index}]: action not supported in this direction",
                message_id=message_id, msgtype=msgtype)
        raise _ActionNotImplemented(
            f"$[{index}]: action not implemented in {_VERSION_TEXT[self.version]}",
            message_id=message_id, msgtype=msgtype)

    cdef object _validate(self, dict decoders, str action, bytes payload, bint response,
                          str message_id, int msgtype):
        cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(payload)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(payload), i = 0
        cdef Cursor c
        decode_fn = decoders.get(action)
        if decode_fn is None:
            self._unknown_action(action, message_id, msgtype, 2 if msgtype == 3 else 3)
        c.start = c.p = data
        c.end = data + n
        _ws(&c)
        if c.p < c.end and c.p[0] == 0x7B:
            try:
                _skip_object(&c, 0)
            except _Malformed:
                _full_check(payload, message_id, msgtype)
                raise _FormatViolation("$: invalid JSON", message_id=message_id,
                                       msgtype=msgtype) from None
        obj = _validate_fast(decode_fn, payload)
        if obj is None:
            _full_check(payload, message_id, msgtype)
            while data[i] == 0x20 or data[i] == 0x0A or data[i] == 0x0D or data[i] == 0x09:
                i += 1
            if data[i] != 0x7B:
                raise _TypeConstraintViolation("$: payload must be a JSON object",
                                               message_id=message_id, msgtype=msgtype)
            self.invalid(action, payload, response, message_id, msgtype)
        elif self.strict_datetime:
            self.post_check(action, response, obj, message_id, msgtype)
        return None

    def validate_response(self, str action, bytes payload, *, str message_id="-1"):
        """Validate a CALLRESULT payload against the response schema of ``action``.

        Args:
            action: the action of the CALL this answers.
            payload: the JSON payload.
            message_id: put into the raised error.

        Raises:
            OCPPJError: ActionNotImplemented (unknown action), NotSupported (no
                response schema) or the payload's violation.
        """
        self._validate(self.response_decoders, action, payload, True, message_id, 3)

    def validate_request(self, str action, bytes payload, *, bint from_charger,
                         str message_id="-1"):
        """Validate a CALL payload against the request schema of ``action``.

        Args:
            action: the CALL's action.
            payload: the JSON payload.
            from_charger: True for a charger's CALL, False for a CSMS's CALL.
            message_id: put into the raised error.

        Raises:
            OCPPJError: ActionNotImplemented (unknown action), NotSupported
                (not sent in this direction) or the payload's violation.
        """
        self._validate(self.call_decoders if from_charger else self.csms_decoders,
                       action, payload, False, message_id, 2)

    def validate_send(self, str action, bytes payload, *, bint from_charger=True,
                      str message_id="-1"):
        """Validate a SEND payload (OCPP 2.1; only chargers send SEND messages).

        Raises:
            OCPPJError: as validate_request.
        """
        self._validate(self.send_decoders if from_charger else {}, action, payload, False,
                       message_id, 6)

    # -- encoding ----------------------------------------------------------

    def encode_call(self, str id, str action, bytes payload):
        """The CALL frame ``[2, id, action, payload]`` (payload inserted as is).

        Raises:
            ValueError: id longer than 36 characters.
        """
        _check_id(id)
        return _join([b"[2,", _json_str(id), b",", _json_str(action), b",", payload, b"]"])

    def encode_send(self, str id, str action, bytes payload):
        """The SEND frame ``[6, id, action, payload]`` (OCPP 2.1).

        Raises:
            ValueError: not OCPP 2.1, or id longer than 36 characters.
        """
        if self.version != 21:
            raise ValueError("SEND exists only in OCPP 2.1")
        _check_id(id)
        return _join([b"[6,", _json_str(id), b",", _json_str(action), b",", payload, b"]"])

    def encode_result(self, str id, bytes payload):
        """The CALLRESULT frame ``[3, id, payload]`` (payload inserted as is).

        Raises:
            ValueError: id longer than 36 characters.
        """
        return result_frame(id, payload)

    def encode_error(self, str id, str code, str description, bytes details=b"{}"):
        """The CALLERROR frame ``[4, id, code, description, details]``.

        The description is cut to 255 characters (OCPP-J 2.0.1 §4.2.3) and
        JSON-escaped; the two codes spelled differently in 1.6 and 2.x are
        respelled for this version.

        Raises:
            ValueError: code not of this version, details not a JSON object,
                or id longer than 36 characters.
        """
        _check_id(id)
        if code not in self.error_codes or self.respell.get(code, code) != code:
            spelled = _errors.RESPELL.get(code)
            if spelled is None or spelled not in _errors.CODES[self.proto]:
                raise ValueError(f"{code!r} is not an error code of {_VERSION_TEXT[self.version]}")
            code = spelled
        if details is not _EMPTY_OBJECT:
            _check_object(details, "details")
        # OCPP-J 2.0.1 §4.2.3: errorDescription is at most 255 characters.
        return _join([b"[4,", _json_str(id), b",", _json_str(code), b",",
                      _json_str(description[:255]), b",", details, b"]"])


cdef int _full_check(bytes payload, str message_id, int msgtype) except -1:
    # Error path: complete JSON validation before schema classification.
    try:
        _whole(<const unsigned char*>PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))
    except _Malformed as exc:
        raise _FormatViolation(f"$: invalid JSON ({exc.args[0]} at byte {exc.args[1]})",
                               message_id=message_id, msgtype=msgtype) from None
    return 0


cdef object _validate_fast(object decode_fn, bytes payload):
    # The hot path: msgspec decodes straight from the payload bytes. None means
    # "rejected": the caller re-checks on the slow path to classify (and accepts
    # what JSON Schema accepts but msgspec's stricter types do not).
    try:
        return decode_fn(payload)
    except _DecodeError:
        return None


cdef object _id_of(Span* sp):
    # The message id of a string span, or None when it is longer than 36
    # characters (OCPP-J 2.0.1 §4.1.3). An escaped character takes at most 6
    # bytes, an escaped astral one 12: longer spans are not decoded at all.
    cdef str s
    if sp.plain:
        if sp.e - sp.s - 2 > MAX_ID_LEN:
            return None
        return PyUnicode_DecodeASCII(<const char*>sp.s + 1, sp.e - sp.s - 2, NULL)
    if sp.e - sp.s - 2 > 12 * MAX_ID_LEN:
        return None
    s = _span_str(sp)
    return None if len(s) > MAX_ID_LEN else s


cdef int _frame_check(const unsigned char* data, Py_ssize_t n, Span* spans) except -1:
    # Full validation of a frame whose payload was only lightly scanned.
    try:
        _whole(data, n)
    except _Malformed as exc:
        raise _FormatViolation(f"$: invalid JSON ({exc.args[0]} at byte {exc.args[1]})",
                               message_id=_readable_id(spans, data + n), msgtype=0) from None
    return 0


cdef str _readable_id(Span* spans, const unsigned char* failed_at):
    # After a JSON error: the id if element 1 was scanned completely before it.
    cdef object readable
    if spans[1].kind == 0x22 and spans[1].e != NULL and spans[1].e <= failed_at:
        readable = _id_of(&spans[1])
        if readable is not None:
            return readable
    return "-1"


def scan(data):
    """Validate that ``data`` (bytes-like) is exactly one JSON value.

    Raises:
        ValueError: not valid JSON (RFC 8259, UTF-8, paired surrogates, depth ≤ 256).
    """
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        _whole(<const unsigned char*>view.buf, view.len)
    except _Malformed as exc:
        raise ValueError(f"invalid JSON: {exc.args[0]} at byte {exc.args[1]}") from None
    finally:
        PyBuffer_Release(&view)
