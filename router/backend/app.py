"""The consumer side of the Redis Streams contract (docs/streams.md).

A :class:`BackendApp` joins a consumer group on every inbound shard stream,
dispatches entries to handlers by kind and action, writes the answers to
charger CALLs into ``<prefix>:out:<node>`` and acknowledges an entry only after
its handler finished and its answer was written (at-least-once delivery).

The data path (docs/backend.md, "Performance model"): one reader per shard,
each on its own connection (``router.streams.RedisConnection``: RESP encoded
and parsed by the compiled ``router.streams._resp``). A group read's reply is
kept as its bytes plus offsets (``StreamEntries``); a :class:`Message` takes
the seven fields dispatch needs from it in one call and decodes the rest on
access. A plain ``def`` handler runs inline, in the reply's callback: no
task, future or semaphore per entry; an ``async def`` handler runs in a task
of its own (asyncio code needs its task). The replies (``XADD``, encoded in C from the entry's bytes), the
``XACK``s of the previous batch's confirmed replies and the next
``XREADGROUP`` leave in one write: one round trip per batch.

Ordering and concurrency: while an ``async def`` handler runs, its
charger's later entries queue behind it (handled in stream order by that
task); other chargers go on. At most ``concurrency`` async handlers run at
once; beyond that, new entries wait for a slot. Many processes
(consumers) in one group share the shards' entries (XREADGROUP).

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
import types
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from router.backend.client import Client
from router.backend.connections import Connector
from router.backend.dedup import Deduplicator
from router.backend.errors import ActionNotImplemented, OCPPError
from router.backend.message import KINDS, MalformedEntry, Message, encode_payload
from router.backend.outbox import OUT_MAXLEN, Answers, Outbox
from router.streams._resp import CommandBuffer
from router.streams.cluster import retry_delay, transient_reply
from router.streams.connection import RedisConnection
from router.streams.errors import RedisReplyError, StreamsError
from router.streams.keys import KeySpace

log = logging.getLogger(__name__)

#: A handler: ``def`` or ``async def``, taking the :class:`Message`.
Handler = Callable[[Message], Awaitable[Any] | Any]
H = TypeVar("H", bound=Handler)

DEAD_MAXLEN = 100_000
# Connections used besides the handlers' (the data path has its own):
# claimer, client replies, spares.
RESERVED_CONNECTIONS = 5
_CORO = types.CoroutineType
_DUPLICATE = object()  # what _once returns for a message handled before


def default_consumer_name() -> str:
    """A consumer name unique to this process: ``<host>-<pid>-<random>``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class BackendApp:
    """A backend service: a consumer in a consumer group on the inbound streams.

    Example::

        app = BackendApp(redis.asyncio.Redis.from_url(url), group="csms")

        @app.on_call("Heartbeat")
        def heartbeat(msg: Message) -> dict[str, Any]:      # no await: called inline
            return {"currentTime": utc_now()}

        @app.on_call("Authorize")
        async def authorize(msg: Message) -> dict[str, Any]:
            return {"idTagInfo": await lookup(msg.json["idTag"])}

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
            (each shard's reader asks for at most the room left).
        concurrency: handlers suspended at once (each may hold a Redis
            connection of the redis-py client); beyond it, new entries wait
            for a slot. The client's pool must allow more connections than
            this: the claimer and ``client`` use a few more (the readers and
            the outbox have their own).
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
        dedup: drop charger messages this group handled already (the router
            publishes at least once; router/backend/dedup.py). Each message then
            costs two Redis round trips and a task.
    """


    def __init__(self, redis: aioredis.Redis, *, group: str, prefix: str = "ocpp",
                 shards: int = 1, consumer: str | None = None, claim_idle: float = 30.0,
                 claim_interval: float | None = None, max_deliveries: int = 5,
                 batch: int = 100, block: float = 2.0, max_in_flight: int = 1000,
                 concurrency: int = 50, forget_consumers_after: float = 3600.0,
                 answer_calls: bool = True, start_id: str = "$",
                 shutdown_timeout: float = 30.0, dedup: Deduplicator | None = None) -> None:
        if shards < 1:
            raise ValueError("shards must be at least 1")
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if batch < 1 or max_in_flight < 1:
            raise ValueError("batch and max_in_flight must be at least 1")
        # (A RedisCluster has a pool per node and no connection_pool attribute.)
        pool_size = getattr(getattr(redis, "connection_pool", None), "max_connections", None)
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
        self.dedup = dedup
        self.concurrency = concurrency
        self.forget_consumers_after = forget_consumers_after
        #: Opens the data path's connections (one place: cluster/sentinel route there).
        self.connector = Connector(redis)
        self._out_prefix = f"{prefix}:out:".encode()
        self._group_b = group.encode()
        self._consumer_b = self.consumer.encode()
        self._handlers: dict[tuple[str, str | None], Handler] = {}
        # kind -> action (None: any) -> handler, for a lookup without a tuple.
        self._by_kind: dict[str, dict[str | None, Handler]] = {kind: {} for kind in KINDS}
        # Chargers with a handler suspended (or waiting for a slot), and
        # their entries queued behind it, in stream order.
        self._busy: dict[str, collections.deque[Message]] = {}
        self._waiting: collections.deque[str] = collections.deque()
        self._suspended = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        # Entries held outside a reader's batch (queued, suspended, in the
        # outbox): kept alive against claims, and skipped when claimed back.
        self._in_flight: set[tuple[str, str]] = set()
        self._readers: list[_ShardReader] = []
        # On Redis Cluster the outbox writes each command to its key's master
        # (Connector.send), and the readers hand it their answers: a reply
        # goes to a router's out stream, which lives in another slot than the
        # shard that was read.
        self._outbox = Outbox(self._connect_outbox, group, self._answer_failed, self._done,
                              self.stats,
                              send=self.connector.send if self.connector.cluster else None)
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()

    # ------------------------------------------------------------------ handlers

    def on(self, kind: str, action: str | None = None) -> Callable[[H], H]:
        """Register a handler for entries of ``kind`` (and ``action``, if given).

        A handler for a specific action wins over one for the whole kind. For
        ``call`` the handler returns the response payload (a dict, a
        ``msgspec.Struct`` or JSON bytes) or raises an
        :class:`~router.backend.errors.OCPPError`; other handlers return nothing.

        A handler is an ``async def`` or a plain ``def`` (called inline, in the
        reader's callback: it must not block, see docs/backend.md).

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
            self._by_kind[kind][action] = handler
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
        kinds = self._by_kind[msg.kind]
        return kinds.get(msg.action) or kinds.get(None)

    # ------------------------------------------------------------------ lifecycle

    async def wait_ready(self) -> None:
        """Return once the groups exist and the consumer reads (after :meth:`run` started)."""
        await self._ready.wait()

    def stop(self) -> None:
        """Ask :meth:`run` to stop: no new reads; in-flight handlers finish."""
        self._stopping.set()
        self._wake()  # a reader paused for room must see the stop

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
        self._readers = [_ShardReader(self, stream) for stream in self.streams]
        readers = [asyncio.create_task(self._read_shard(r), name=f"backend-reader-{r.stream}")
                   for r in self._readers]
        try:
            await asyncio.gather(*readers)
        finally:
            for reader in readers:
                reader.cancel()  # only after an error in one of them; normally done
            await asyncio.gather(*readers, return_exceptions=True)
            self._stopping.set()
            await asyncio.gather(claimer, return_exceptions=True)
            await self._drain_workers()
            await self._outbox.close()
            await self.connector.close()
            await self.client.close()

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        # A finishing charger task may start a waiting one: wait until none is left.
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - loop.time())
        pending = set(self._tasks)
        for task in pending:
            # Unfinished entries stay pending in Redis; another consumer claims them.
            task.cancel()
        if pending:
            log.warning("shutdown: %d handlers did not finish in %.0fs",
                        len(pending), self.shutdown_timeout)
            # Bounded: a handler stuck in a blocking call may ignore the cancel.
            await asyncio.wait(pending, timeout=5)
        try:
            await asyncio.wait_for(self._outbox.idle(), 10)
        except TimeoutError:
            log.warning("shutdown: the last answers were not written in 10s (they stay pending)")

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ reading

    async def _connect_outbox(self) -> RedisConnection:
        return await self.connector.connect(self.streams[0].encode(),
                                            name=f"{self.consumer}:outbox")

    async def _read_shard(self, reader: _ShardReader) -> None:
        """Keep ``reader`` reading, across lost connections and deleted groups."""
        backoff = 0.1
        transient = 0
        conn: RedisConnection | None = None
        try:
            while not self._stopping.is_set():
                if conn is None or not conn.connected:
                    try:
                        conn = await self.connector.connect(
                            reader.key, name=f"{self.consumer}:{reader.stream}")
                    except (StreamsError, OSError) as exc:
                        log.warning("no connection for %s (%s); retrying in %.1fs",
                                    reader.stream, exc, backoff)
                        await self._sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
                        continue
                outcome = await reader.start(conn)
                if reader.progress:
                    backoff = 0.1
                if outcome == "stopped":
                    break
                if isinstance(outcome, RedisReplyError) and transient_reply(outcome):
                    # Redis Cluster / Sentinel: the shard's slot moved, or its
                    # master failed over or was demoted under the read
                    # (UNBLOCKED, MOVED, ASK, TRYAGAIN, CLUSTERDOWN, LOADING,
                    # READONLY). Nothing was lost: connect again where the
                    # (refreshed) map or the sentinels say.
                    log.info("reading %s: %s; reconnecting", reader.stream, outcome)
                    conn.close()
                    conn = None
                    await self._sleep(retry_delay("tryagain", transient))
                    transient = min(transient + 1, 5)
                    continue
                transient = 0
                if outcome == "nogroup":
                    # The stream or group was deleted under us (FLUSHDB, DEL,
                    # a Redis restarted empty): recreate.
                    log.warning("consumer group missing on %s, recreating", reader.stream)
                    try:
                        await self.ensure_groups()
                        continue
                    except (RedisError, OSError) as exc:
                        outcome = exc
                log.warning("reading %s failed (%s); retrying in %.1fs",
                            reader.stream, outcome, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        finally:
            if conn is not None:
                conn.close()

    def in_flight(self) -> int:
        """Entries read and not acknowledged yet (bounded by ``max_in_flight``).

        Safe to call from another thread (the metrics server's)."""
        held = len(self._in_flight)
        for reader in tuple(self._readers):
            held += reader.held()
        return held

    def async_handlers(self) -> int:
        """``async def`` handlers running, or chargers waiting for a slot."""
        return self._suspended + len(self._waiting)

    def _room(self) -> int:
        """Entries this consumer may still take (``max_in_flight``)."""
        return self.max_in_flight - self.in_flight()

    def _paused(self) -> bool:
        return any(reader.paused for reader in self._readers)

    def _wake(self) -> None:
        """Room was made (or stop asked): readers that paused read again."""
        for reader in self._readers:
            reader.resume()

    def _dispatch_batch(self, reader: _ShardReader, entries: Any) -> None:
        stream = reader.stream
        if self.connector.cluster:
            self._dispatch_routed(self._messages(stream, entries))
            return
        answers = reader.answers
        from_entries = Message._from_entries
        submit = self._submit
        for i in range(len(entries)):
            try:
                msg = from_entries(stream, entries, i)
            except MalformedEntry as exc:
                self._malformed(stream, _s(entries.ref(i)), entries.fields(i), str(exc))
                continue
            submit(msg, answers)

    def _dispatch_routed(self, msgs: list[Message], skip: set[int] | None = None) -> None:
        """:meth:`_dispatch_batch` on Redis Cluster: the answers and
        acknowledgements go through the outbox, split per master (a reply goes
        to a router's out stream, in another slot than the shard read)."""
        answers = self._outbox.answers
        first_msg, first_ack = len(answers.msgs), len(answers.acks)
        submit = self._submit
        checked = skip is not None
        for i, msg in enumerate(msgs):
            if skip is None or i not in skip:
                submit(msg, answers, checked)
        # Held (kept alive against claims, counted against max_in_flight)
        # until the outbox wrote them (_done).
        for msg in answers.msgs[first_msg:]:
            self._hold(msg)
        for msg in answers.acks[first_ack:]:
            self._hold(msg)
        if answers:
            self._outbox.kick()

    def _batch_answers(self, reader: _ShardReader) -> Answers:
        """Where a batch's answers go: the reader's next write, or on Redis
        Cluster the outbox."""
        return self._outbox.answers if self.connector.cluster else reader.answers

    def _messages(self, stream: str, entries: Any) -> list[Message]:
        """A batch's messages (malformed entries go to the dead letters)."""
        msgs = []
        from_entries = Message._from_entries
        for i in range(len(entries)):
            try:
                msgs.append(from_entries(stream, entries, i))
            except MalformedEntry as exc:
                self._malformed(stream, _s(entries.ref(i)), entries.fields(i), str(exc))
        return msgs

    def _dispatch_checked(self, reader: _ShardReader, msgs: list[Message], skip: set[int]) -> None:
        """Hand a de-duplicated batch to the handlers; ``skip``: repeats (acknowledged
        unhandled) and entries whose check failed (left pending)."""
        if self.connector.cluster:
            self._dispatch_routed(msgs, skip)
            return
        answers = reader.answers
        submit = self._submit
        for i, msg in enumerate(msgs):
            if i not in skip:
                submit(msg, answers, True)

    def _repeat(self, msg: Message, answers: Answers) -> None:
        """``msg`` was handled before (the router wrote it twice): acknowledge only."""
        assert self.dedup is not None
        self.dedup.dropped += 1
        self.stats["duplicates"] += 1
        answers.acks.append(msg)

    def _remember(self, msgs: list[Message]) -> None:
        """Their answers and marks are written: later copies are known here."""
        dedup = self.dedup
        assert dedup is not None
        for msg in msgs:
            key = dedup.key(msg)
            if key is not None:
                dedup.remember(key, dedup.entry_of(msg))

    def _dispatch_claimed(self, stream: str, entry_id: str,
                          fields: dict[bytes, bytes] | None) -> None:
        if (stream, entry_id) in self._in_flight:
            return  # claimed back while this consumer still works on it
        try:
            msg = Message(stream, entry_id, fields or {})
        except MalformedEntry as exc:
            self._malformed(stream, entry_id, fields or {}, str(exc))
            return
        self._submit(msg, self._outbox.answers)
        self._outbox.kick()

    # ------------------------------------------------------------------ handling

    def _submit(self, msg: Message, answers: Answers, checked: bool = False) -> None:
        """Handle ``msg`` now (inline) or queue it behind its charger's work.

        ``checked``: the de-duplication asked Redis about it already (in its batch)."""
        cs = msg.cs
        queue = self._busy.get(cs)
        if queue is not None:
            # A handler of this charger is suspended: keep stream order.
            self._hold(msg)
            queue.append(msg)
            return
        if self._suspended >= self.concurrency:
            self._hold(msg)
            self._busy[cs] = collections.deque((msg,))
            self._waiting.append(cs)
            return
        kinds = self._by_kind[msg.kind]
        handler = kinds.get(msg.action) or kinds.get(None)
        answering = msg.kind == "call" and self.answer_calls
        if answering and (not msg.node or not msg.conn or not msg.id):
            self._malformed(msg.stream, msg.entry_id, msg.fields,
                            f"call entry {msg.entry_id} lacks node, conn or id")
            return
        if handler is None:
            if answering:
                self._error_reply(msg, ActionNotImplemented(f"{msg.action} is not implemented"),
                                  answers)
            else:
                answers.acks.append(msg)
            return
        if self.dedup is not None and not checked:
            # Outside a batch (a claimed entry) de-duplication asks Redis with
            # a round trip of its own: such a message takes the async path.
            self._suspend(msg, self._once(msg, handler))
            return
        try:
            value = handler(msg)
            if type(value) is _CORO or hasattr(value, "__await__"):
                # An async handler runs in a task of its own: asyncio code
                # (timeouts, redis-py) needs to run inside its task, so the
                # coroutine is not stepped here. A plain `def` handler was
                # all there is to it.
                self._suspend(msg, value)
                return
        except OCPPError as err:
            if not answering:
                self._failure(msg, err)
            else:
                self._error_reply(msg, err, answers)
            return
        except MalformedEntry as exc:
            self._malformed(msg.stream, msg.entry_id, msg.fields, str(exc))
            return
        except (Exception, asyncio.CancelledError) as exc:
            self._failure(msg, exc)
            return
        self._complete(msg, value, answers)

    def _complete(self, msg: Message, value: Any, answers: Answers) -> None:
        """Encode ``msg``'s answer (if any) into ``answers``."""
        if self.dedup is not None:
            # Handled: the mark leaves with the answer, before the XACK.
            mark = self.dedup.mark_command(msg)
            if mark is not None:
                if msg._writes is None:
                    msg._writes = []
                msg._writes.append(mark)
        if msg.kind == "call" and self.answer_calls:
            try:
                payload = encode_payload(value)
            except TypeError as exc:
                self._failure(msg, exc)
                return
            buf = answers.buf
            n = 1
            if msg._writes:
                n += _put_writes(msg, buf)
            if msg._entries is not None:
                buf.append_result(self._out_prefix, OUT_MAXLEN, msg._entries, msg._i, payload)
            else:
                buf.append_xadd(self.keys.out(msg.node), OUT_MAXLEN, (
                    b"kind", b"result", b"cs", msg.cs, b"conn", msg.conn, b"id", msg.id,
                    b"payload", payload))
            answers.counts.append(n)
            answers.msgs.append(msg)
        elif msg._writes:
            answers.counts.append(_put_writes(msg, answers.buf))
            answers.msgs.append(msg)
        else:
            answers.acks.append(msg)

    def _error_reply(self, msg: Message, err: OCPPError, answers: Answers) -> None:
        # The one place a handler's exception becomes a CALLERROR; only the
        # code, description and details the handler chose reach the charger.
        # Commands the handler wrote before raising are dropped.
        try:
            details = encode_payload(err.details)
        except TypeError:
            details = b"{}"
        answers.buf.append_xadd(self.keys.out(msg.node), OUT_MAXLEN, (
            b"kind", b"error", b"cs", msg.cs, b"conn", msg.conn, b"id", msg.id,
            b"code", err.wire_code(msg.proto), b"description", err.description,
            b"details", details))
        answers.counts.append(1)
        answers.msgs.append(msg)

    def _suspend(self, msg: Message, pending: Awaitable[Any]) -> None:
        """``msg``'s handler waits: finish it in a task; its charger's next
        entries queue behind it."""
        self._suspended += 1
        self._busy[msg.cs] = collections.deque()
        self._hold(msg)
        self._spawn(self._continue(msg, pending), f"cs:{msg.cs}")

    async def _continue(self, msg: Message, pending: Awaitable[Any] | None) -> None:
        cs = msg.cs
        try:
            await self._process(msg, pending)
            await self._drain_queue(cs)
        finally:
            self._release_charger(cs)

    async def _drain_waiting(self, cs: str) -> None:
        try:
            await self._drain_queue(cs)
        finally:
            self._release_charger(cs)

    async def _drain_queue(self, cs: str) -> None:
        queue = self._busy[cs]
        while queue:
            await self._process(queue.popleft(), None)

    def _release_charger(self, cs: str) -> None:
        self._busy.pop(cs, None)
        self._suspended -= 1
        while self._waiting and self._suspended < self.concurrency:
            self._suspended += 1
            waiting = self._waiting.popleft()
            self._spawn(self._drain_waiting(waiting), f"cs:{waiting}")

    async def _process(self, msg: Message, pending: Awaitable[Any] | None) -> None:
        """Handle one held entry in a charger's task; the answer goes to the outbox."""
        answering = msg.kind == "call" and self.answer_calls
        try:
            if pending is None:
                if answering and (not msg.node or not msg.conn or not msg.id):
                    raise MalformedEntry(f"call entry {msg.entry_id} lacks node, conn or id")
                handler = self.handler_for(msg)
                if handler is None:
                    if answering:
                        raise ActionNotImplemented(f"{msg.action} is not implemented")
                    value = None
                elif self.dedup is not None:
                    value = await self._once(msg, handler)
                else:
                    value = handler(msg)
                    if hasattr(value, "__await__"):
                        value = await value
            else:
                value = await pending
        except asyncio.CancelledError:
            self._release(msg.stream, msg.entry_id)
            raise
        except OCPPError as err:
            if not answering:
                self._failure(msg, err)
                self._release(msg.stream, msg.entry_id)
                return
            self._error_reply(msg, err, self._outbox.answers)
        except MalformedEntry as exc:
            # Retrying cannot help an entry that breaks the contract.
            await self._dead_letter(msg.stream, msg.entry_id, msg.fields, 1, str(exc))
            self._release(msg.stream, msg.entry_id)
            return
        except Exception as exc:  # a handler bug or Redis trouble: retry later
            self._failure(msg, exc)
            self._release(msg.stream, msg.entry_id)
            return
        else:
            if value is _DUPLICATE:
                self._outbox.answers.acks.append(msg)  # handled before: no second answer
            else:
                self._complete(msg, value, self._outbox.answers)
        self._outbox.kick()

    async def _once(self, msg: Message, handler: Handler) -> Any:
        """Run ``handler`` unless this group handled ``msg`` already (the router
        publishes at least once: router/backend/dedup.py)."""
        assert self.dedup is not None
        if await self.dedup.seen(msg):
            self.stats["duplicates"] += 1
            return _DUPLICATE
        value = handler(msg)
        if hasattr(value, "__await__"):
            value = await value
        return value  # marked in _complete, with the answer

    def _failure(self, msg: Message, exc: BaseException) -> None:
        """The handler raised: the entry stays pending and is retried after claim_idle."""
        self.stats["failed"] += 1
        log.error("handling %r failed; it stays pending and is retried after %.0fs",
                  msg, self.claim_idle, exc_info=exc)
        self._spawn(self._record_error(msg.stream, msg.entry_id, exc), "backend-error")

    def _answer_failed(self, msg: Message, error: str) -> None:
        """Redis refused a command of ``msg``'s answer: not acknowledged."""
        self.stats["failed"] += 1
        log.warning("writing the answer to %r failed (it stays pending): %s", msg, error)
        self._spawn(self._record_error(msg.stream, msg.entry_id, RedisReplyError(error)),
                    "backend-error")

    def _malformed(self, stream: str, entry_id: str, fields: dict[bytes, bytes],
                   error: str) -> None:
        """Retrying cannot help an entry that breaks the contract: dead-letter it now."""
        self._in_flight.add((stream, entry_id))

        async def dead() -> None:
            try:
                await self._dead_letter(stream, entry_id, fields, 1, error)
            finally:
                self._release(stream, entry_id)

        self._spawn(dead(), "backend-dead-letter")

    def _hold(self, msg: Message) -> None:
        self._in_flight.add((msg.stream, msg.entry_id))

    def _release(self, stream: str, entry_id: str) -> None:
        self._in_flight.discard((stream, entry_id))
        self._wake()

    def _done(self, msgs: list[Message]) -> None:
        """The outbox wrote (or failed to write) the answers of ``msgs``."""
        discard = self._in_flight.discard
        for msg in msgs:
            discard((msg.stream, msg.entry_id))
        self._wake()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)  # a reference, and something to wait for on stop
        task.add_done_callback(self._tasks.discard)

    async def _record_error(self, stream: str, entry_id: str, exc: BaseException) -> None:
        try:
            await self.redis.hset(self.errors_key, f"{stream} {entry_id}",
                                  f"{type(exc).__name__}: {exc}"[:1000])
            # Old errors of entries that were acknowledged later vanish with the hash.
            await self.redis.expire(self.errors_key, 7 * 86400)
        except (RedisError, OSError):
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
                    self._release(stream, entry_id)
            else:
                self._dispatch_claimed(stream, entry_id, fields)

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


