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
"""

from router.ocppj._envelope cimport Message
from router._clock cimport epoch_ms, monotonic_s
from router.ocppj._envelope cimport Core, result_frame
from router.ocppj.errors import OCPPJError
from router.server._wsconn cimport WebSocketProtocol

cdef int CALL = 2


cdef class ChargerCore(WebSocketProtocol):
    """Connection state and the hot path (see the module docstring)."""

    def bind(self, node):
        """Take the node's shared objects once, at open, for the hot path."""
        self.publisher = node.publisher
        self.messages = node.metrics.messages
        self.reply_hist = node.metrics.reply_latency
        self.timed = node.timed
        self.node_b = node.node_b
        self.reply_timeout = node.reply_timeout
        self.edge_heartbeat = node.edge_heartbeat

    def on_text(self, bytes data):
        cdef object decoded
        try:
            decoded = self.dialect.decode(data)
        except OCPPJError as exc:
            self.invalid_message(exc)
            return
        if decoded is None:
            self.other_message(None)
        elif (<Message>decoded).msgtype == CALL:
            self._charger_call(decoded)
        else:
            self.other_message(decoded)

    cdef int _charger_call(self, object decoded) except -1:
        cdef Message msg = <Message>decoded
        cdef object action = msg.action
        cdef double now
        cdef tuple key
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
        key = ("in", "call", action)
        self.messages[key] = self.messages.get(key, 0) + 1
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
        cdef tuple key
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
        key = ("out", "result", action)
        self.messages[key] = self.messages.get(key, 0) + 1
        self.call_id = None
        self.reply_hist.add(monotonic_s() - self.call_started)
        self.send_text(frame)
        return 0


def dispatch_out_entries(list entries, dict by_identity, object slow, object failed):
    """Hand a batch of out-stream entries to their connections, in order.

    A well-formed ``result`` for a connection this node holds (the common
    case: a backend answering a charger CALL) goes straight to its
    connection; every other entry goes to ``slow(ref, fields)``. An exception
    while handling one entry is reported through ``failed(ref, fields, exc)`` and
    does not stop the others.
    """
    cdef object item, ref, cs, want, raw_id, payload, conn
    cdef dict fields
    for item in entries:
        ref, fields = item
        try:
            if fields.get(b"kind") == b"result":
                cs = fields.get(b"cs")
                want = fields.get(b"conn")
                raw_id = fields.get(b"id")
                payload = fields.get(b"payload")
                if (cs is not None and want is not None and raw_id is not None
                        and payload is not None and 0 < len(raw_id) <= 36):
                    conn = by_identity.get(cs.decode("utf-8", "replace"))
                    if conn is not None and (<ChargerCore>conn).conn_b == want:
                        (<ChargerCore>conn)._result(raw_id.decode("utf-8", "replace"),
                                                    payload, ref)
                        continue
            slow(ref, fields)
        except Exception as exc:
            failed(ref, fields, exc)
