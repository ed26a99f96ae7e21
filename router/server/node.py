"""One router node: a process holding charger sockets, publishing to Redis.

The node owns everything shared by its connections: the listener, the
publisher (XADD batching), the reader of its out stream, the registry, the
metrics, one sweep timer for every deadline, and the drain on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, generate_latest

from router.auth import PasswordFormatError, VerifiedCache
from router.config import Config
from router.metrics import RouterMetrics
from router.ocppj import Options, dialect
from router.ocppj.errors import ActionNotImplemented, NotSupported, OCPPJError, error_codes
from router.ocppj.profiles import ProfileError, Profiles, load_file
from router.server._charger import dispatch_out_entries
from router.server.admin import AdminServer, ListenError
from router.server.admission import Admission
from router.server.commands import Commands
from router.server.connection import (
    BackendCall,
    ChargerConnection,
    basic_credentials,
    cn_from_header,
    common_name,
)
from router.server.rebalance import Rebalancer
from router.server.soap import SOAP_FIELDS, SoapManager, SoapSession
from router.server.wsconn import ConnectionState, start_timers
from router.server.wsconn import stats as ws_stats
from router.streams._resp import StreamEntries
from router.streams.cluster import (
    ClusterCommands,
    ClusterOutboundReader,
    ClusterPublisher,
    is_cluster,
)
from router.streams.connection import SharedConnection
from router.streams.fleet import FleetState
from router.streams.keys import KeySpace
from router.streams.publisher import Publisher
from router.streams.reader import OutboundReader
from router.streams.registry import Entry, Registry
from router.ws import UpgradeRequest, WSSettings

log = logging.getLogger("router.node")

SWEEP_INTERVAL = 0.25      # seconds between deadline checks (reply/call timeouts)
REGISTRY_CHECK = 2.0       # seconds between checks that this node's liveness key is in Redis
REPLY_TO_MAXLEN = 10_000   # docs/streams.md: reply_to copies are capped like this
_json_object = msgspec.json.Decoder(dict[str, Any])


def now_ms() -> int:
    return int(time.time() * 1000)


class Node:
    """A router process (one worker)."""

    def __init__(self, config: Config, node_id: str) -> None:
        self.config = config
        self.node_id = node_id
        self.node_b = node_id.encode()
        self.keys = KeySpace(config.key_prefix, config.shards)
        self.metrics = RouterMetrics()
        self.metrics.gauges = self._gauges
        options = Options(strict_datetime=config.strict_datetime,
                          null_payload_as_empty=config.null_payload_as_empty,
                          lenient_error_codes=config.lenient_error_codes)
        self.dialects = {p: dialect(p, options) for p in config.subprotocols}
        self.error_codes = {p: frozenset(error_codes(p)) for p in config.subprotocols}
        self.ws_settings = WSSettings(
            max_message_size=config.max_message_size,
            handshake_timeout=config.handshake_timeout,
            close_timeout=config.close_timeout,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            permessage_deflate=config.permessage_deflate,
            server_max_window_bits=config.deflate_window_bits,
            client_max_window_bits=config.deflate_window_bits,
        )
        self.edge_heartbeat = config.heartbeat == "edge"
        self.reply_timeout = config.reply_timeout
        self.by_identity: dict[str, ChargerConnection] = {}
        # Validation profiles (docs/ocppj.md); the file was checked by config.load.
        self.profiles = Profiles(load_file(config.validation_profiles)
                                 if config.validation_profiles else ())
        self.connections: set[ChargerConnection] = set()
        self.handshakes: set[ChargerConnection] = set()
        self.timed: set[ChargerConnection] = set()
        self.draining = False
        self.reading_paused = False
        self.ssl_context = self._ssl_context() if config.tls else None
        self.verified = VerifiedCache()
        self._hb_second = -1
        self._hb_payload = b""
        self._tasks: list[asyncio.Task[Any]] = []
        self._auth_tasks: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None
        self.admin: AdminServer | None = None
        # Registry writes and password look-ups: light, but bursty in a
        # reconnect storm. One pipelined connection takes any burst (commands
        # queue FIFO on the socket) without a pool to contend for.
        # Redis Cluster (redis+cluster://): the same three roles, routed by
        # slot over one topology (router/streams/cluster.py).
        cluster = is_cluster(config.redis_url)
        self.redis = (ClusterCommands if cluster else SharedConnection)(
            config.redis_url, name=f"ocpp-router:{node_id}:registry")
        self.publisher = (ClusterPublisher if cluster else Publisher)(
            config.redis_url, keys=self.keys, maxlen=config.stream_maxlen,
            timeout=config.publish_timeout, max_pending=config.max_pending_publishes,
            on_pause=self._pause_reading, on_resume=self._resume_reading,
            on_batch=self._observe_batch, client_name=f"ocpp-router:{node_id}",
            wait_replicas=1 if config.durability == "replicated" else 0,
            on_reconnect=self._redis_reconnected)
        # Set when the publisher reconnects (Redis restarted, a new master
        # after a failover): re-register this node's chargers at once, the new
        # master may not have their registry entries.
        self._registry_now = asyncio.Event()
        self.reader = (ClusterOutboundReader if cluster else OutboundReader)(
            config.redis_url, self.keys.out(node_id), self.on_out_entries)
        self.registry = Registry(self.redis, self.keys, ttl=config.registry_ttl)
        # Fleet behaviour (issue 13): admission control, rebalancing.
        self.fleet = FleetState(self.redis, config.key_prefix)
        self.admission = Admission(self, self.fleet)
        self.rebalancer = Rebalancer(self, self.fleet)
        self.commands = Commands(self)
        self.stopped = asyncio.Event()
        # OCPP-S (docs/soap.md): SOAP chargers on the same port and streams;
        # 1.6S payloads are checked with the 1.6 JSON schemas.
        self.soap_dialect16 = self.dialects.get("ocpp1.6") or dialect("ocpp1.6", options)
        self.soap: SoapManager | None = SoapManager(self) if config.soap else None

    # ------------------------------------------------------------- lifecycle
    async def start(self, sock: socket.socket | None = None, admin: bool = True) -> None:
        """Connect to Redis, listen for chargers and (optionally) the admin port."""
        loop = asyncio.get_running_loop()
        start_timers(loop)
        await self.publisher.start(wait=False)   # not ready until Redis answers
        self._tasks.append(asyncio.create_task(self._start_reader(), name="out-reader"))
        factory: Callable[[], ChargerConnection] = lambda: ChargerConnection(self)  # noqa: E731
        if sock is not None:
            self.server = await loop.create_server(factory, sock=sock, ssl=self.ssl_context,
                                                   backlog=4096)
        else:
            try:
                self.server = await loop.create_server(
                    factory, self.config.host, self.config.port, ssl=self.ssl_context,
                    reuse_address=True, reuse_port=self.config.workers > 1, backlog=4096)
            except OSError as exc:
                raise ListenError("charger port", self.config.host, self.config.port,
                                  exc) from exc
        if admin:
            self.admin = AdminServer(self.admin_routes())
            await self.admin.start(self.config.admin_host, self.config.admin_port)
        self._tasks.append(asyncio.create_task(self._sweep(), name="sweep"))
        if self.soap is not None:
            self.soap.start()
        self._tasks.append(asyncio.create_task(self._keep_registry(), name="registry"))
        self._tasks.append(asyncio.create_task(self.rebalancer.run(), name="rebalance"))
        self._tasks.append(asyncio.create_task(self.commands.sweep_forever(), name="commands"))
        log.info("node %s listening on %s:%s", self.node_id, self.config.host, self.config.port)

    async def _start_reader(self) -> None:
        """Start following the out stream; retried until Redis answers (the
        node starts, unready, while Redis is down)."""
        delay = 0.05
        while True:
            try:
                await self.reader.start()
                return
            except Exception:
                self.metrics.inc(self.metrics.redis_errors, "out_reader")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def admin_routes(self) -> dict[str, Any]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.metrics.collector())

        async def healthz() -> tuple[int, str, bytes]:
            return 200, "text/plain", b"ok\n"

        async def readyz() -> tuple[int, str, bytes]:
            ready, why = self.ready()
            return (200 if ready else 503), "text/plain", (why + "\n").encode()

        async def metrics() -> tuple[int, str, bytes]:
            return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(registry)

        async def profiles() -> tuple[int, str, bytes]:
            return 200, "application/json", msgspec.json.encode(self.profiles.describe()) + b"\n"

        async def reload_profiles() -> tuple[int, str, bytes]:
            error = self.reload_profiles()
            if error:
                return 400, "text/plain", f"{error}\n".encode()
            return 200, "text/plain", f"{len(self.profiles.rules)} rules loaded\n".encode()

        return {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics,
                "/profiles": profiles, "POST /profiles/reload": reload_profiles}

    def reload_profiles(self) -> str | None:
        """Re-read --validation-profiles and rematch every open connection;
        on a bad file keep the current rules. Returns the error, if any."""
        path = self.config.validation_profiles
        try:
            rules = load_file(path) if path else ()
        except ProfileError as exc:
            log.error("validation profiles not reloaded, the previous rules stay: %s", exc)
            self.metrics.inc(self.metrics.profile_reloads, "failed")
            return str(exc)
        self.profiles = Profiles(rules)
        for conn in self.connections:
            conn.apply_profiles()
        self.metrics.inc(self.metrics.profile_reloads, "ok")
        log.info("validation profiles reloaded: %d rules", len(rules))
        return None

    def count_relaxed(self, applied: list[tuple[str, str]], action: str) -> None:
        for rule, check in applied:
            self.metrics.inc(self.metrics.relaxed, (rule, check, action))

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self.publisher.connected or not self.reader.connected:
            held = self.publisher.pending
            return False, f"redis unreachable (holding {held} publishes)" if held else \
                "redis unreachable"
        return True, "ready"

    def install_signal_handlers(self, sigint: bool = True) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.begin_drain)
        loop.add_signal_handler(signal.SIGHUP, self.reload_profiles)
        if sigint:
            loop.add_signal_handler(signal.SIGINT, self.begin_drain)

    def begin_drain(self) -> None:
        if not self.draining:
            self._tasks.append(asyncio.create_task(self.drain(), name="drain"))

    async def drain(self) -> None:
        """Graceful shutdown: stop accepting, close connections with 1001 spread
        evenly over ``drain_seconds`` (no reconnect stampede), flush publishes."""
        self.draining = True
        log.info("draining %d connections over %.0f s", len(self.connections),
                 self.config.drain_seconds)
        if self.server is not None:
            self.server.close()
        for conn in list(self.handshakes):
            conn.abort()
        conns = list(self.connections)
        if conns:
            step = self.config.drain_seconds / len(conns)
            start = time.monotonic()
            for i, conn in enumerate(conns):
                delay = start + i * step - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                conn.close(1001, "server going away")
        deadline = time.monotonic() + self.config.close_timeout + 1
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        await self.stop()

    async def stop(self) -> None:
        """Release everything; pending publishes are flushed first."""
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if self._auth_tasks:
            # Registry clean-ups of the connections just closed: let them land
            # so backends do not see drained chargers as connected until TTL.
            await asyncio.wait(set(self._auth_tasks), timeout=2.0)
        try:
            await self.fleet.leave(self.node_id)   # out of the fleet mean at once
        except Exception:
            log.debug("leaving the fleet hash failed", exc_info=True)
        if self.soap is not None:   # their disconnected entries go out with the flush
            await self.soap.stop()
        await self.reader.stop()
        await self.publisher.close(flush=True, timeout=5.0)
        if self.admin is not None:
            await self.admin.close()
        try:
            await self.redis.close()
        except Exception:  # the process is ending; nothing to tell anyone
            log.debug("closing redis client failed", exc_info=True)
        self.stopped.set()

    # --------------------------------------------------------- TLS and auth
    def _ssl_context(self) -> ssl.SSLContext:
        c = self.config
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2   # OCPP security profiles 2 and 3
        assert c.tls_cert is not None
        ctx.load_cert_chain(c.tls_cert, c.tls_key)
        if c.tls_ciphers:
            ctx.set_ciphers(c.tls_ciphers)
        if c.tls_client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(c.tls_client_ca)
        return ctx

    def check_certificate(self, conn: ChargerConnection, request: UpgradeRequest,
                          identity: str) -> str | None:
        """Security profile 3: the client certificate's CN must be the identity.

        Returns None when fine, else the handshake outcome to count.
        """
        c = self.config
        if c.tls_client_ca:
            cert = conn.transport.get_extra_info("peercert") if conn.transport else None
            if not cert or common_name(cert.get("subject")) != identity:
                return "certificate_mismatch"
        if c.trusted_proxy_header:
            peer = conn.transport.get_extra_info("peername") if conn.transport else None
            try:
                source = ipaddress.ip_address(peer[0]) if peer else None
            except ValueError:
                source = None
            if source is None or not any(source in net for net in c.trusted_proxy_networks):
                return "untrusted_proxy"
            header = c.trusted_proxy_header.lower()
            value = next((v for k, v in request.headers if k == header), None)
            if value is None or cn_from_header(value) != identity:
                return "certificate_mismatch"
        return None

    def authenticate(self, conn: ChargerConnection, request: UpgradeRequest,
                     identity: str) -> None:
        """HTTP Basic auth (security profiles 1 and 2), checked against Redis."""
        creds = basic_credentials(request.authorization)
        if creds is None or creds[0] != identity:
            conn.reject_auth()
            return
        task = asyncio.create_task(self._authenticate(conn, request, identity, creds[1]))
        self._auth_tasks.add(task)
        task.add_done_callback(self._auth_tasks.discard)

    async def _authenticate(self, conn: ChargerConnection, request: UpgradeRequest,
                            identity: str, password: bytes) -> None:
        try:
            stored = await self.redis.command(b"GET", self.keys.auth(identity))
        except Exception:
            self.metrics.inc(self.metrics.redis_errors, "auth")
            self.admission.refuse(conn, "redis_unavailable")
            return
        ok = False
        if stored is not None:
            loop = asyncio.get_running_loop()
            try:
                stored_b = stored.encode() if isinstance(stored, str) else stored
                ok = await loop.run_in_executor(None, self.verified.verify, password, stored_b)
            except PasswordFormatError:
                log.error("stored password hash for a charger has an unknown format")
        if conn.state != ConnectionState.CONNECTING:   # gone or timed out meanwhile
            return
        if ok:
            conn.finish_handshake(request)
        else:
            conn.reject_auth()

    # ----------------------------------------------------------- connections
    def handshake_started(self, conn: ChargerConnection) -> None:
        self.handshakes.add(conn)

    def overloaded(self) -> bool:
        """Admission control: too many connections or handshakes in progress
        (the latter counts slow clients that have not finished their request)."""
        return (len(self.connections) >= self.config.max_connections
                or len(self.handshakes) > self.config.max_handshakes)

    def handshake_finished(self, conn: ChargerConnection) -> None:
        self.handshakes.discard(conn)

    def count_handshake(self, outcome: str) -> None:
        self.metrics.inc(self.metrics.handshakes, outcome)

    def connection_opened(self, conn: ChargerConnection) -> None:
        self.handshakes.discard(conn)
        self.count_handshake("accepted")
        identity = conn.identity
        assert identity is not None
        old = self.by_identity.get(identity)
        if old is not None:
            # Takeover on this node: the new connection wins (OCPP: a charger
            # reconnecting after a half-open TCP connection must get through).
            self.metrics.inc(self.metrics.handshakes, "takeover")
            old.close(1000, "replaced by a new connection")
        self.by_identity[identity] = conn
        self.connections.add(conn)
        if self.soap is not None and identity in self.soap.sessions:
            # The charger moved from OCPP-S to OCPP-J (docs/soap.md).
            self.soap.sessions[identity].close(1000, "replaced by a WebSocket connection")
        if self.reading_paused:
            conn.pause_reading()
        self.publish(conn, b"connected", None, None, None, extra=(b"addr", conn.addr.encode()))
        task = asyncio.create_task(self._register(conn))
        self._auth_tasks.add(task)
        task.add_done_callback(self._auth_tasks.discard)
        self.commands.poke(conn)   # commands queued for it (after the registry write: FIFO)

    async def _register(self, conn: ChargerConnection) -> None:
        identity = conn.identity
        assert identity is not None
        try:
            previous = await self.registry.register(
                identity, node=self.node_id, conn=conn.conn_id, proto=conn.proto,
                since_ms=conn.since_ms, addr=conn.addr)
        except Exception:
            self.metrics.inc(self.metrics.redis_errors, "registry")
            log.warning("registry write failed for a connection", exc_info=True)
            return
        if not conn.opened:
            # Closed while we registered: undo, unless someone newer took over.
            await self._unregister(identity, conn.conn_id)
            return
        if previous:
            prev_node, prev_conn = previous
            if prev_node != self.node_id and prev_conn != conn.conn_id:
                # The old socket lives on another node: ask it to close it.
                self.publisher.xadd(self.keys.out(prev_node),
                                    [b"kind", b"close", b"cs", identity.encode(),
                                     b"conn", prev_conn.encode()], maxlen=100_000)

    async def _unregister(self, identity: str, conn_id: str) -> None:
        try:
            await self.registry.unregister(identity, conn_id)
        except Exception:
            self.metrics.inc(self.metrics.redis_errors, "registry")

    def connection_closed(self, conn: ChargerConnection, code: int, reason: str) -> None:
        self.connections.discard(conn)
        self.timed.discard(conn)
        identity = conn.identity
        assert identity is not None
        if self.by_identity.get(identity) is conn:
            del self.by_identity[identity]
        conn.fail_all_calls()
        self.commands.forget(conn)
        self.publish(conn, b"disconnected", None, None, None, str(code), reason[:123])
        task = asyncio.create_task(self._unregister(identity, conn.conn_id))
        self._auth_tasks.add(task)
        task.add_done_callback(self._auth_tasks.discard)

    def _pause_reading(self) -> None:
        """Publish buffer full: stop reading from every charger (backpressure)."""
        self.reading_paused = True
        for conn in self.connections:
            conn.pause_reading()

    def _resume_reading(self) -> None:
        self.reading_paused = False
        for conn in self.connections:
            conn.resume_reading()

    # ------------------------------------------------------------ publishing
    def publish(self, conn: ChargerConnection | SoapSession, kind: bytes, msg_id: str | None,
                action: str | None, payload: bytes | None, code: str | None = None,
                description: str | None = None, details: bytes | None = None,
                extra: tuple[bytes, ...] = (),
                on_error: Callable[[BaseException], None] | None = None,
                reply_to: bytes | None = None) -> None:
        """Add one inbound entry for ``conn`` (contract v1, docs/streams.md)."""
        if type(conn) is SoapSession:
            extra += SOAP_FIELDS
        if code is not None:
            extra += (b"code", code.encode())
        if description is not None:
            extra += (b"description", description.encode())
        if details is not None:
            extra += (b"details", details)
        identity = conn.identity or ""
        ts = now_ms()
        self.publisher.publish_inbound(
            identity, kind, conn.proto, self.node_b, conn.conn_id, ts, msg_id, action,
            payload, extra, shard=conn.shard, on_error=on_error or self._count_publish_error)
        if reply_to is not None:
            self._copy_to(reply_to, kind, identity, conn.proto, conn.conn_id, ts, msg_id,
                          action, payload, extra)

    def _copy_to(self, reply_to: bytes, kind: bytes, identity: str, proto: str, conn_id: str,
                 ts: int, msg_id: str | None, action: str | None, payload: bytes | None,
                 extra: tuple[bytes, ...]) -> None:
        """The ``reply_to`` copy of an outcome entry (how ``client.call`` waits)."""
        fields: list[bytes | str] = [b"v", b"1", b"kind", kind, b"cs", identity,
                                     b"proto", proto, b"node", self.node_b, b"conn", conn_id,
                                     b"ts", str(ts)]
        if msg_id is not None:
            fields += (b"id", msg_id)
        if action is not None:
            fields += (b"action", action)
        if payload is not None:
            fields += (b"payload", payload)
        fields.extend(extra)
        self.publisher.xadd(reply_to, fields, maxlen=REPLY_TO_MAXLEN,
                            on_error=self._count_publish_error)

    def _observe_batch(self, entries: int, seconds: float) -> None:
        self.metrics.publish_batch.observe(entries)
        self.metrics.publish_latency.observe(seconds)

    def _count_publish_error(self, exc: BaseException) -> None:
        self.metrics.inc(self.metrics.redis_errors, "publish")

    def fail(self, identity: str, msg_id: str | None, action: str | None, code: str,
             description: str, *, conn: ChargerConnection | SoapSession | None = None,
             ref: bytes | None = None, reply_to: bytes | None = None) -> None:
        """Publish a ``failed`` entry: a backend message that could not be delivered."""
        self.metrics.inc(self.metrics.backend_failed, code)
        extra: tuple[bytes, ...] = (b"code", code.encode(),
                                    b"description", description[:255].encode())
        if ref is not None:
            extra += (b"ref", ref)
        if type(conn) is SoapSession:
            extra += SOAP_FIELDS
        proto = conn.proto if conn is not None else ""
        conn_id = conn.conn_id if conn is not None else ""
        ts = now_ms()
        self.publisher.publish_inbound(
            identity, b"failed", proto, self.node_b, conn_id, ts, msg_id, action, None, extra,
            shard=conn.shard if conn is not None else None,
            on_error=self._count_publish_error)
        if reply_to is not None:
            self._copy_to(reply_to, b"failed", identity, proto, conn_id, ts, msg_id, action,
                          None, extra)

    # ------------------------------------------------------------ out stream
    def on_out_entries(self, entries: StreamEntries) -> None:
        """Entries a backend added to ``ocpp:out:<node>``, in order. Backend
        replies to charger CALLs take the compiled path; the rest come to
        :meth:`_out_entry`."""
        dispatch_out_entries(entries, self.by_identity, self._out_entry, self._out_entry_failed)

    def _out_entry_failed(self, ref: bytes, fields: dict[bytes, bytes],
                          exc: BaseException) -> None:
        # One bad entry must not stop the others.
        log.error("out-stream entry %r could not be handled", ref, exc_info=exc)
        self.fail(_text(fields.get(b"cs")), _opt_text(fields.get(b"id")), None,
                  "Malformed", "entry could not be processed", ref=ref)

    def _out_entry(self, ref: bytes, fields: dict[bytes, bytes],
                   qid: bytes | None = None) -> None:
        """One out-stream entry (``qid``: a command from the charger's queue)."""
        kind = fields.get(b"kind")
        identity = _text(fields.get(b"cs"))
        msg_id = _opt_text(fields.get(b"id"))
        reply_to = fields.get(b"reply_to") or None
        if kind == b"pull" and identity:   # a command was queued for this charger
            self.commands.on_pull_entry(identity)
            return
        if not identity or kind not in (b"result", b"error", b"call", b"send", b"close"):
            self.fail(identity, msg_id, None, "Malformed", "missing cs or unknown kind",
                      ref=ref, reply_to=reply_to)
            return
        conn: ChargerConnection | SoapSession | None = self.by_identity.get(identity)
        if conn is None and self.soap is not None:
            conn = self.soap.sessions.get(identity)
        want_conn = fields.get(b"conn")
        if kind == b"close":
            if conn is not None and want_conn is not None and conn.conn_b == want_conn:
                conn.close(1000, "closed by the CSMS")
            return
        action = _opt_text(fields.get(b"action"))
        if conn is None or (want_conn and conn.conn_b != want_conn) or (
                kind in (b"result", b"error") and not want_conn):
            self.fail(identity, msg_id, action, "NotConnected",
                      "charger is not connected to this node with that connection",
                      ref=ref, reply_to=reply_to)
            return
        if msg_id is None or not 0 < len(msg_id) <= 36:
            self.fail(identity, msg_id, action, "Malformed", "id must be 1-36 characters",
                      conn=conn, ref=ref, reply_to=reply_to)
            return
        if kind in (b"result", b"error"):
            conn.backend_reply(kind, msg_id, fields, ref)
            return
        payload = fields.get(b"payload")
        if action is None or payload is None:
            self.fail(identity, msg_id, action, "Malformed", "call needs action and payload",
                      conn=conn, ref=ref, reply_to=reply_to)
            return
        dia = conn.dialect
        if kind == b"send" and conn.proto != "ocpp2.1":
            self.fail(identity, msg_id, action, "UnknownAction",
                      f"SEND does not exist in {conn.proto}", conn=conn, ref=ref,
                      reply_to=reply_to)
            return
        if kind == b"send":
            # OCPP 2.1 SEND: the action must be one a CSMS may SEND.
            try:
                dia.validate_send(action, payload, from_charger=False)
            except (ActionNotImplemented, NotSupported):
                self.fail(identity, msg_id, action, "UnknownAction",
                          f"{action[:60]} is not a SEND a CSMS may send in {conn.proto}",
                          conn=conn, ref=ref, reply_to=reply_to)
                return
            except OCPPJError as exc:
                self.fail(identity, msg_id, action, "InvalidPayload", exc.description,
                          conn=conn, ref=ref, reply_to=reply_to)
                return
            conn.backend_send(msg_id, action, payload)
            return
        if action not in dia.csms_actions:
            self.fail(identity, msg_id, action, "UnknownAction",
                      f"{action[:60]} is not a CSMS-initiated action of {conn.proto}",
                      conn=conn, ref=ref, reply_to=reply_to)
            return
        try:
            dia.validate_request(action, payload, from_charger=False)
        except OCPPJError as exc:
            self.fail(identity, msg_id, action, "InvalidPayload", exc.description,
                      conn=conn, ref=ref, reply_to=reply_to)
            return
        timeout = self.config.call_timeout
        raw_timeout = fields.get(b"timeout")
        if raw_timeout:
            try:
                timeout = float(raw_timeout)
                if not 0 < timeout <= 3600:
                    raise ValueError
            except ValueError:
                self.fail(identity, msg_id, action, "Malformed",
                          "timeout must be seconds between 0 and 3600",
                          conn=conn, ref=ref, reply_to=reply_to)
                return
        conn.backend_call(BackendCall(msg_id, action, payload, timeout, reply_to, ref, qid))

    # ------------------------------------------------------------- helpers
    def count_message(self, direction: str, kind: str, action: str) -> None:
        key = (direction, kind, action)
        table = self.metrics.messages
        table[key] = table.get(key, 0) + 1

    def count_validation_error(self, exc: OCPPJError, proto: str) -> None:
        self.metrics.inc(self.metrics.validation_errors, exc.code_for(proto))

    def heartbeat_payload(self) -> bytes:
        """``{"currentTime": …}``, rebuilt at most once a second."""
        now = time.time()
        second = int(now)
        if second != self._hb_second:
            self._hb_second = second
            stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._hb_payload = b'{"currentTime":"' + stamp.encode() + b'"}'
        return self._hb_payload

    @staticmethod
    def is_json_object(data: bytes) -> bool:
        try:
            _json_object.decode(data)
        except msgspec.DecodeError:
            return False
        return True

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for conn in list(self.timed):
                if not conn.check_deadlines(now):
                    self.timed.discard(conn)

    async def _keep_registry(self) -> None:
        """Keep this node's registry entries and liveness key in Redis.

        A full round (:meth:`_registry_round`) every ``registry_ttl / 3``.
        Between rounds, one ``EXISTS`` on the liveness key every
        :data:`REGISTRY_CHECK` s: when it is gone, Redis lost its data (a
        restart without persistence, a failover to an empty master, a
        ``FLUSHALL``), and the round runs at once instead of up to
        ``registry_ttl / 3`` later, when backend CALLs to these chargers would
        have found no route all along. The publisher's reconnect starts a
        round too.
        """
        period = max(1.0, self.config.registry_ttl / 3)
        due = 0.0                         # monotonic time of the next full round
        trigger: str | None = "start"
        while True:
            try:
                if trigger is None and time.monotonic() < due and \
                        not await self.registry.node_is_alive(self.node_id):
                    trigger = "node_key_lost"
                if trigger is not None or time.monotonic() >= due:
                    await self._registry_round(trigger or "refresh", int(period * 3))
                    due = time.monotonic() + period
                trigger = None
                wait = min(REGISTRY_CHECK, period)
            except Exception:
                self.metrics.inc(self.metrics.redis_errors, "registry")
                wait = min(period, 1.0)   # Redis away (failover): try again soon
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._registry_now.wait(), wait)
            if self._registry_now.is_set():
                self._registry_now.clear()
                trigger = trigger or "reconnect"

    async def _registry_round(self, trigger: str, node_ttl: int) -> None:
        """Extend every entry's TTL, write back the missing ones (pipelined,
        in bounded chunks: see :meth:`Registry.restore_many`), then the
        liveness key — last, so that it is only there once the entries are."""
        identities = list(self.by_identity)
        if self.soap is not None:
            identities += list(self.soap.sessions)
        missing = await self.registry.refresh(identities)
        entries = []
        for identity in missing:
            # Lost in a Redis restart or an outage longer than the TTL:
            # backends must find this charger again.
            conn = self.by_identity.get(identity)
            if conn is not None and conn.opened:
                entries.append(Entry(identity, self.node_id, conn.conn_id, conn.proto,
                                     conn.since_ms, conn.addr))
        if self.soap is not None:
            entries += self.soap.registry_entries(missing)
        restored = await self.registry.restore_many(entries)
        await self.registry.node_alive(self.node_id, node_ttl)
        if restored:
            self.metrics.inc(self.metrics.registry_restored, trigger, restored)
            log.warning("registry: %d entries of this node were missing in Redis (%s), "
                        "written back", restored, trigger.replace("_", " "))

    def _redis_reconnected(self) -> None:
        self._registry_now.set()

    def _gauges(self) -> dict[str, Any]:
        by_proto: dict[str, int] = dict.fromkeys(self.config.subprotocols, 0)
        pending_calls = queued = 0
        for conn in self.connections:
            by_proto[conn.proto] = by_proto.get(conn.proto, 0) + 1
        for conn in self.timed:
            pending_calls += conn.call_id is not None
            queued += (conn.inflight is not None) + len(conn.queue or ())
        return {
            "connections": by_proto,
            "handshakes_in_progress": len(self.handshakes),
            "backend_calls_queued": queued,
            "charger_calls_pending": pending_calls,
            "publish_pending": self.publisher.pending,
            "draining": int(self.draining),
            "redis_connected": int(self.publisher.connected),
            "reading_paused": int(self.reading_paused),
            "fleet_nodes": self.rebalancer.nodes,
            "fleet_mean_connections": self.rebalancer.mean,
            "rebalance_surplus": self.rebalancer.surplus,
            "out_reads": self.reader.stats.reads,
            "out_entries": self.reader.stats.entries,
            "publish_held": self.publisher.stats.held,
            "publish_resent": self.publisher.stats.resent,
            "publish_expired": self.publisher.stats.expired,
            "publish_not_replicated": self.publisher.stats.replication_timeouts,
            "ws": ws_stats(),
            "soap_sessions": self.soap.gauges() if self.soap is not None else {},
        }


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""


def _opt_text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None
