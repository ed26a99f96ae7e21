"""OCPP-S on the charger port: HTTP POST in, SOAP answers out, SOAP calls to chargers.

A TCP connection to the charger port whose first request is a ``POST`` (never
a WebSocket upgrade, which is a GET: RFC 6455 §4.1) is handed from
:class:`~router.server.connection.ChargerConnection` to a
:class:`SoapHttpConnection` (``transport.set_protocol``); the WebSocket path is
unchanged. Per node, :class:`SoapManager` keeps a :class:`SoapSession` for
each SOAP charger heard from recently: what a ``ChargerConnection`` is for a
WebSocket charger (identity, ``proto``, ``conn`` id, shard, pending CALLs, the
queue of backend CALLs), so :class:`~router.server.node.Node` routes out-stream
entries to either the same way.

* Charger → backend: a request is parsed and validated
  (:mod:`router.soap`), published as a ``call`` entry, and the HTTP request
  stays open until the backend's ``result``/``error`` (or ``--reply-timeout``:
  Receiver fault); the answer is a SOAP response or Fault.
* Backend → charger: a ``call`` is POSTed to the ``From`` address the charger
  gave (WS-Addressing), one in flight per charger; it ends as one ``result``,
  ``error`` or ``failed`` entry like a WebSocket charger's.
* The registry entry (``ocpp:cs:<identity>``) carries ``transport`` = ``soap``
  and ``endpoint``; a session ends (``disconnected``) after
  ``--soap-session-timeout`` without a request, when another node takes the
  charger over, or on drain.

See docs/soap.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import msgspec
from httptools import HttpParserError, HttpRequestParser

from router.ocppj.errors import FormatViolation, OCPPJError, error_codes
from router.ocppj.errors import NotSupported as OCPPNotSupported
from router.server.connection import _IDENTITY, BackendCall, basic_credentials, new_conn_id
from router.server.soap_client import SoapHttpError, post
from router.soap import (
    CONTENT_TYPE,
    ProtocolViolation,
    ReceiverError,
    SoapCodec,
    SoapError,
    SoapRequest,
    fault_envelope,
    request_envelope,
    response_envelope,
)
from router.soap.compress import BodyTooLarge, inflate
from router.soap.envelope import WSA_ANONYMOUS, body_xml
from router.soap.errors import IdentityMismatch
from router.streams.registry import Entry

if TYPE_CHECKING:
    from router.server.node import Node

log = logging.getLogger("router.soap")

#: Stream-entry fields every SOAP charger's entries carry (docs/streams.md).
SOAP_FIELDS = (b"transport", b"soap")
#: Seconds an idle keep-alive connection stays open.
KEEPALIVE_IDLE = 60.0
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
            413: "Content Too Large", 415: "Unsupported Media Type",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}
# OCPP error code of a backend ``error`` → SOAP fault (code, subcode).
_FAULT_OF = {
    "NotImplemented": ("Sender", "NotSupported"), "NotSupported": ("Sender", "NotSupported"),
    "SecurityError": ("Sender", "SecurityError"), "ProtocolError": ("Sender", "ProtocolError"),
    "FormationViolation": ("Sender", "ProtocolError"),
    "FormatViolation": ("Sender", "ProtocolError"),
    "OccurrenceConstraintViolation": ("Sender", "ProtocolError"),
    "MessageTypeNotSupported": ("Sender", "NotSupported"),
    "PropertyConstraintViolation": ("Sender", "ProtocolError"),
    "OccurenceConstraintViolation": ("Sender", "ProtocolError"),
    "TypeConstraintViolation": ("Sender", "ProtocolError"),
}
# A charger's fault subcode → the OCPP error code of the ``error`` entry.
_CODE_OF = {"NotSupported": "NotSupported", "SecurityError": "SecurityError",
            "IdentityMismatch": "SecurityError", "ProtocolError": "ProtocolError",
            "InternalError": "InternalError"}
# Either spelling (a backend SDK may use the 2.x one for a proto it does not know).
_ERROR_CODES = error_codes("ocpp1.6") | error_codes("ocpp2.0.1")

# A SOAP charger's registry entry is written by the registry's own takeover
# script (router.streams.registry) and then marked as a SOAP charger's, with its
# endpoint — only while this session still holds it. One key: Redis Cluster safe.
_MARK = """\
if redis.call('HGET', KEYS[1], 'conn') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'transport', 'soap', 'endpoint', ARGV[2])
  return 1
