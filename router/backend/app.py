"""The consumer side of the Redis Streams contract (docs/streams.md).

A :class:`BackendApp` joins a consumer group on every inbound shard stream,
dispatches entries to handlers by kind and action, writes the answers to
charger CALLs into ``<prefix>:out:<node>`` and acknowledges an entry only after
its handler finished and its answer was written (at-least-once delivery).

Data path (router.backend.batch): one reader per shard reads a batch with
XREADGROUP, runs the handlers inline in stream order, and writes the answers
(XADD), the acknowledgements of earlier answers (XACK) and the next read in
one pipelined write: one round trip per batch. A handler that really awaits
gets a task; the later entries of its charger queue behind it, so the
messages of one charger are handled in stream order while different chargers
are handled concurrently. Many processes (consumers) in one group share the
shards' entries (XREADGROUP).

Crash safety: an entry whose handler raised (anything but an
:class:`~router.backend.errors.OCPPError`) stays pending; so do the entries of
a consumer that died. Every consumer periodically claims entries idle for
longer than ``claim_idle`` (XAUTOCLAIM) and handles them again; an entry
delivered more than ``max_deliveries`` times is moved to the dead-letter
stream ``<prefix>:dead:<group>`` with the last error instead.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import RedisError, ResponseError

from router.backend.batch import ShardReader, call_inline
from router.backend.client import Client
from router.backend.errors import ActionNotImplemented, OCPPError
from router.backend.message import KINDS, MalformedEntry, Message, StreamReply, encode_payload
from router.backend.outbox import Outbox
from router.streams.connection import RedisConnection, open_connection
from router.streams.keys import KeySpace

log = logging.getLogger(__name__)

#: A handler: an ``async def`` function, or a plain ``def`` one (called
#: inline; for handlers that do not await). Both take the :class:`Message`.
Handler = Callable[[Message], Awaitable[Any]] | Callable[[Message], Any]
H = TypeVar("H", bound=Handler)

DEAD_MAXLEN = 100_000
# Connections used besides the handlers' and the readers' (one per shard):
# claimer, outbox, client replies, spares.
RESERVED_CONNECTIONS = 5


def default_consumer_name() -> str:
    """A consumer name unique to this process: ``<host>-<pid>-<random>``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def direct_url(redis: aioredis.Redis) -> str | None:
    """The URL of the one server a plain ``redis.asyncio.Redis`` client talks
    to, for the SDK's own data-path connections; None for clients whose
    connections need more than a URL says (TLS contexts, Sentinel, custom
    connection classes): those read through redis-py instead."""
    pool = getattr(redis, "connection_pool", None)
    if pool is None or type(pool) not in (aioredis.ConnectionPool,
                                          aioredis.BlockingConnectionPool):
        return None
    kw = pool.connection_kwargs
    auth = ""
    if kw.get("password") is not None or kw.get("username") is not None:
        auth = (quote(kw.get("username") or "", safe="") + ":"
                + quote(kw.get("password") or "", safe="") + "@")
    db = int(kw.get("db") or 0)
    if pool.connection_class is Connection:
        host = kw.get("host") or "localhost"
        if ":" in host:
            host = f"[{host}]"
        return f"redis://{auth}{host}:{int(kw.get('port') or 6379)}/{db}"
    if pool.connection_class is UnixDomainSocketConnection and not auth:
        return f"unix://{kw['path']}?db={db}"
    return None


