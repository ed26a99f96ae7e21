"""One charger connection: handshake decisions and OCPP-J routing.

:class:`ChargerConnection` subclasses the compiled WebSocket glue
(:mod:`router.server.wsconn`) and adds what makes it a router:

- the handshake: path → identity, subprotocol choice, authentication,
  admission control (all answered by HTTP status before any WebSocket frame);
- charger → backend: a valid CALL is published as a ``call`` entry and waits
  for the backend's reply (one at a time, OCPP-J §4.1.1); bad input is
  answered here with a CALLERROR;
- backend → charger: replies and CALLs from ``ocpp:out:<node>`` (dispatched
  by :class:`router.server.node.Node`), validated before they are sent, backend
  CALLs queued and sent one at a time.

Nothing here blocks and nothing here starts a task per message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
import time
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from router.ocppj import Message
from router.ocppj.errors import OCPPJError
from router.server._charger import ChargerCore
from router.ws import UpgradeRequest

if TYPE_CHECKING:
    from router.server.node import Node

log = logging.getLogger("router.connection")

# OCPP 2.0.1 Part 2 §2.1.5 identifierString: a-z A-Z 0-9 * - _ = : + | @ .
# The identity is also a URL path segment and part of Redis keys; ':' is
# excluded because it is the key separator (and OCPP-J 1.6 security profile 1
# forbids it in the Basic-auth username, RFC 7617 §2).
_IDENTITY = re.compile(r"[A-Za-z0-9*\-_=+|@.]{1,48}")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

CALL, CALLRESULT, CALLERROR, CALLRESULTERROR, SEND = 2, 3, 4, 5, 6


class BackendCall:
    """A backend CALL queued for or in flight to a charger."""

    __slots__ = ("action", "deadline", "id", "payload", "ref", "reply_to", "timeout")

    def __init__(self, id: str, action: str, payload: bytes, timeout: float,
                 reply_to: bytes | None, ref: bytes | None) -> None:
        self.id = id
        self.action = action
        self.payload = payload
        self.timeout = timeout
        self.reply_to = reply_to
        self.ref = ref
        self.deadline = 0.0


def new_conn_id() -> str:
    """64 random bits: unique across reconnects and nodes without coordination."""
    return os.urandom(8).hex()


def parse_identity(path: str, prefix: str) -> tuple[int, str | None]:
    """Map a request target to (HTTP status, identity).

    Returns (0, identity) when the path is a valid charger URL, else the HTTP
    status to answer: 400 for a malformed target, 404 for anything else.
    """
    target = path.split("?", 1)[0]
    if not target.startswith(prefix):
        return 404, None
    raw = target[len(prefix):]
    if _BAD_PERCENT.search(raw):
        return 400, None
    try:
        identity = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return 404, None
    if not _IDENTITY.fullmatch(identity):
        return 404, None
    return 0, identity


def basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    """(username, password bytes) from an ``Authorization: Basic`` header, else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def common_name(subject: Any) -> str | None:
    """The CN of a subject as returned by ``SSLSocket.getpeercert()['subject']``."""
    for rdn in subject or ():
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def cn_from_header(value: str) -> str | None:
    """CN from a proxy's subject header: RFC 4514 (``CN=x,O=y``) or OpenSSL
    one-line (``/O=y/CN=x``) forms, as nginx and envoy produce them."""
    text = unquote(value.strip())
    parts = text.split("/") if text.startswith("/") else re.split(r"(?<!\\),", text)
    for part in parts:
        key, sep, val = part.strip().partition("=")
        if sep and key.strip().upper() == "CN":
            return val.strip().replace("\\,", ",")
    return None