end
return 0
"""


class _SoapDialect:
    """What Node._out_entry asks of a connection's dialect, for OCPP-S: the
    CSMS-initiated operations of the version's charge point service, and the
    check of a backend CALL's payload (1.6: the 1.6 JSON schema; 1.5/1.2: the
    version's tables after conversion)."""

    def __init__(self, codec: SoapCodec, version: str) -> None:
        self.codec = codec
        self.version = version
        self.csms_actions = codec.csms_actions[version]

    def validate_send(self, action: str, payload: bytes, *, from_charger: bool) -> None:
        raise OCPPNotSupported("OCPP-S has no SEND")

    def validate_request(self, action: str, payload: bytes, *, from_charger: bool) -> None:
        try:
            self.codec.call_body(self.version, action, payload)
        except SoapError as exc:
            raise FormatViolation(str(exc)) from None


class _Pending:
    __slots__ = ("action", "future", "started")

    def __init__(self, action: str, future: asyncio.Future[bytes]) -> None:
        self.action = action
        self.future = future
        self.started = time.monotonic()


class SoapSession:
    """A SOAP charger on this node (the counterpart of a ChargerConnection)."""

    def __init__(self, manager: SoapManager, identity: str, version: str, proto: str,
                 endpoint: str | None, addr: str) -> None:
        node = manager.node
        self.manager = manager
        self.node = node
        self.identity = identity
        self.version = version
        self.proto = proto
        self.dialect = manager.dialects[version]
        self.endpoint = endpoint
        self.addr = addr
        self.conn_id = new_conn_id()
        self.conn_b = self.conn_id.encode()
        self.since_ms = int(time.time() * 1000)
        self.shard = node.keys.shard_of(identity)
        self.last_seen = time.monotonic()
        self.interval = 0           # heartbeat interval the backend gave at boot (s)
        self.opened = True
        self.pending: dict[str, _Pending] = {}
        self.inflight: BackendCall | None = None
        self.inflight_task: asyncio.Task[None] | None = None
        self.queue: deque[BackendCall] | None = None
        # The first registry write (SoapManager.session_for); its first
        # answer waits for it.
        self.registering: asyncio.Task[None] | None = None

    # ------------------------------------------------------- charger -> backend
    def charger_call(self, req: SoapRequest) -> asyncio.Future[bytes]:
        """Publish the charger's request; the future gets the body element of
        the answer or a :class:`SoapError` (the fault)."""
        node = self.node
        if len(self.pending) >= node.config.max_queued_calls:
            raise ReceiverError("too many requests of this charger are waiting")
        msg_id = os.urandom(8).hex()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = _Pending(req.action, future)

        def publish_failed(exc: BaseException) -> None:
            node.metrics.inc(node.metrics.redis_errors, "publish")
            entry = self.pending.pop(msg_id, None)
            if entry is not None and not entry.future.done():
                entry.future.set_exception(
                    ReceiverError("message could not be forwarded, retry later"))

        node.count_message("in", "call", req.action)
        node.publish(self, b"call", msg_id, req.action, req.payload, on_error=publish_failed)
        future.add_done_callback(lambda _: self.pending.pop(msg_id, None))
        return future

    def backend_reply(self, kind: bytes, msg_id: str, fields: dict[bytes, bytes],
                      ref: bytes) -> None:
        """A ``result``/``error`` entry for a pending charger request."""
        node = self.node
        entry = self.pending.get(msg_id)
        if entry is None or entry.future.done():
            node.fail(self.identity, msg_id, None, "NoPendingCall",
                      "no charger CALL with this id is waiting for a reply", conn=self, ref=ref)
            return
        action = entry.action
        if kind == b"result":
            try:
                body = self.manager.codec.response_body(self.version, action,
                                                        fields.get(b"payload", b""))
            except (OCPPJError, SoapError) as exc:
                text = exc.description if isinstance(exc, OCPPJError) else str(exc)
                entry.future.set_exception(ReceiverError("the CSMS could not process the request"))
                node.fail(self.identity, msg_id, action, "InvalidPayload", text, conn=self,
                          ref=ref)
                return
            node.count_message("out", "result", action)
            node.metrics.reply_latency.observe(time.monotonic() - entry.started)
            if action == "BootNotification":
                self.interval = _interval(fields.get(b"payload", b""))
            entry.future.set_result(body.encode())
            return
        code = fields.get(b"code", b"").decode("utf-8", "replace")
        if code not in _ERROR_CODES:
            entry.future.set_exception(ReceiverError("the CSMS could not process the request"))
            node.fail(self.identity, msg_id, action, "Malformed",
                      f"error code {code[:40]!r} does not exist in {self.proto}", conn=self,
                      ref=ref)
            return
        description = fields.get(b"description", b"").decode("utf-8", "replace")
        fault, sub = _FAULT_OF.get(code, ("Receiver", "InternalError"))
        node.count_message("out", "error", action)
        node.metrics.reply_latency.observe(time.monotonic() - entry.started)
        entry.future.set_exception(ReceiverError(description or code, sub, fault))

    # ------------------------------------------------------- backend -> charger
    def backend_call(self, call: BackendCall) -> None:
        """Queue a validated backend CALL; POST it if nothing is in flight."""
        if self.inflight is None:
            self._start_call(call)
            return
        if self.queue is None:
            self.queue = deque()
        if len(self.queue) >= self.node.config.max_queued_calls:
            self.node.fail(self.identity, call.id, call.action, "QueueFull",
                           f"more than {self.node.config.max_queued_calls} CALLs queued",
                           conn=self, ref=call.ref, reply_to=call.reply_to)
            return
        self.queue.append(call)

    def backend_send(self, msg_id: str, action: str, payload: bytes) -> None:
        # Node refuses SEND for every proto but ocpp2.1 before it gets here.
        raise AssertionError("OCPP-S has no SEND")

    def _start_call(self, call: BackendCall) -> None:
        self.inflight = call
        self.node.count_message("out", "call", call.action)
        self.inflight_task = asyncio.create_task(self._post(call))

    def _next_call(self) -> None:
        self.inflight = None
        self.inflight_task = None
        if self.queue:
            self._start_call(self.queue.popleft())
        else:
            self.queue = None

    async def _post(self, call: BackendCall) -> None:
        node = self.node
        metrics = node.metrics
        try:
            outcome = await self._exchange(call)
        except asyncio.CancelledError:
            raise
        except Exception:   # never leave a CALL without its outcome
            log.exception("SOAP call failed unexpectedly")
            outcome = ("failed", "Closed", "the router could not complete the call")
        if outcome[0] == "result":
            node.count_message("in", "result", call.action)
            node.publish(self, b"result", call.id, call.action, outcome[1].encode(),
                         reply_to=call.reply_to)
        elif outcome[0] == "error":
            node.count_message("in", "error", call.action)
            node.publish(self, b"error", call.id, call.action, None, outcome[1], outcome[2],
                         b"{}", reply_to=call.reply_to)
        else:
            node.fail(self.identity, call.id, call.action, outcome[1], outcome[2], conn=self,
                      ref=call.ref, reply_to=call.reply_to)
        metrics.inc(metrics.soap_calls, outcome[0])
        if self.inflight is call:
            self._next_call()

    async def _exchange(self, call: BackendCall) -> tuple[str, str, str]:
        """POST one CALL; ("result", payload JSON, "") / ("error", code, text) /
        ("failed", code, text)."""
        manager = self.manager
        endpoint = self.endpoint
        if not endpoint:
            return ("failed", "NotConnected",
                    "the charger gave no From address: it cannot be called (behind NAT?)")
        try:
            body = manager.codec.call_body(self.version, call.action, call.payload)
        except (OCPPJError, SoapError) as exc:
            text = exc.description if isinstance(exc, OCPPJError) else str(exc)
            return ("failed", "InvalidPayload", text)
        envelope = request_envelope(self.version, call.action, body, self.identity, endpoint,
                                    f"urn:uuid:{uuid.uuid4()}")
        headers = [("Content-Type", f'{CONTENT_TYPE}; action="/{call.action}"')]
        try:
            status, _, data = await asyncio.wait_for(
                post(endpoint, envelope, headers, max_bytes=manager.max_body), call.timeout)
        except TimeoutError:
            return ("failed", "Timeout", f"charger did not answer within {call.timeout:g} s")
        except SoapHttpError as exc:
            return ("failed", "NotConnected", f"SOAP endpoint unreachable: {exc}"[:255])
        try:
            msg = manager.codec.decode_call_response(self.version, call.action, data)
        except (OCPPJError, SoapError) as exc:
            text = exc.description if isinstance(exc, OCPPJError) else str(exc)
            if status >= 300 and not data.strip():
                return ("failed", "NotConnected", f"HTTP {status} from the SOAP endpoint")
            return ("failed", "InvalidPayload", f"charger's answer is invalid: {text}"[:255])
        if msg.fault is not None:
            code, sub, reason = msg.fault
            ocpp_code = _CODE_OF.get(sub, "InternalError" if code == "Receiver" else
                                     "GenericError")
            return ("error", ocpp_code, reason[:255])
        return ("result", msgspec.json.encode(msg.payload).decode(), "")

    # ----------------------------------------------------------------- ending
    def close(self, code: int = 1000, reason: str = "") -> None:
        """End the session (an out-stream ``close``, a takeover, drain)."""
        self.manager.end(self, code, reason or "closed by the CSMS")

    def fail_all(self) -> None:
        calls: list[BackendCall] = []
        if self.inflight is not None:
            calls.append(self.inflight)
            self.inflight = None
            if self.inflight_task is not None:
                self.inflight_task.cancel()
                self.inflight_task = None
        calls.extend(self.queue or ())
        self.queue = None
        for call in calls:
            self.node.fail(self.identity, call.id, call.action, "Closed",
                           "the SOAP session ended before the charger answered",
                           conn=self, ref=call.ref, reply_to=call.reply_to)
        for entry in list(self.pending.values()):
            if not entry.future.done():
                entry.future.set_exception(ReceiverError("the charger's session ended"))
        self.pending.clear()