def _put_writes(msg: Message, buf: CommandBuffer) -> int:
    """Append the commands ``msg``'s handler added with ``Message.write``."""
    writes = msg._writes or ()
    for command in writes:
        buf.append_command(*command)
    return len(writes)


class _ShardReader:
    """The data path of one inbound shard, driven by reply callbacks.

    Each write carries, in this order: the answers of the last batch (replies
    and handlers' writes), the ``XACK``s of the entries whose answers Redis
    confirmed and of those that needed none, and the next ``XREADGROUP``
    (when there is room and no stop was asked). Its replies come back in the
    same order (one callback); the new entries are handled inline and the
    next write goes out at once. The read blocks (``BLOCK``) only when no
    answer waits for its confirmation, so acknowledgements never wait for
    traffic.
    """

    def __init__(self, app: BackendApp, stream: str) -> None:
        self.app = app
        self.stream = stream
        self.key = stream.encode()
        self.answers = Answers()              # filled by the batch being handled
        self._sent: Answers | None = None     # written, replies not read yet
        self._confirmed: list[Message] = []   # answers confirmed: acknowledge next
        self._conn: RedisConnection | None = None
        self._done: asyncio.Future[Any] | None = None
        self._busy = False                    # a write waits for its replies
        self._reading = False                 # that write ends with an XREADGROUP
        self.progress = False                 # a read succeeded since start()
        self._block_ms = max(1, int(app.block * 1000))
        self._checking: list[Message] = []    # a batch whose dedup check is out

    def start(self, conn: RedisConnection) -> asyncio.Future[Any]:
        """Read on ``conn`` until stopped ("stopped"), the group is missing
        ("nogroup"), the connection is lost or Redis refuses the read (the
        exception): what the returned future gets."""
        self._conn = conn
        self._done = asyncio.get_running_loop().create_future()
        self._busy = False
        self.progress = False
        self._send()
        return self._done

    def held(self) -> int:
        """Entries read and not acknowledged yet."""
        sent = self._sent
        return (len(self._confirmed) + len(self._checking)
                + (len(sent.msgs) if sent is not None else 0))

    @property
    def paused(self) -> bool:
        """Waiting for room (or for the stop) with nothing written."""
        return not self._busy and self._done is not None and not self._done.done()

    def resume(self) -> None:
        """Write again if paused (no room to read, or stop asked)."""
        if not self._busy and self._done is not None and not self._done.done():
            self._send()

    def _finish(self, outcome: Any) -> None:
        self._busy = False
        if self._done is not None and not self._done.done():
            self._done.set_result(outcome)

    def _send(self) -> None:
        app = self.app
        answers, self.answers = self.answers, Answers()
        buf = answers.buf
        acks = self._confirmed
        if answers.acks:
            acks.extend(answers.acks)
        self._confirmed = []
        if acks:
            buf.append_command(b"XACK", self.key, app._group_b, *[m.entry_ref for m in acks])
            app.stats["handled"] += len(acks)
        room = 0 if app._stopping.is_set() else app._room() - len(answers.msgs)
        read = room > 0
        if read:
            if answers.msgs:
                # Their XACKs go with the next write: do not block it.
                buf.append_command(b"XREADGROUP", b"GROUP", app._group_b, app._consumer_b,
                                   b"COUNT", min(app.batch, room), b"STREAMS", self.key, b">")
            else:
                buf.append_command(b"XREADGROUP", b"GROUP", app._group_b, app._consumer_b,
                                   b"COUNT", min(app.batch, room), b"BLOCK", self._block_ms,
                                   b"STREAMS", self.key, b">")
        n = len(buf)
        if n == 0:
            # Nothing to write and no room to read: paused until resume().
            self._busy = False
            if app._stopping.is_set():
                self._finish("stopped")
            return
        self._sent = answers
        self._reading = read
        self._busy = True
        assert self._conn is not None
        try:
            self._conn.send_raw(buf.take(), n, self._on_replies,
                                app.block + 10.0 if read else 30.0, xread=read)
        except StreamsError as exc:
            self._lost(exc)

    def _lost(self, exc: StreamsError) -> None:
        # Answers written but not confirmed stay pending (claimed back after
        # claim_idle); confirmed ones are acknowledged on the next connection.
        self._sent = None
        self._finish(exc)

    def _on_replies(self, result: Any) -> None:
        self._busy = False
        if isinstance(result, StreamsError):
            self._lost(result)
            return
        sent, self._sent = self._sent, None
        app = self.app
        if sent is not None and sent.msgs:
            ok, _ = sent.confirm(result, 0, app._answer_failed)
            self._confirmed.extend(ok)
            if app.dedup is not None:
                app._remember(ok)
        if self._reading:
            entries = result[-1]
            if type(entries) is RedisReplyError:
                self._finish("nogroup" if str(entries).startswith("NOGROUP") else entries)
                return
            self.progress = True
            if len(entries):
                if app.dedup is not None:
                    self._check(app._messages(self.stream, entries))
                    return
                app._dispatch_batch(self, entries)
        self._next()

    def _next(self) -> None:
        """The batch is handled: write its answers (and read on)."""
        if self._done is not None and not self._done.done():
            self._send()
        if self.app._paused():
            # This write's XACKs made room: readers that paused read again.
            self.app._wake()

    def _check(self, msgs: list[Message]) -> None:
        """De-duplication: ask which messages of the batch the group handled,
        one ``GET`` each in one write, before any handler runs."""
        app = self.app
        assert app.dedup is not None and self._conn is not None
        ask, repeats = app.dedup.plan(msgs)
        for i in repeats:
            app._repeat(msgs[i], app._batch_answers(self))
        if not ask:
            app._dispatch_checked(self, msgs, repeats)
            self._next()
            return
        buf = CommandBuffer(64 * len(ask))
        for _i, key in ask:
            buf.append_command(b"GET", key)
        self._checking = msgs
        self._busy = True
        try:
            self._conn.send_raw(buf.take(), len(ask),
                                lambda result: self._on_checked(msgs, ask, repeats, result), 30.0)
        except StreamsError as exc:
            self._checking = []
            self._lost(exc)

    def _on_checked(self, msgs: list[Message], ask: list[tuple[int, str]], skip: set[int],
                    result: Any) -> None:
        self._busy = False
        self._checking = []
        if isinstance(result, StreamsError):
            # Nothing handled: the batch stays pending, claimed after claim_idle.
            self._lost(result)
            return
        app = self.app
        dedup = app.dedup
        assert dedup is not None
        for (i, _key), reply in zip(ask, result, strict=True):
            if type(reply) is RedisReplyError:
                app._failure(msgs[i], reply)   # left pending, retried later
                skip.add(i)
            elif dedup.is_repeat(msgs[i], reply):
                app._repeat(msgs[i], app._batch_answers(self))
                skip.add(i)
        app._dispatch_checked(self, msgs, skip)
        self._next()