class BackendApp:
    """A backend service: a consumer in a consumer group on the inbound streams.

    Example::

        app = BackendApp(redis.asyncio.Redis.from_url(url), group="csms")

        @app.on_call("Heartbeat")
        async def heartbeat(msg: Message) -> dict[str, Any]:
            return {"currentTime": utc_now()}

        await app.run()          # until app.stop()

    Args:
        redis: the Redis client (``decode_responses`` must be off: payloads are bytes).
        group: the consumer group; every service that must see all charger
            traffic (CSMS, analytics …) uses its own group.
        prefix: the key prefix (``--key-prefix``).
        shards: the number of inbound shard streams (``--shards``).
        consumer: this consumer's name in the group (default: host, pid, random).
        claim_idle: seconds an entry of a dead consumer (or one whose handler
            raised) stays pending before another sweep claims it. Entries a
            live consumer is still working on are kept alive (:meth:`keep_alive`).
        claim_interval: seconds between claim sweeps (default ``claim_idle / 2``).
        max_deliveries: an entry delivered more often than this goes to the
            dead-letter stream instead of to its handler.
        batch: entries read per XREADGROUP.
        block: seconds one XREADGROUP blocks; also the longest delay of
            :meth:`stop`. Keep it below the Redis client's socket timeout
            (redis-py ≥ 8 defaults to 5 s).
        max_in_flight: entries read but not finished; reading pauses above it
            (each shard's reader may overshoot by one ``batch``).
        concurrency: handlers running at once (each may hold a Redis
            connection). The Redis client's pool must allow more connections
            than this: the reader, the claimer, the outbox and ``client``
            use a few more.
        forget_consumers_after: seconds after which an idle consumer with no
            pending entries is deleted from the group (dead processes' names).
        answer_calls: this group answers charger CALLs: a ``call`` handler's
            return value is the CALLRESULT payload, and CALLs without a handler
            get a ``NotImplemented`` CALLERROR. Exactly one group of a
            deployment should; in the others (analytics, audit …) ``call``
            handlers only observe and their return value is ignored.
        start_id: where a newly created group starts: ``$`` (new entries only)
            or ``0`` (everything still in the streams).
        shutdown_timeout: seconds :meth:`run` waits for in-flight handlers on stop.
    """

    def __init__(self, redis: aioredis.Redis, *, group: str, prefix: str = "ocpp",
                 shards: int = 1, consumer: str | None = None, claim_idle: float = 30.0,
                 claim_interval: float | None = None, max_deliveries: int = 5,
                 batch: int = 100, block: float = 2.0, max_in_flight: int = 1000,
                 concurrency: int = 50, forget_consumers_after: float = 3600.0,
                 answer_calls: bool = True, start_id: str = "$",
                 shutdown_timeout: float = 30.0) -> None:
        if shards < 1:
            raise ValueError("shards must be at least 1")
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        pool_size = getattr(redis.connection_pool, "max_connections", None)
        needed = concurrency + shards + RESERVED_CONNECTIONS
        if isinstance(pool_size, int) and pool_size < needed:
            raise ValueError(
                f"the Redis connection pool allows {pool_size} connections; concurrency="
                f"{concurrency} with {shards} shards needs at least {needed} "
                f"(pass max_connections= to the client or lower concurrency)")
        self.redis = redis
        self.group = group
        self.prefix = prefix
        self.keys = KeySpace(prefix=prefix, shards=shards)
        self.consumer = consumer or default_consumer_name()
        self.claim_idle = claim_idle
        self.claim_interval = claim_interval if claim_interval is not None else claim_idle / 2
        self.max_deliveries = max_deliveries
        self.batch = batch
        self.block = block
        self.max_in_flight = max_in_flight
        self.answer_calls = answer_calls
        self.start_id = start_id
        self.shutdown_timeout = shutdown_timeout
        self.streams = [_s(k) for k in self.keys.all_inbound()]
        self.dead_stream = f"{prefix}:dead:{group}"
        # Last handler error per pending entry, so whichever consumer finally
        # dead-letters the entry can record why (the failing one may be dead).
        self.errors_key = f"{prefix}:errors:{group}"
        self.client = Client(redis, prefix=prefix, shards=shards)
        self.stats: collections.Counter[str] = collections.Counter()
        self.concurrency = concurrency
        self.forget_consumers_after = forget_consumers_after
        # Bounds the handlers running at once, hence the Redis connections they
        # use; redis-py's pool refuses (MaxConnectionsError) beyond its size.
        self._slots = asyncio.Semaphore(concurrency)
        self._url = direct_url(redis)
        self._outbox = Outbox(redis, group, connect=(
            None if self._url is None else lambda: self._open_connection(f"{self.consumer}:out")))
        self._handlers: dict[tuple[str, str | None], Handler] = {}
        # Per charger (identity as bytes) whose handler is running in a task:
        # the entries waiting behind it, and the task.
        self._queues: dict[bytes, collections.deque[Message]] = {}
        self._workers: dict[bytes, asyncio.Task[None]] = {}
        self._readers: list[ShardReader] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[tuple[str, str]] = set()
        # Set while fewer than max_in_flight entries are held; the reader waits on it.
        self._room = asyncio.Event()
        self._room.set()
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()

    # ------------------------------------------------------------------ handlers

    def on(self, kind: str, action: str | None = None) -> Callable[[H], H]:
        """Register a handler for entries of ``kind`` (and ``action``, if given).

        A handler for a specific action wins over one for the whole kind. For
        ``call`` the handler returns the response payload (a dict, a
        ``msgspec.Struct`` or JSON bytes) or raises an
        :class:`~router.backend.errors.OCPPError`; other handlers return nothing.
        A handler is an ``async def`` function or a plain ``def`` one; both
        run inline on the reader (docs/backend.md, "Performance model"): a
        plain one must not block, an ``async def`` one that awaits I/O moves
        to a task and holds back only its own charger's later messages.

        Args:
            kind: one of ``call``, ``result``, ``error``, ``send``, ``connected``,
                ``disconnected``, ``failed``.
            action: the OCPP action, or ``None`` for every action of the kind.

        Raises:
            ValueError: unknown kind, or a handler for this kind and action exists.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")

        def register(handler: H) -> H:
            key = (kind, action)
            if key in self._handlers:
                raise ValueError(f"a handler for {kind} {action or '*'} is already registered")
            self._handlers[key] = handler
            return handler

        return register

    def on_call(self, action: str) -> Callable[[H], H]:
        """Register the handler answering charger CALLs of ``action``."""
        return self.on("call", action)

    def on_send(self, action: str | None = None) -> Callable[[H], H]:
        """Register a handler for OCPP 2.1 SEND messages (nothing answers them)."""
        return self.on("send", action)

    def on_result(self, action: str | None = None) -> Callable[[H], H]:
        """Register a handler for chargers' CALLRESULTs to backend CALLs."""
        return self.on("result", action)

    def on_error(self, action: str | None = None) -> Callable[[H], H]:
        """Register a handler for chargers' CALLERRORs to backend CALLs."""
        return self.on("error", action)

    def on_failed(self, action: str | None = None) -> Callable[[H], H]:
        """Register a handler for backend messages the router could not deliver."""
        return self.on("failed", action)

    def on_connected(self) -> Callable[[H], H]:
        """Register a handler for new charger connections."""
        return self.on("connected")

    def on_disconnected(self) -> Callable[[H], H]:
        """Register a handler for ended charger connections."""
        return self.on("disconnected")

    def handler_for(self, msg: Message) -> Handler | None:
        """The handler registered for this message, if any."""
        return self._handlers.get((msg.kind, msg.action)) or self._handlers.get((msg.kind, None))

    # ------------------------------------------------------------------ lifecycle

    async def wait_ready(self) -> None:
        """Return once the groups exist and the consumer reads (after :meth:`run` started)."""
        await self._ready.wait()

    def stop(self) -> None:
        """Ask :meth:`run` to stop: no new reads; in-flight handlers finish."""
        self._stopping.set()
        self._room.set()  # a reader waiting for room must see the stop

    async def run(self) -> None:
        """Consume until :meth:`stop`; then finish in-flight handlers and return.

        Raises:
            redis.exceptions.RedisError: the consumer groups could not be created.
        """
        await self.ensure_groups()
        self._ready.set()
        log.info("consumer %s of group %s reading %s", self.consumer, self.group,
                 " ".join(self.streams))
        claimer = asyncio.create_task(self._claim_loop(), name="backend-claimer")
        # One reader per shard: a multi-stream XREADGROUP would be a cross-slot
        # command on Redis Cluster, where each shard's hash tag picks a slot.
        if self._url is not None:
            self._readers = [ShardReader(self, stream) for stream in self.streams]
            readers = [asyncio.create_task(r.run(), name=f"backend-reader-{r.stream}")
                       for r in self._readers]
        else:
            readers = [asyncio.create_task(self._read_loop(stream),
                                           name=f"backend-reader-{stream}")
                       for stream in self.streams]
        try:
            await asyncio.gather(*readers)
        finally:
            for reader in readers:
                reader.cancel()  # only after an error in one of them; normally done
            await asyncio.gather(*readers, return_exceptions=True)
            self._stopping.set()
            await asyncio.gather(claimer, return_exceptions=True)
            await self._drain_workers()
            await self._outbox.aclose()
            await self.client.close()

    async def _open_connection(self, name: str) -> RedisConnection:
        """A new data-path connection (one per shard reader).

        The one place that decides where the SDK's hot connections go; a
        cluster or Sentinel topology routes here.

        Raises:
            router.streams.errors.RedisConnectionError: no connection.
        """
        assert self._url is not None
        return await open_connection(self._url, name=name)

    async def ensure_groups(self) -> None:
        """Create the consumer group on every inbound stream (idempotent).

        Raises:
            redis.exceptions.RedisError: Redis refused.
        """
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id=self.start_id, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _drain_workers(self) -> None:
        workers = [*self._workers.values(), *self._side_tasks]
        if not workers:
            return
        _done, pending = await asyncio.wait(workers, timeout=self.shutdown_timeout)
        for task in pending:
            # Unfinished entries stay pending in Redis; another consumer claims them.
            task.cancel()
        if pending:
            log.warning("shutdown: %d charger queues did not finish in %.0fs",
                        len(pending), self.shutdown_timeout)
            # Bounded: a handler stuck in a blocking call may ignore the cancel.
            await asyncio.wait(pending, timeout=5)

    # ------------------------------------------------------------------ reading

    async def _read_loop(self, stream: str) -> None:
        # The read path through redis-py, for clients direct_url cannot
        # follow (TLS, Sentinel): one XREADGROUP per shard, entries dispatched
        # to per-charger tasks.
        streams: dict[Any, Any] = {stream: ">"}
        block_ms = max(1, int(self.block * 1000))
        backoff = 0.1
        while not self._stopping.is_set():
            if len(self._in_flight) >= self.max_in_flight:
                self._room.clear()
                await self._room.wait()
            if self._stopping.is_set():
                break
            try:
                response = cast(StreamReply, await self.redis.xreadgroup(
                    self.group, self.consumer, streams, count=self.batch, block=block_ms))
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # The stream or group was deleted under us (FLUSHDB, DEL): recreate.
                    log.warning("consumer group missing, recreating: %s", exc)
                    await self.ensure_groups()
                    continue
                raise
            except (RedisError, OSError) as exc:
                log.warning("XREADGROUP failed (%s); retrying in %.1fs", exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            for _key, entries in response or ():
                for entry_id, fields in entries:
                    self._dispatch(stream, _s(entry_id), fields)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    def _dispatch(self, stream: str, entry_id: str, fields: dict[bytes, bytes] | None) -> None:
        if (stream, entry_id) in self._in_flight:
            return  # claimed back while this consumer still works on it
        try:
            msg = Message(stream, entry_id, fields or {})
        except MalformedEntry as exc:
            self._dead_letter_soon(stream, entry_id, fields or {}, str(exc))
            return
        cs = msg.cs.encode()
        if cs in self._workers:
            self._enqueue(cs, msg)
        else:
            self._start_charger(cs, msg, None)

    def _enqueue(self, cs: bytes, msg: Message) -> None:
        """Queue ``msg`` behind the running task of its charger."""
        self._in_flight.add((msg.stream, msg.entry_id))
        self._queues[cs].append(msg)

    def _start_charger(self, cs: bytes, msg: Message, started: Awaitable[Any] | None) -> None:
        """Handle ``msg`` (and what queues behind it) in a task of its charger;
        ``started`` is its handler's call already under way, if any."""
        self._in_flight.add((msg.stream, msg.entry_id))
        self._queues[cs] = collections.deque()
        self._workers[cs] = asyncio.create_task(self._drain(cs, msg, started),
                                                name=f"cs:{cs.decode(errors='replace')}")

    def has_room(self, held: int) -> bool:
        """Whether a reader holding ``held`` entries may read more (``max_in_flight``)."""
        return len(self._in_flight) + sum(r.held for r in self._readers) < self.max_in_flight

    async def wait_room(self, held: int) -> None:
        """Wait until :meth:`has_room` (or stop)."""
        while not self.has_room(held) and not self._stopping.is_set():
            self._room.clear()
            await self._room.wait()

    def _room_changed(self) -> None:
        if len(self._in_flight) + sum(r.held for r in self._readers) < self.max_in_flight:
            self._room.set()

    def _finished(self, stream: str, entry_id: str) -> None:
        self._in_flight.discard((stream, entry_id))
        self._room_changed()

    async def _drain(self, cs: bytes, first: Message | None = None,
                     started: Awaitable[Any] | None = None) -> None:
        """Handle the messages of one charger, one after the other."""
        queue = self._queues[cs]
        try:
            if first is not None:
                try:
                    async with self._slots:
                        await self._process(first, started)
                finally:
                    self._finished(first.stream, first.entry_id)
            while queue:
                msg = queue.popleft()
                try:
                    async with self._slots:
                        await self._process(msg)
                finally:
                    self._finished(msg.stream, msg.entry_id)
        finally:
            del self._queues[cs]
            del self._workers[cs]

    # ------------------------------------------------------------------ handling

    async def _process(self, msg: Message, started: Awaitable[Any] | None = None) -> None:
        handler = self.handler_for(msg)
        try:
            out_key: bytes | None = None
            reply: dict[Any, Any] | None = None
            if msg.kind == "call" and self.answer_calls:
                out_key, reply = await self._answer_call(msg, handler, started)
            elif started is not None:
                await started
            elif handler is not None:
                await _call(handler, msg)
            # Acknowledged only after the handler finished and its answer is
            # in the out stream (the outbox writes the reply first). A crash
            # before that means redelivery.
            await self._outbox.put(msg.stream, msg.entry_id, out_key, reply)
            self.stats["handled"] += 1
        except asyncio.CancelledError:
            raise
        except MalformedEntry as exc:
            # Retrying cannot help an entry that breaks the contract.
            await self._dead_letter(msg.stream, msg.entry_id, msg.fields, 1, str(exc))
        except Exception as exc:  # a handler bug or Redis trouble: retry later
            self.stats["failed"] += 1
            log.exception("handling %r failed; it stays pending and is retried after %.0fs",
                          msg, self.claim_idle)
            await self._record_error(msg.stream, msg.entry_id, exc)

    async def _answer_call(self, msg: Message, handler: Handler | None,
                           started: Awaitable[Any] | None = None
                           ) -> tuple[bytes, dict[Any, Any]]:
        """Run a call handler; return the out stream and the reply entry."""
        if not msg.node or not msg.conn or not msg.id:
            raise MalformedEntry(f"call entry {msg.entry_id} lacks node, conn or id")
        try:
            if started is not None:
                result = await started
            elif handler is None:
                raise ActionNotImplemented(f"{msg.action} is not implemented")
            else:
                result = await _call(handler, msg)
            fields: dict[Any, Any] = {"kind": "result", "cs": msg.cs, "conn": msg.conn,
                                      "id": msg.id, "payload": encode_payload(result)}
        except OCPPError as err:
            fields = dict(zip(*[iter(self._error_fields(msg, err))] * 2, strict=True))
        return self.keys.out(msg.node), fields

    def _error_fields(self, msg: Message, err: OCPPError) -> list[Any]:
        # The one place a handler's exception becomes a CALLERROR; only the
        # code, description and details the handler chose reach the charger.
        return ["kind", "error", "cs", msg.cs, "conn", msg.conn, "id", msg.id,
                "code", err.wire_code(msg.proto), "description", err.description,
                "details", encode_payload(err.details)]

    def _side_task(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._side_tasks.add(task)  # a reference, and something to wait for on stop
        task.add_done_callback(self._side_tasks.discard)

    def _handler_failed(self, msg: Message, exc: Exception) -> None:
        """A handler raised on the inline path: the entry stays pending (retried)."""
        self.stats["failed"] += 1
        log.error("handling %r failed; it stays pending and is retried after %.0fs",
                  msg, self.claim_idle, exc_info=exc)
        self._side_task(self._record_error(msg.stream, msg.entry_id, exc))

    def _answer_failed(self, stream: str, entry_id: str, exc: Exception) -> None:
        """Redis refused the answer of one entry of a batch: it stays pending."""
        self.stats["failed"] += 1
        log.error("answering entry %s of %s failed (%s); it stays pending and is retried "
                  "after %.0fs", entry_id, stream, exc, self.claim_idle)
        self._side_task(self._record_error(stream, entry_id, exc))

    def _dead_letter_soon(self, stream: str, entry_id: str, fields: dict[bytes, bytes],
                          error: str) -> None:
        self._in_flight.add((stream, entry_id))

        async def run() -> None:
            try:
                await self._dead_letter(stream, entry_id, fields, 1, error)
            finally:
                self._finished(stream, entry_id)

        self._side_task(run())

    async def _record_error(self, stream: str, entry_id: str, exc: BaseException) -> None:
        try:
            await self.redis.hset(self.errors_key, f"{stream} {entry_id}",
                                  f"{type(exc).__name__}: {exc}"[:1000])
            # Old errors of entries that were acknowledged later vanish with the hash.
            await self.redis.expire(self.errors_key, 7 * 86400)
        except RedisError:
            log.warning("could not record the error of %s %s", stream, entry_id)

    # ------------------------------------------------------------------ claiming

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            await self._sleep(self.claim_interval)
            if self._stopping.is_set():
                break
            try:
                await self.keep_alive()
                await self.claim_once()
                await self.forget_idle_consumers()
                self.stats["sweeps"] += 1
            except (RedisError, OSError) as exc:
                log.warning("claim sweep failed: %s", exc)

    async def keep_alive(self) -> None:
        """Reset the idle time of the entries this consumer is working on.

        ``XCLAIM … JUSTID`` to ourselves resets an entry's idle time without
        counting a delivery (https://redis.io/docs/latest/commands/xclaim/), so
        while this consumer lives, no sweep (ours or another consumer's) takes
        away or dead-letters an entry whose handler is merely slow:
        ``claim_idle`` only bounds how long a dead consumer's entries wait.

        Raises:
            redis.exceptions.RedisError: Redis failed.
        """
        by_stream: dict[str, list[Any]] = {}
        for stream, entry_id in self._in_flight:
            by_stream.setdefault(stream, []).append(entry_id)
        for reader in self._readers:
            ids: list[Any] = reader.held_ids()
            if ids:
                by_stream.setdefault(reader.stream, []).extend(ids)
        if not by_stream:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                for start in range(0, len(ids), 1000):
                    pipe.xclaim(stream, self.group, self.consumer, 0, ids[start:start + 1000],
                                justid=True)
            await pipe.execute()

    async def forget_idle_consumers(self) -> int:
        """Delete consumers of the group that hold nothing and were idle for long.

        Every process start adds a consumer name to the group; without this,
        ``XINFO CONSUMERS`` would list every consumer that ever ran. Only
        consumers with no pending entries are deleted, so nothing is lost; a
        live one that happened to qualify is recreated by its next read.
        Returns how many were deleted.

        Raises:
            redis.exceptions.RedisError: Redis failed.
        """
        idle_ms = int(self.forget_consumers_after * 1000)
        deleted = 0
        for stream in self.streams:
            for info in await self.redis.xinfo_consumers(stream, self.group):
                name = _s(info["name"])
                if name != self.consumer and int(info["pending"]) == 0 \
                        and int(info["idle"]) > idle_ms:
                    await self.redis.xgroup_delconsumer(stream, self.group, name)
                    deleted += 1
        return deleted

    async def claim_once(self) -> int:
        """Claim entries idle longer than ``claim_idle`` from any consumer of the group.

        Claimed entries are dispatched like new ones, or dead-lettered when
        delivered more than ``max_deliveries`` times. Returns how many entries
        were claimed.

        Raises:
            redis.exceptions.RedisError: Redis failed.
        """
        idle_ms = int(self.claim_idle * 1000)
        claimed = 0
        for stream in self.streams:
            start = "0-0"
            while True:
                reply = await self.redis.xautoclaim(
                    stream, self.group, self.consumer, idle_ms, start_id=start, count=self.batch)
                batch_start, start = start, _s(reply[0])
                entries = [(_s(eid), fields) for eid, fields in reply[1] if eid is not None]
                claimed += len(entries)
                if len(entries) < len(reply[1]):
                    await self._ack_deleted(stream, batch_start, start, entries)
                if entries:
                    await self._handle_claimed(stream, entries)
                if start == "0-0":
                    break
        return claimed

    async def _ack_deleted(self, stream: str, first: str, after: str,
                           entries: list[tuple[str, dict[bytes, bytes]]]) -> None:
        """Drop claimed entries that no longer exist (trimmed by ``MAXLEN``).

        Redis ≥ 7 removes them from the pending list itself and reports their
        ids; Redis 6.2 returns them as nil without ids and keeps them pending
        forever. They are the entries now ours in the claimed id range that
        came back without data and that we are not working on.
        """
        last = "+" if after == "0-0" else f"({after}"
        mine = await self.redis.xpending_range(stream, self.group, first, last,
                                               self.batch * 2, consumername=self.consumer)
        present = {eid for eid, _fields in entries}
        ids = [_s(cast(bytes, p["message_id"])) for p in mine]
        gone = [eid for eid in ids if eid not in present and (stream, eid) not in self._in_flight]
        if gone:
            await self.redis.xack(stream, self.group, *gone)
            log.warning("%d pending entries of %s were trimmed before they were handled",
                        len(gone), stream)

    async def _handle_claimed(self, stream: str,
                              entries: list[tuple[str, dict[bytes, bytes]]]) -> None:
        # XAUTOCLAIM counted this delivery; XPENDING tells the total per entry.
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id, _fields in entries:
                pipe.xpending_range(stream, self.group, entry_id, entry_id, 1)
            pending = await pipe.execute()
        for (entry_id, fields), info in zip(entries, pending, strict=True):
            deliveries = int(info[0]["times_delivered"]) if info else 1
            self.stats["claimed"] += 1
            if deliveries > self.max_deliveries and (stream, entry_id) not in self._in_flight:
                error = await self.redis.hget(self.errors_key, f"{stream} {entry_id}")
                self._in_flight.add((stream, entry_id))
                try:
                    await self._dead_letter(stream, entry_id, fields, deliveries,
                                            _s(error) if error else "not acknowledged in time")
                finally:
                    self._finished(stream, entry_id)
            else:
                self._dispatch(stream, entry_id, fields)

    async def _dead_letter(self, stream: str, entry_id: str, fields: dict[bytes, bytes],
                           deliveries: int, error: str) -> None:
        """Move one entry to the dead-letter stream, then acknowledge it."""
        dead: dict[Any, Any] = dict(fields)
        dead.update({"dead_stream": stream, "dead_entry": entry_id, "dead_group": self.group,
                     "dead_deliveries": deliveries, "dead_error": error,
                     "dead_ts": int(time.time() * 1000)})
        try:
            await self.redis.xadd(self.dead_stream, dead, maxlen=DEAD_MAXLEN, approximate=True)
            await self.redis.xack(stream, self.group, entry_id)
            await self.redis.hdel(self.errors_key, f"{stream} {entry_id}")
        except RedisError as exc:
            log.warning("dead-lettering %s %s failed: %s", stream, entry_id, exc)
            return
        self.stats["dead"] += 1
        log.error("entry %s of %s moved to %s after %d deliveries: %s",
                  entry_id, stream, self.dead_stream, deliveries, error)


async def _call(handler: Handler, msg: Message) -> Any:
    """Call a ``def`` or ``async def`` handler and return its result."""
    done, result = call_inline(handler, msg)
    return result if done else await result