class SoapManager:
    """The SOAP chargers of one node: sessions, registry, expiry (docs/soap.md)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config
        self.codec = SoapCodec(node.soap_dialect16)
        self.dialects = {v: _SoapDialect(self.codec, v) for v in self.codec.csms_actions}
        self.sessions: dict[str, SoapSession] = {}
        self.http: set[SoapHttpConnection] = set()
        self.max_body = config.soap_max_body
        self.session_timeout = config.soap_session_timeout
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="soap-sweep")

    async def stop(self, code: int = 1001, reason: str = "server going away") -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for session in list(self.sessions.values()):
            self.end(session, code, reason)
        for conn in list(self.http):
            conn.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)

    def take_over(self, transport: Any, data: bytes) -> None:
        """Serve a TCP connection whose first request is a POST (from
        ChargerConnection.on_post): the rest of its life is HTTP."""
        node = self.node
        if len(self.http) >= node.config.max_handshakes:
            # Admission control: open SOAP HTTP connections count like
            # handshakes in progress (a SOAP fleet reconnecting at once).
            node.count_handshake("overloaded")
            node.metrics.inc(node.metrics.soap_http_errors, "503")
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                            b"Connection: close\r\nRetry-After: %d\r\n\r\n"
                            % node.config.retry_after)
            transport.close()
            return
        peer = transport.get_extra_info("peername")
        addr = f"{peer[0]}:{peer[1]}" if peer else ""
        conn = SoapHttpConnection(self, transport, addr)
        transport.set_protocol(conn)
        conn.feed(data)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --------------------------------------------------------------- sessions
    def session_for(self, req: SoapRequest, identity: str, addr: str) -> SoapSession:
        """The session of ``identity``, created (``connected``, registry) when new."""
        node = self.node
        endpoint = req.msg.from_address
        if endpoint == WSA_ANONYMOUS or (endpoint and not endpoint.lower().startswith(
                ("http://", "https://"))):
            endpoint = None
        session = self.sessions.get(identity)
        if session is not None and session.version != req.version:
            self.end(session, 1000, "the charger changed its OCPP version")
            session = None
        if session is None:
            ws = node.by_identity.get(identity)
            if ws is not None:        # the charger moved from OCPP-J to OCPP-S
                ws.close(1000, "replaced by a SOAP session")
            session = SoapSession(self, identity, req.version, req.proto, endpoint, addr)
            self.sessions[identity] = session
            node.metrics.inc(node.metrics.handshakes, "soap_session")
            node.publish(session, b"connected", None, None, None,
                         extra=(b"addr", addr.encode(), b"endpoint", (endpoint or "").encode()))
            session.registering = self._spawn(self._register(session))
        else:
            session.last_seen = time.monotonic()
            session.addr = addr
            if endpoint and endpoint != session.endpoint:
                session.endpoint = endpoint
                self._spawn(self._set_endpoint(session))
        return session

    def end(self, session: SoapSession, code: int, reason: str) -> None:
        if self.sessions.get(session.identity) is not session or not session.opened:
            return
        session.opened = False
        del self.sessions[session.identity]
        session.fail_all()
        self.node.publish(session, b"disconnected", None, None, None, str(code), reason[:123])
        self._spawn(self._unregister(session))

    async def _register(self, session: SoapSession) -> None:
        node = self.node
        previous = None
        try:
            previous = await node.registry.register(
                session.identity, node=node.node_id, conn=session.conn_id, proto=session.proto,
                since_ms=session.since_ms, addr=session.addr)
            await self._mark(session)
        except Exception:
            node.metrics.inc(node.metrics.redis_errors, "registry")
            log.warning("registry write failed for a SOAP charger", exc_info=True)
            return
        if not session.opened:
            await self._unregister(session)
            return
        if previous:
            prev_node, prev_conn = previous
            if prev_node != node.node_id and prev_conn != session.conn_id:
                node.publisher.xadd(node.keys.out(prev_node),
                                    [b"kind", b"close", b"cs", session.identity.encode(),
                                     b"conn", prev_conn.encode()], maxlen=100_000)

    async def _mark(self, session: SoapSession) -> None:
        node = self.node
        await node.redis.command(b"EVAL", _MARK, 1, node.keys.registry(session.identity),
                                 session.conn_id, session.endpoint or "")

    async def _set_endpoint(self, session: SoapSession) -> None:
        try:
            await self._mark(session)
        except Exception:
            self.node.metrics.inc(self.node.metrics.redis_errors, "registry")

    async def _unregister(self, session: SoapSession) -> None:
        try:
            await self.node.registry.unregister(session.identity, session.conn_id)
        except Exception:
            self.node.metrics.inc(self.node.metrics.redis_errors, "registry")

    def registry_entries(self, identities: Iterable[str]) -> list[Entry]:
        """The registry entries of those of ``identities`` that are live
        sessions here, as :meth:`Registry.restore_many` writes them back
        (the node's registry round keeps SOAP and WebSocket chargers' entries
        alike: Node._registry_round)."""
        entries = []
        for identity in identities:
            session = self.sessions.get(identity)
            if session is not None and session.opened:
                entries.append(Entry(identity, self.node.node_id, session.conn_id,
                                     session.proto, session.since_ms, session.addr,
                                     ("transport", "soap", "endpoint", session.endpoint or "")))
        return entries

    async def _sweep(self) -> None:
        """Expire idle sessions (their registry entries are kept alive by the
        node's registry round, with the WebSocket chargers')."""
        period = max(1.0, min(5.0, self.session_timeout / 4))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                # A charger told to heartbeat rarely is not gone before two
                # of its intervals have passed.
                limit = self.session_timeout
                if session.interval:
                    limit = max(limit, 2.0 * session.interval + 60.0)
                if (now - session.last_seen >= limit and not session.pending
                        and session.inflight is None):
                    self.end(session, 1000, f"no request within {limit:g} s")

    # ------------------------------------------------------------- requests
    async def handle(self, conn: SoapHttpConnection, headers: dict[str, str],
                     body: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
        """One POST: (HTTP status, SOAP body, extra headers)."""
        node = self.node
        metrics = node.metrics
        version = None
        relates_to = None
        try:
            try:
                data = inflate(body, headers.get("content-encoding", ""), self.max_body)
            except BodyTooLarge:
                metrics.inc(metrics.soap_http_errors, "413")
                return 413, b"", []
            except ValueError as exc:
                raise ProtocolViolation(f"bad request body: {exc}") from None
            req = self.codec.decode_request(data)
            version = req.version
            relates_to = req.msg.message_id
            identity = (req.msg.identity or "").strip()
            if not _IDENTITY.fullmatch(identity):
                raise IdentityMismatch("chargeBoxIdentity is not a valid charger identity")
            denied = await self._check_access(conn, headers, identity)
            if denied is not None:
                return denied
            if node.draining:
                raise ReceiverError("the central system is shutting down, retry later")
            session = self.session_for(req, identity, conn.addr)
            registering = session.registering
            if registering is not None and not registering.done():
                # A new session is in the registry before its first answer:
                # behind a load balancer without affinity the charger's next
                # request may reach another node, whose takeover must come
                # after this write, not be overwritten by it. One round trip,
                # once per session (the task handles its own errors).
                await asyncio.shield(registering)
            if node.edge_heartbeat and req.action == "Heartbeat":
                metrics.inc(metrics.edge_answers, "Heartbeat")
                body_el = body_xml(req.version, "cs", "Heartbeat", True,
                                   msgspec.json.decode(node.heartbeat_payload()))
            else:
                future = session.charger_call(req)
                try:
                    body_el = (await asyncio.wait_for(asyncio.shield(future),
                                                      node.reply_timeout)).decode()
                except TimeoutError:
                    future.cancel()
                    metrics.inc(metrics.edge_answers, "ReplyTimeout")
                    raise ReceiverError("the CSMS did not answer in time") from None
            session.last_seen = time.monotonic()
            metrics.inc(metrics.soap_requests, (version, "ok"))
            return 200, response_envelope(version, req.action, body_el, relates_to), []
        except SoapError as exc:
            metrics.inc(metrics.soap_requests, (version or "unknown", "fault"))
            metrics.inc(metrics.soap_faults, exc.subcode or exc.code)
            return exc.status, fault_envelope(exc, version, relates_to), []

    async def _check_access(self, conn: SoapHttpConnection, headers: dict[str, str],
                            identity: str) -> tuple[int, bytes, list[tuple[str, str]]] | None:
        """Security profiles over HTTP, as for WebSockets: the client
        certificate (or the trusted proxy's header) must name the identity, and
        with ``--auth basic`` the Basic credentials must match Redis."""
        node = self.node
        view = _RequestView(conn.transport, headers)
        failure = node.check_certificate(cast(Any, view), cast(Any, view), identity)
        if failure:
            node.count_handshake(failure)
            raise IdentityMismatch("the client certificate does not match chargeBoxIdentity")
        if node.config.auth != "basic":
            return None
        creds = basic_credentials(headers.get("authorization"))
        ok = False
        if creds is not None and creds[0] == identity:
            try:
                stored = await node.redis.command(b"GET", node.keys.auth(identity))
            except Exception:
                node.metrics.inc(node.metrics.redis_errors, "auth")
                raise ReceiverError("authentication is unavailable, retry later") from None
            if stored is not None:
                stored_b = stored.encode() if isinstance(stored, str) else stored
                loop = asyncio.get_running_loop()
                try:
                    ok = await loop.run_in_executor(None, node.verified.verify, creds[1],
                                                    stored_b)
                except ValueError:
                    log.error("stored password hash for a charger has an unknown format")
        if ok:
            return None
        node.count_handshake("unauthorized")
        node.metrics.inc(node.metrics.soap_http_errors, "401")
        err = SoapError("authentication failed")
        err.subcode = "SecurityError"
        return 401, fault_envelope(err), [("WWW-Authenticate", 'Basic realm="ocpp", charset="UTF-8"')]

    def gauges(self) -> dict[str, int]:
        by_proto: dict[str, int] = {}
        for session in self.sessions.values():
            by_proto[session.proto] = by_proto.get(session.proto, 0) + 1
        return by_proto


class _RequestView:
    """The two things Node.check_certificate reads, for an HTTP request."""

    def __init__(self, transport: Any, headers: dict[str, str]) -> None:
        self.transport = transport
        self.headers = list(headers.items())




def _interval(payload: bytes) -> int:
    """``interval`` of a BootNotification result (1.6 shape), 0 if absent."""
    try:
        value = msgspec.json.decode(payload).get("interval", 0)
    except (msgspec.DecodeError, AttributeError):
        return 0
    return value if isinstance(value, int) and 0 < value < 10**7 else 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SoapHttpConnection(asyncio.BufferedProtocol):
    """HTTP/1.1 server side of one TCP connection carrying OCPP-S requests.

    Requests are handled one at a time (reading pauses while one is open, so
    pipelined requests wait in the kernel); keep-alive is honoured.
    """

    def __init__(self, manager: SoapManager, transport: Any, addr: str) -> None:
        node = manager.node
        self.manager = manager
        self.transport = transport
        self.addr = addr
        self.buf = bytearray(65536)
        self.view = memoryview(self.buf)
        self.parser = HttpRequestParser(self)
        self.max_header_bytes = node.ws_settings.max_header_bytes
        self.max_headers = node.ws_settings.max_headers
        self.request_timeout = node.config.handshake_timeout
        self.prefix = node.config.path_prefix
        self._reset()
        self.busy = False
        self.pipelined: deque[tuple[dict[str, str], bytes, bool]] = deque()
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        manager.http.add(self)
        self._arm(self.request_timeout)

    def _reset(self) -> None:
        self.url: list[bytes] = []
        self.headers: dict[str, str] = {}
        self.nheaders = 0
        self.head_bytes = 0
        self.body: list[bytes] = []
        self.body_size = 0
        self.refused = 0

    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._timeout)

    def _timeout(self) -> None:
        self.timer = None
        if not self.busy:
            self.abort()

    # ------------------------------------------------------------- asyncio
    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.feed(bytes(self.view[:nbytes]))

    def feed(self, data: bytes) -> None:
        if self.closed or self.refused:
            return
        try:
            self.parser.feed_data(data)
        except HttpParserError as exc:
            if not self.refused and not self.closed:
                self._refuse(431 if isinstance(exc.__context__, BodyTooLarge) else 400)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.manager.http.discard(self)

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()

    # ------------------------------------------------------------- httptools
    def on_message_begin(self) -> None:
        self._arm(self.request_timeout)

    def on_url(self, url: bytes) -> None:
        self.url.append(url)
        self.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.nheaders += 1
        self.head_bytes += len(name) + len(value)
        if self.nheaders > self.max_headers or self.head_bytes > self.max_header_bytes:
            raise BodyTooLarge("headers")   # → 431 below
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        if self.nheaders > self.max_headers or self.head_bytes > self.max_header_bytes:
            self._refuse(431)
            return
        method = self.parser.get_method()
        path = b"".join(self.url).decode("latin-1").split("?", 1)[0]
        if method != b"POST":
            self._refuse(405, [("Allow", "POST")])
            return
        if not path.startswith(self.prefix) and path + "/" != self.prefix:
            self._refuse(404)
            return
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.manager.max_body:
            self._refuse(413)
            return
        if self.headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.refused:
            return
        self.body_size += len(body)
        if self.body_size > self.manager.max_body:
            self._refuse(413)
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.refused:
            return
        request = (self.headers, b"".join(self.body), self.parser.should_keep_alive())
        self._reset()
        if self.busy:
            # Pipelined behind one still being answered (it arrived in the same
            # read; reading is paused): answered in order (RFC 9112 §9.3.2).
            self.pipelined.append(request)
            return
        self.busy = True
        self.transport.pause_reading()
        self.task = asyncio.create_task(self._serve(*request))

    # --------------------------------------------------------------- answers
    async def _serve(self, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        try:
            status, payload, extra = await self.manager.handle(self, headers, body)
        except Exception:
            log.exception("SOAP request failed")
            status, payload, extra = 500, fault_envelope(ReceiverError("internal error")), []
        if self.closed:
            return
        keep_alive = keep_alive and status != 413 and not self.manager.node.draining
        self._write(status, payload, extra, keep_alive)
        if keep_alive and self.pipelined:
            self.task = asyncio.create_task(self._serve(*self.pipelined.popleft()))
            return
        self.busy = False
        if keep_alive:
            self.transport.resume_reading()
            self._arm(KEEPALIVE_IDLE)
        else:
            self.closed = True
            self.transport.close()

    def _write(self, status: int, body: bytes, extra: list[tuple[str, str]],
               keep_alive: bool) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                 f"Content-Length: {len(body)}",
                 "Connection: " + ("keep-alive" if keep_alive else "close")]
        if body:
            lines.append(f"Content-Type: {CONTENT_TYPE}")
        lines.extend(f"{k}: {v}" for k, v in extra)
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _refuse(self, status: int, extra: list[tuple[str, str]] | None = None) -> None:
        """Answer with a bare HTTP error and close (the request is not read on)."""
        self.refused = status
        metrics = self.manager.node.metrics
        metrics.inc(metrics.soap_http_errors, str(status))
        self._write(status, b"", extra or [], False)
        # Lingering close: FIN after the answer, then read and discard what
        # the client still sends (a body we refused) until it closes or the
        # timer drops it, so unread input does not turn into a TCP reset that
        # destroys the answer in flight.
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._arm(self.manager.node.config.close_timeout)
        else:
            self.closed = True
            self.transport.close()
