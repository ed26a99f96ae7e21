# OCPP-J envelope decoder/encoder: declarations of router.ocppj._envelope.
#
# The decoder scans one WebSocket text message with a pointer-and-length
# cursor, validating the whole JSON text (RFC 8259 grammar, UTF-8 per RFC 3629,
# paired surrogate escapes) without building Python objects for the payload;
# it records where each top-level array element starts and ends (a Span), then
# interprets the spans (OCPP-J 1.6 §4.1, 2.0.1 §4.1, 2.1 §4.1). Only the
# payload is handed to msgspec, as the exact bytes the peer sent.


cdef enum:
    MAX_SPANS = 6       # longest OCPP-J message has 5 elements; one more detects excess
    MAX_DEPTH = 256     # nesting limit of the JSON scanner (documented in docs/ocppj.md)
    MAX_ID_LEN = 36     # OCPP-J 2.0.1 §4.1.3: message id is at most 36 characters


cdef struct Cursor:
    const unsigned char* start   # first byte of the text (for error offsets)
    const unsigned char* p       # next byte to read
    const unsigned char* end     # one past the last byte


cdef struct Span:
    const unsigned char* s       # first byte of the element
    const unsigned char* e       # one past its last byte
    # kind: b'"' string, b'{' object, b'[' array, b'0' plain non-negative
    # integer, b'-' other number, b't' / b'f' / b'n' literal
    unsigned char kind
    bint plain                   # string only: ASCII without escapes (slice == value)


cdef bytes result_frame(str id, bytes payload)


cdef class Message:
    # One decoded OCPP-J message. Created with Message.__new__ from a freelist;
    # every field is set by the decoder (None where the type has no such field).
    cdef readonly int msgtype        # 2 CALL, 3 CALLRESULT, 4 CALLERROR, 5 CALLRESULTERROR, 6 SEND
    cdef readonly str id             # message id, ≤ 36 characters
    cdef readonly object action      # str for CALL / SEND, else None
    cdef readonly object payload     # bytes as received for CALL / CALLRESULT / SEND, else None
    cdef readonly object code        # str for CALLERROR / CALLRESULTERROR
    cdef readonly object description  # str for CALLERROR / CALLRESULTERROR
    cdef readonly object details     # bytes (exact JSON object) for CALLERROR / CALLRESULTERROR


cdef class Core:
    # Per-version state; router.ocppj.Dialect subclasses it. All tables are
    # built once by the Python side and never change.
    cdef readonly str proto
    cdef int version                 # 16, 201 or 21
    cdef bint strict_datetime        # Options.strict_datetime
    cdef bint null_payload_as_empty  # Options.null_payload_as_empty
    cdef bint lenient_error_codes    # Options.lenient_error_codes
    cdef dict call_decoders          # charger CALL action -> bound msgspec Decoder.decode
    cdef dict send_decoders          # charger SEND action -> bound Decoder.decode (2.1)
    cdef dict csms_decoders          # CSMS CALL action -> bound Decoder.decode
    cdef dict response_decoders      # action -> bound Decoder.decode of the response type
    cdef frozenset actions           # every action of the version
    cdef frozenset error_codes       # valid CALLERROR codes (with both spellings if lenient)
    cdef dict respell                # code -> this version's spelling (lenient mode)
    cdef object invalid              # error path: (action, payload, response, id, msgtype)
    cdef object post_check           # strict mode: (action, response, obj, id, msgtype)

    cdef object _decode(self, const unsigned char* data, Py_ssize_t n)
    cdef object _interpret(self, Span* spans, Py_ssize_t count)
    cdef object _validate(self, dict decoders, str action, bytes payload, bint response,
                          str message_id, int msgtype)
    cdef object _payload(self, Span* sp, str message_id, int msgtype, int index)
    cdef int _unknown_action(self, str action, str message_id, int msgtype,
                             int index) except -1
