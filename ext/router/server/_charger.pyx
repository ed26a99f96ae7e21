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

from time import monotonic, time

from router.ocppj._envelope cimport Message
from router.ocppj.errors import OCPPJError
from router.server._wsconn cimport WebSocketProtocol

cdef int CALL = 2


cdef class ChargerCore(WebSocketProtocol):
    """Connection state and the hot path (see the module docstring)."""

    def bind(self, node):
        """Take the node's shared objects once, at open, for the hot path."""
        self.publish_inbound = node.publisher.publish_inbound
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
        now = monotonic()
        self.call_id = msg.id
        self.call_action = action
        self.call_started = now
        self.call_deadline = now + self.reply_timeout
        self.timed.add(self)
        key = ("in", "call", action)
        self.messages[key] = self.messages.get(key, 0) + 1
        self.publish_inbound(self.identity, b"call", self.proto, self.node_b, self.conn_id,
                             int(time() * 1000), msg.id, action, msg.payload, (),
                             shard=self.shard, on_error=self.call_publish_failed)
        return 0

    def backend_result(self, str msg_id, bytes payload, bytes ref):
        """A backend ``result`` for this connection: validated, then sent as
        the CALLRESULT of the pending charger CALL ``msg_id``."""
        cdef object action
        cdef tuple key
        cdef bytes frame
        if self.call_id != msg_id:
            self.reply_not_pending(msg_id, ref)
            return
        action = self.call_action
        try:
            self.dialect.validate_response(action, payload)
        except OCPPJError as exc:
            self.reply_invalid(msg_id, action, exc, ref)
            return
        frame = self.dialect.encode_result(msg_id, payload)
        key = ("out", "result", action)
        self.messages[key] = self.messages.get(key, 0) + 1
        self.call_id = None
        self.reply_hist.observe(monotonic() - self.call_started)
        self.send_text(frame)
