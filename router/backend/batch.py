"""The SDK's data path: one inbound shard, read and answered in batches.

One :class:`ShardReader` per shard stream, each on its own Redis connection
(:class:`router.streams.connection.RedisConnection`: the router's compiled
RESP encoder and reply reader). One round trip per batch: a single write
carries

1. the ``XACK`` of every entry of earlier batches whose answer Redis has
   confirmed (or that needed no answer),
2. the ``XADD`` answers to the ``call`` entries of the last batch
   (``<prefix>:out:<node>``, ``MAXLEN ~ 100000``),
3. the next ``XREADGROUP … COUNT batch STREAMS <shard> >``: with ``BLOCK``
   when nothing else is owed, without when acknowledgements wait for this
   write's answers (so an idle consumer never holds them back).

An entry is acknowledged only after the reply to its ``XADD`` said the answer
is in the out stream (docs/streams.md: at-least-once). A failed ``XADD`` (an
error reply in the middle of a pipelined write) leaves its entry pending,
exactly as a failing handler does; the others of the write are acknowledged.

The reply is parsed as ``StreamEntries`` (offsets into the reply's bytes, no
Python object per field); handlers get a lazy :class:`Message`. Handlers run
inline, in stream order: a plain ``def`` handler is called; an ``async def``
handler's coroutine is driven with ``send(None)`` and, when it completes
without suspending (the common case of handlers that await nothing, or only
ready futures), no task or future exists for it. A handler that really
suspends is handed to a task (``BackendApp._charger_task``) and the later
entries of its charger wait behind it, so each charger's messages are handled
in stream order.

Each shard has its own ``XREADGROUP`` (a read of several shards would be a
cross-slot command on Redis Cluster); connections come from
``BackendApp._open_connection``, the one place that knows where a stream lives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from router.backend.errors import ActionNotImplemented, OCPPError
from router.backend.message import MalformedEntry, Message, encode_payload
from router.streams._resp import CommandBuffer, StreamEntries
from router.streams.connection import RedisConnection
from router.streams.errors import RedisReplyError, StreamsError

if TYPE_CHECKING:
    from router.backend.app import BackendApp

log = logging.getLogger(__name__)

# docs/streams.md: "Backends should add to out streams with MAXLEN ~ 100000".
OUT_MAXLEN = 100_000
# Seconds a write may wait for its replies beyond XREADGROUP's BLOCK before
# the connection is dropped (Redis hung, network black hole).
REPLY_GRACE = 10.0


class Suspended:
    """An ``async def`` handler's coroutine that suspended on its first step,
    as an awaitable a task can finish: it hands the task the future the
    coroutine is waiting for, then forwards every resumption (and a
    cancellation) to the coroutine.
    """

    __slots__ = ("coro", "first")

    def __init__(self, coro: CoroutineType[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # CancelledError from the task, or a throw
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def call_inline(handler: Any, msg: Message) -> tuple[bool, Any]:
    """Run ``handler(msg)`` as far as it goes without the event loop.

    Returns ``(True, result)`` when it finished, or ``(False, awaitable)``
    when it must be awaited (a coroutine that suspended, as a
    :class:`Suspended`, or another awaitable it returned).

    Raises:
        Exception: whatever the handler raised.
    """
    result = handler(msg)
    if type(result) is CoroutineType:
        try:
            first = result.send(None)
        except StopIteration as stop:
            return True, stop.value
        return False, Suspended(result, first)
    if result is None or type(result) in (dict, bytes) or not hasattr(result, "__await__"):
        return True, result
    return False, result


class ShardReader:
    """Reads one shard stream for a :class:`BackendApp` and answers in batches.

    Args:
        app: the app (handlers, options, shared state).
        stream: the shard stream's key.
    """

    def __init__(self, app: BackendApp, stream: str) -> None:
        self.app = app
        self.stream = stream
        self.conn: RedisConnection | None = None
        self._buf = CommandBuffer(1 << 16)
        self._head = CommandBuffer(4096)
        self._out_prefix = f"{app.prefix}:out:".encode()
        self._group = app.group.encode()
        self._stream_b = stream.encode()
        read = CommandBuffer(256)
        read.append_command(b"XREADGROUP", b"GROUP", self._group, app.consumer.encode(),
                            b"COUNT", app.batch, b"STREAMS", self._stream_b, b">")
        self._read_now = read.take()
        read.append_command(b"XREADGROUP", b"GROUP", self._group, app.consumer.encode(),
                            b"COUNT", app.batch, b"BLOCK", max(1, int(app.block * 1000)),
                            b"STREAMS", self._stream_b, b">")
        self._read_block = read.take()
        # Entries whose answer is confirmed (or needed none): XACK next write.
        self._ack: list[str] = []
        # Entries whose XADD is in the buffer, in the buffer's order.
        self._answering: list[str] = []
        # Entries of the write in flight: its XACKs and its XADDs.
        self._acking: list[str] = []
        self._confirming: list[str] = []

    @property
    def held(self) -> int:
        """Entries read by this reader and not acknowledged (nor given up) yet."""
        return (len(self._ack) + len(self._answering) + len(self._acking)
                + len(self._confirming))

    def held_ids(self) -> list[str]:
        """Their ids (for keep-alive)."""
        return [*self._ack, *self._answering, *self._acking, *self._confirming]

    async def run(self) -> None:
        """Read, handle and answer until the app stops (then flush what is owed)."""
        try:
            await self._run()
        finally:
            if self.conn is not None:
                self.conn.abort()   # cancelled mid-write: nothing more is owed here
                self.conn = None

    async def _run(self) -> None:
        app = self.app
        backoff = 0.1
        while True:
            stopping = app._stopping.is_set()
            if stopping and not (self._ack or self._answering):
                break
            read = not stopping and app.has_room(self.held)
            if not read and not stopping and not (self._ack or self._answering):
                await app.wait_room(self.held)
                continue
            try:
                conn = await self._connection()
                entries = await self._round_trip(conn, read)
            except StreamsError as exc:
                self._lost(exc)
                if app._stopping.is_set():
                    break
                log.warning("reading %s failed (%s); retrying in %.1fs", self.stream, exc, backoff)
                await app._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if entries is not None and len(entries):
                self.handle(entries)
        if self.conn is not None:
            self.conn.close()
            await self.conn.wait_closed()
            self.conn = None

    async def _connection(self) -> RedisConnection:
        conn = self.conn
        if conn is None or not conn.connected:
            conn = self.conn = await self.app._open_connection(f"{self.app.consumer}:read")
        return conn

    def _lost(self, exc: Exception) -> None:
        # Nothing of the lost write is known to be done: its entries stay
        # pending (claimed back after claim_idle, like a dead consumer's) and
        # an answer that did reach Redis may be sent again (at-least-once).
        lost = self.held
        self._ack.clear()
        self._answering.clear()
        self._acking.clear()
        self._confirming.clear()
        self._buf.clear()
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        if lost:
            log.warning("%d entries of %s stay pending after a Redis failure (%s)",
                        lost, self.stream, exc)
        self.app._room_changed()

    async def _round_trip(self, conn: RedisConnection, read: bool) -> StreamEntries | None:
        """One write (acks, answers, read) and its replies; the read's entries."""
        buf = self._buf
        acking, self._ack = self._ack, []
        confirming, self._answering = self._answering, []
        self._acking, self._confirming = acking, confirming
        data = b""
        n = len(buf)   # the XADDs, appended while handling
        if acking:
            self._head.append_xack(self._stream_b, self._group, acking)
            data = self._head.take()
            n += 1
        data += buf.take()
        blocking = read and not confirming
        if read:
            data += self._read_block if blocking else self._read_now
            n += 1
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        conn.send_raw(data, n, lambda r: None if fut.done() else fut.set_result(r),
                      self.app.block + REPLY_GRACE if blocking else REPLY_GRACE, xread=read)
        replies = await fut
        if isinstance(replies, StreamsError):
            raise replies
        self._acking, self._confirming = [], []
        at = 0
        if acking:
            if isinstance(replies[0], RedisReplyError):
                # Left pending: another sweep redelivers them (at-least-once).
                log.warning("XACK of %d entries of %s failed: %s", len(acking), self.stream,
                            replies[0])
            else:
                self.app.stats["handled"] += len(acking)
            at = 1
        for entry_id, reply in zip(confirming, replies[at:at + len(confirming)], strict=True):
            if isinstance(reply, RedisReplyError):
                self.app._answer_failed(self.stream, entry_id, reply)
            else:
                self._ack.append(entry_id)
        self.app._room_changed()
        if not read:
            return None
        entries = replies[-1]
        if isinstance(entries, RedisReplyError):
            if str(entries).startswith("NOGROUP"):
                # The stream or group was deleted under us (FLUSHDB, DEL, a
                # Redis restart without persistence): recreate it.
                log.warning("consumer group missing on %s, recreating: %s", self.stream, entries)
                await self.app.ensure_groups()
                return None
            raise entries
        return entries  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ handling

    def handle(self, entries: StreamEntries) -> None:
        """Handle the entries of one read, in order, appending answers to the buffer."""
        app = self.app
        stream = self.stream
        handlers = app._handlers
        busy = app._workers
        answer = app.answer_calls
        buf = self._buf
        ack = self._ack
        answering = self._answering
        head = entries.head
        for i in range(len(entries)):
            entry_id, kind, action, cs, answerable = head(i)
            if kind is None or cs is None:
                if not entries.fields(i):
                    ack.append(entry_id)   # deleted while pending: nothing to handle
                    continue
                app._dispatch(stream, entry_id, entries.fields(i))   # dead-lettered
                continue
            if (stream, entry_id) in app._in_flight:
                continue    # claimed back while this consumer still works on it
            msg = Message.lazy(stream, entry_id, entries, i, kind, action)
            if cs in busy:
                app._enqueue(cs, msg)    # behind its charger's running handler
                continue
            handler = handlers.get((kind, action)) or handlers.get((kind, None))
            calls = kind == "call" and answer
            if calls and not answerable:
                app._dispatch(stream, entry_id, entries.fields(i))   # dead-lettered
                continue
            try:
                if handler is None:
                    if calls:
                        raise ActionNotImplemented(f"{action} is not implemented")
                    ack.append(entry_id)
                    continue
                done, result = call_inline(handler, msg)
                if not done:
                    app._start_charger(cs, msg, result)
                    continue
                if calls:
                    buf.append_reply(self._out_prefix, entries, i, encode_payload(result),
                                     OUT_MAXLEN)
                    answering.append(entry_id)
                else:
                    ack.append(entry_id)
            except OCPPError as err:
                if not calls:
                    app._handler_failed(msg, err)
                    continue
                buf.append_xadd(app.keys.out(msg.node), OUT_MAXLEN, app._error_fields(msg, err))
                answering.append(entry_id)
            except MalformedEntry as exc:
                app._dead_letter_soon(stream, entry_id, entries.fields(i), str(exc))
            except Exception as exc:
                app._handler_failed(msg, exc)