class ChargerConnection(ChargerCore, asyncio.BufferedProtocol):
    """The router's per-connection state machine.

    The state lives in C fields of :class:`router.server._charger.ChargerCore`
    (declared in ext/router/server/_charger.pxd), which also runs the
    per-message paths; this class adds the handshake and the uncommon cases.
    """

    __slots__ = ()

    def __init__(self, node: Node) -> None:
        super().__init__(node.ws_settings)
        self.node = node
        self.identity = None
        self.proto = ""
        self.conn_id = ""
        self.conn_b = b""
        self.addr = ""
        self.since_ms = 0
        self.opened = False
        self.call_id = None
        self.call_action = ""
        self.inflight = None
        self.queue = None
        node.handshake_started(self)

    # ------------------------------------------------------------ handshake
    def on_request(self, request: UpgradeRequest) -> None:
        node = self.node
        status, identity = parse_identity(request.path, node.config.path_prefix)
        if status:
            node.count_handshake("bad_request" if status == 400 else "not_found")
            self.reject(status)
            return
        if node.draining:
            node.count_handshake("draining")
            self.reject(503, [("Retry-After", str(node.config.retry_after))])
            return
        if node.overloaded():
            node.count_handshake("overloaded")
            self.reject(503, [("Retry-After", str(node.config.retry_after))])
            return
        assert identity is not None
        self.identity = identity
        peer = self.transport.get_extra_info("peername") if self.transport else None
        self.addr = f"{peer[0]}:{peer[1]}" if peer else ""
        failure = node.check_certificate(self, request, identity)
        if failure:
            node.count_handshake(failure)
            self.reject(401)
            return
        if node.config.auth == "basic":
            node.authenticate(self, request, identity)
            return
        self.finish_handshake(request)

    def on_post(self, data: bytes) -> bool:
        """A POST on the charger port: OCPP-S (router.server.soap) takes the
        connection over when enabled (``--soap``)."""
        node = self.node
        if node.soap is None or node.draining:
            return False
        node.handshake_finished(self)
        node.soap.take_over(self.transport, data)
        return True

    def finish_handshake(self, request: UpgradeRequest) -> None:
        """Choose the subprotocol and accept (called after authentication)."""
        offered = request.subprotocols
        chosen = None
        for proto in self.node.config.subprotocols:
            if proto in offered:
                chosen = proto
                break
        if chosen is None:
            # OCPP-J 2.0.1 §3.2: complete the handshake without
            # Sec-WebSocket-Protocol, then close at once.
            self.node.count_handshake("no_subprotocol")
            self.accept(None)
            self.close(1002, "no supported OCPP subprotocol")
            return
        self.proto = chosen
        self.dialect = self.node.dialects[chosen]
        self.accept(chosen)

    def reject_auth(self) -> None:
        self.node.count_handshake("unauthorized")
        self.reject(401, [("WWW-Authenticate", 'Basic realm="ocpp", charset="UTF-8"')])

    def on_open(self) -> None:
        if not self.proto:   # accepted only to close (no common subprotocol)
            return
        self.opened = True
        assert self.identity is not None
        self.shard = self.node.keys.shard_of(self.identity)
        self.bind(self.node)
        self.conn_id = new_conn_id()
        self.conn_b = self.conn_id.encode()
        self.since_ms = int(time.time() * 1000)
        self.node.connection_opened(self)

    def on_rejected(self) -> None:
        self.node.handshake_finished(self)

    def on_closed(self, code: int, reason: str) -> None:
        if self.opened:
            self.opened = False
            self.node.connection_closed(self, code, reason)
        else:
            self.node.handshake_finished(self)

    # ------------------------------------------------------ charger -> router
    # on_text and the CALL path are compiled (ChargerCore); these are the
    # uncommon cases it hands back.
    def invalid_message(self, exc: OCPPJError) -> None:
        self.node.count_validation_error(exc, self.proto)
        if exc.msgtype in (CALLRESULT, CALLERROR, CALLRESULTERROR, SEND):
            # OCPP-J answers only a CALL with a CALLERROR; a broken answer or
            # SEND is dropped (a backend CALL it meant to answer ends as
            # failed Timeout).
            self.node.metrics.inc(self.node.metrics.ignored, "invalid_non_call")
            return
        self.send_text(self.dialect.error_for(exc))

    def other_message(self, msg: Message | None) -> None:
        """Anything but a CALL; None for an unknown message type (ignored)."""
        node = self.node
        if msg is None:
            node.metrics.inc(node.metrics.ignored, "unknown_message_type")
            return
        mtype = msg.msgtype
        if mtype == CALLRESULT or mtype == CALLERROR:
            self._charger_answer(msg)
        elif mtype == SEND:
            node.count_message("in", "send", msg.action or "")
            node.publish(self, b"send", msg.id, msg.action, msg.payload)
        elif mtype == CALLRESULTERROR:
            node.count_message("in", "callresulterror", "")
            node.publish(self, b"error", msg.id, msg.action, None, msg.code,
                         msg.description, msg.details, (b"msgtype", b"5"))

    def on_binary(self, data: bytes) -> None:
        # OCPP-J uses text frames only (OCPP-J 1.6 §4.1.1, 2.0.1 §4.1.1).
        self.node.metrics.inc(self.node.metrics.ignored, "binary_frame")
        self.close(1003, "OCPP-J messages are text frames")

    def second_call(self, msg: Message) -> None:
        """OCPP-J §4.1.1: one CALL at a time. The previous one still waits for
        the backend; refuse this one without publishing."""
        code = "GenericError" if self.proto == "ocpp1.6" else "RpcFrameworkError"
        self.node.metrics.inc(self.node.metrics.validation_errors, code)
        self.send_text(self.dialect.encode_error(
            msg.id, code, "previous CALL is still unanswered (OCPP-J: one CALL at a time)"))

    def edge_answer(self, msg: Message) -> None:
        """Heartbeat answered by the router itself (``--heartbeat edge``)."""
        self.node.metrics.inc(self.node.metrics.edge_answers, "Heartbeat")
        self.send_text(self.dialect.encode_result(msg.id, self.node.heartbeat_payload()))

    def call_publish_failed(self, exc: BaseException) -> None:
        """Redis did not take the pending CALL's entry: tell the charger now so
        it keeps the message and retries (InternalError). Never a success.

        Only the pending CALL's entry carries this callback, and a CALL is
        answered only after its entry was published, so a failure belongs to
        the CALL still pending (config makes --reply-timeout longer than
        --publish-timeout, so a CALL cannot expire while its XADD is in flight).
        """
        msg_id = self.call_id
        if msg_id is not None:
            self.call_id = None
            self.node.metrics.inc(self.node.metrics.edge_answers, "InternalError")
            self.send_text(self.dialect.encode_error(
                msg_id, "InternalError", "message could not be forwarded, retry later"))

    def _charger_answer(self, msg: Message) -> None:
        node = self.node
        call = self.inflight
        if call is None or call.id != msg.id:
            node.metrics.inc(node.metrics.ignored, "unexpected_answer")
            return
        if msg.msgtype == CALLRESULT:
            try:
                self.dialect.validate_response(call.action, msg.payload or b"{}")
            except OCPPJError as exc:
                node.count_validation_error(exc, self.proto)
                node.fail(self.identity or "", call.id, call.action, "InvalidPayload",
                          f"charger's CALLRESULT is invalid: {exc.description}"[:255],
                          conn=self, ref=call.ref, reply_to=call.reply_to)
            else:
                node.count_message("in", "result", call.action)
                node.publish(self, b"result", call.id, call.action, msg.payload,
                             reply_to=call.reply_to)
        else:
            node.count_message("in", "error", call.action)
            node.publish(self, b"error", call.id, call.action, None, msg.code,
                         msg.description, msg.details, reply_to=call.reply_to)
        self.inflight = None
        self._send_next_call()

    # ------------------------------------------------------ backend -> charger
    def reply_not_pending(self, msg_id: str, ref: bytes) -> None:
        self.node.fail(self.identity or "", msg_id, None, "NoPendingCall",
                       "no charger CALL with this id is waiting for a reply", conn=self, ref=ref)

    def reply_invalid(self, msg_id: str, action: str, exc: OCPPJError, ref: bytes) -> None:
        """Never send the charger a reply that breaks its schema: it gets
        InternalError (it will retry), the backend gets a failed entry."""
        self.call_id = None
        self.send_text(self.dialect.encode_error(
            msg_id, "InternalError", "the CSMS could not process the request"))
        self.node.fail(self.identity or "", msg_id, action, "InvalidPayload", exc.description,
                       conn=self, ref=ref)

    def backend_reply(self, kind: bytes, msg_id: str, fields: dict[bytes, bytes],
                      ref: bytes) -> None:
        """A ``result``/``error`` entry from the out stream for this connection."""
        if kind == b"result":
            self.backend_result(msg_id, fields.get(b"payload", b""), ref)
            return
        node = self.node
        if self.call_id != msg_id:
            self.reply_not_pending(msg_id, ref)
            return
        action = self.call_action
        code = fields.get(b"code", b"").decode("utf-8", "replace")
        if code not in node.error_codes[self.proto]:
            self.call_id = None
            self.send_text(self.dialect.encode_error(
                msg_id, "InternalError", "the CSMS could not process the request"))
            node.fail(self.identity or "", msg_id, action, "Malformed",
                      f"error code {code[:40]!r} does not exist in {self.proto}",
                      conn=self, ref=ref)
            return
        description = fields.get(b"description", b"").decode("utf-8", "replace")
        details = fields.get(b"details") or b"{}"
        if not node.is_json_object(details):
            details = b"{}"
        node.count_message("out", "error", action)
        self.call_id = None
        node.metrics.reply_latency.observe(time.monotonic() - self.call_started)
        self.send_text(self.dialect.encode_error(msg_id, code, description, details))

    def backend_call(self, call: BackendCall) -> None:
        """Queue a validated backend CALL; send it if nothing is in flight."""
        if self.inflight is None:
            self._start_call(call)
            return
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        if len(queue) >= self.node.config.max_queued_calls:
            self.node.fail(self.identity or "", call.id, call.action, "QueueFull",
                           f"more than {self.node.config.max_queued_calls} CALLs queued",
                           conn=self, ref=call.ref, reply_to=call.reply_to)
            return
        queue.append(call)

    def _start_call(self, call: BackendCall) -> None:
        self.inflight = call
        call.deadline = time.monotonic() + call.timeout
        self.node.timed.add(self)     # the node's sweep checks its deadline
        self.node.count_message("out", "call", call.action)
        self.send_text(self.dialect.encode_call(call.id, call.action, call.payload))

    def _send_next_call(self) -> None:
        queue = self.queue
        if queue:
            self._start_call(queue.popleft())
        elif queue is not None:
            self.queue = None   # idle connections keep no deque

    def backend_send(self, msg_id: str, action: str, payload: bytes) -> None:
        self.node.count_message("out", "send", action)
        self.send_text(self.dialect.encode_send(msg_id, action, payload))

    # ---------------------------------------------------------------- timers
    def check_deadlines(self, now: float) -> bool:
        """Expire overdue calls; True while something still has a deadline."""
        node = self.node
        if self.call_id is not None and now >= self.call_deadline:
            msg_id, self.call_id = self.call_id, None
            node.metrics.inc(node.metrics.edge_answers, "ReplyTimeout")
            self.send_text(self.dialect.encode_error(
                msg_id, "InternalError", "the CSMS did not answer in time"))
        call = self.inflight
        if call is not None and now >= call.deadline:
            self.inflight = None
            node.fail(self.identity or "", call.id, call.action, "Timeout",
                      f"charger did not answer within {call.timeout:g} s",
                      conn=self, ref=call.ref, reply_to=call.reply_to)
            self._send_next_call()
        return self.call_id is not None or self.inflight is not None

    def fail_all_calls(self) -> None:
        """The connection is gone: every backend CALL it holds ends as ``Closed``."""
        calls = []
        if self.inflight is not None:
            calls.append(self.inflight)
            self.inflight = None
        if self.queue:
            calls.extend(self.queue)
        self.queue = None
        for call in calls:
            self.node.fail(self.identity or "", call.id, call.action, "Closed",
                           "the connection closed before the charger answered",
                           conn=self, ref=call.ref, reply_to=call.reply_to)
