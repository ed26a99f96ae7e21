# cython: language_level=3
"""The per-message hot path of a charger connection, compiled.

``ChargerCore`` holds a connection's state as C fields and runs the two paths
every message takes: a charger CALL in (decode, validate, publish) and the
backend's CALLRESULT out (validate, encode, send). Everything else — the
handshake, backend CALL queues, errors, timers — is plain Python in
:class:`router.server.connection.ChargerConnection`, which subclasses this and
provides the methods called here for the uncommon cases:
``invalid_message``, ``other_message``, ``second_call``, ``edge_answer``,
``call_publish_failed``, ``reply_not_pending``, ``reply_invalid``.

From the socket read to the socket write the common path makes no
Python-level call: the WebSocket layer calls the C hook ``text_event``, the
message is decoded and validated through ``Core`` and published through
``PublisherCore`` by C calls, and ``dispatch_out_entries`` reads a backend's
reply straight from the XREAD reply's bytes (``StreamEntries``).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memcmp

from router._clock cimport epoch_ms, monotonic_s
from router.ocppj._envelope cimport Core, Message, result_frame
from router.ocppj.errors import OCPPJError
from router.server._wsconn cimport WebSocketProtocol
from router.streams._resp cimport EntryRec, Span, StreamEntries

cdef int CALL = 2


cdef class ChargerCore(WebSocketProtocol):
    """Connection state and the hot path (see the module docstring)."""

    def bind(self, node):
        """Take the node's shared objects once, at open, for the hot path."""
        # Standalone/Sentinel: the node's publisher; Redis Cluster: the lane
        # of this charger's shard (self.shard is set before bind()).
        self.publisher = node.inbound_publisher(self.shard)
        self.calls_in = node.metrics.calls_in
        self.results_out = node.metrics.results_out
        self.reply_hist = node.metrics.reply_latency
        self.timed = node.timed
        self.node_b = node.node_b
        self.reply_timeout = node.reply_timeout
        self.edge_heartbeat = node.edge_heartbeat

    def on_text(self, bytes data):
        """A text message from the charger (the WebSocket layer calls
        ``text_event`` in C; a Python override of this method is not called)."""
        self.text_event(data)

    cdef int text_event(self, bytes data) except -1:
        cdef object decoded
        try:
            decoded = (<Core?>self.dialect)._decode(
                <const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        except OCPPJError as exc:
            self.invalid_message(exc)
            return 0
        if decoded is None:
            self.other_message(None)
        elif (<Message>decoded).msgtype == CALL:
            self._charger_call(decoded)
        else:
            self.other_message(decoded)
        return 0

    cdef int _charger_call(self, object decoded) except -1:
        cdef Message msg = <Message>decoded
        cdef object action = msg.action
        cdef double now
        if self.call_id is not None:
            self.second_call(msg)          # OCPP-J §4.1.1: one CALL at a time
            return 0
        if self.edge_heartbeat and action == "Heartbeat":
            self.edge_answer(msg)
            return 0
        now = monotonic_s()
        self.call_id = msg.id
        self.call_action = action
        self.call_started = now
        self.call_deadline = now + self.reply_timeout
        self.timed.add(self)
        self.calls_in[action] = self.calls_in.get(action, 0) + 1
        self.publisher.inbound(self.shard, self.identity, b"call", self.proto, self.node_b,
                               self.conn_id, epoch_ms(), msg.id, action, msg.payload, (),
                               self.call_publish_failed, None)
        return 0

    def backend_result(self, str msg_id, bytes payload, bytes ref):
        """A backend ``result`` for this connection: validated, then sent as
        the CALLRESULT of the pending charger CALL ``msg_id``."""
        self._result(msg_id, payload, ref)

    cdef int _result(self, str msg_id, bytes payload, bytes ref) except -1:
        cdef object action
        cdef bytes frame
        if self.call_id != msg_id:
            self.reply_not_pending(msg_id, ref)
            return 0
        action = self.call_action
        try:
            (<Core?>self.dialect)._validate(
                (<Core>self.dialect).response_decoders, action, payload, True, msg_id, 3)
        except OCPPJError as exc:
            self.reply_invalid(msg_id, action, exc, ref)
            return 0
        frame = result_frame(msg_id, payload)
        self.results_out[action] = self.results_out.get(action, 0) + 1
        self.call_id = None
        self.reply_hist.add(monotonic_s() - self.call_started)
        self._send(1, frame)            # send_text without a Python-level call
        return 0


cdef inline bint _span_is(const char* base, Span* sp, const char* lit, Py_ssize_t n):
    return sp.len == n and memcmp(base + sp.off, lit, n) == 0


def dispatch_out_entries(StreamEntries entries, dict by_identity, object slow, object failed):
    """Hand a batch of out-stream entries to their connections, in order.

    A well-formed ``result`` for a connection this node holds (the common
    case: a backend answering a charger CALL) goes straight to its
    connection, its fields read from the reply's bytes without a dict; every
    other entry goes to ``slow(ref, fields)``. An exception while handling one
    entry is reported through ``failed(ref, fields, exc)`` and does not stop
    the others.
    """
    cdef const char* base = entries.base()
    cdef const char* name
    cdef EntryRec* rec
    cdef Span* sp
    cdef Span* kind
    cdef Span* cs
    cdef Span* want
    cdef Span* raw_id
    cdef Span* payload
    cdef Py_ssize_t i, j
    cdef object conn
    cdef bytes conn_b
    for i in range(entries._n):
        rec = &entries._ent[i]
        kind = cs = want = raw_id = payload = NULL
        # One pass over the names; a repeated name: the last one wins, as in a dict.
        for j in range(rec.first, rec.first + 2 * rec.nfields, 2):
            sp = &entries._spans[j]
            name = base + sp.off
            if sp.len == 2:
                if name[0] == b"c" and name[1] == b"s":
                    cs = sp + 1
                elif name[0] == b"i" and name[1] == b"d":
                    raw_id = sp + 1
            elif sp.len == 4:
                if memcmp(name, b"kind", 4) == 0:
                    kind = sp + 1
                elif memcmp(name, b"conn", 4) == 0:
                    want = sp + 1
            elif sp.len == 7 and memcmp(name, b"payload", 7) == 0:
                payload = sp + 1
        try:
            if (kind != NULL and _span_is(base, kind, b"result", 6) and cs != NULL
                    and want != NULL and raw_id != NULL and payload != NULL
                    and 0 < raw_id.len <= 36):
                conn = by_identity.get(PyUnicode_DecodeUTF8(base + cs.off, cs.len, "replace"))
                if conn is not None:
                    conn_b = (<ChargerCore>conn).conn_b
                    if conn_b is not None and _span_is(base, want, PyBytes_AS_STRING(conn_b),
                                                       PyBytes_GET_SIZE(conn_b)):
                        (<ChargerCore>conn)._result(
                            PyUnicode_DecodeUTF8(base + raw_id.off, raw_id.len, "replace"),
                            PyBytes_FromStringAndSize(base + payload.off, payload.len),
                            entries.ref_c(i))
                        continue
            slow(entries.ref_c(i), entries.fields_c(i))
        except Exception as exc:
            failed(entries.ref_c(i), entries.fields_c(i), exc)
