"""The reader of a node's out stream (``<prefix>:out:<node>``, docs/streams.md).

One dedicated connection runs ``XREAD COUNT n BLOCK ms STREAMS key <last id>``
in a loop. The contract says a node reads its out stream "from the moment it
starts" and "deletes what it has read": at start the reader takes the id of
the newest entry already there (so what a backend adds after ``start()``
returns is never missed, unlike a bare ``$``), hands each batch to
``on_entries`` and then trims everything up to the last id it delivered
(``XTRIM MINID``, https://redis.io/commands/xtrim/), sent in the same write as
the next XREAD. Across its own reconnects it continues from the last id it
delivered, so it neither loses nor repeats entries; if Redis itself lost the
stream meanwhile (restart without persistence, failover), it reads the new
stream from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

from router.streams._resp import CommandBuffer, StreamEntries
from router.streams.connection import RedisConnection, Replies
from router.streams.errors import (
    ConnectionLostError,
    RedisConnectionError,
    RedisReplyError,
    StreamsError,
)
from router.streams.redis_url import parse_redis_url

#: What ``on_entries`` receives: a sequence of ``(id, {field: value})``.
Entries = StreamEntries


def next_id(entry_id: bytes) -> bytes:
    """The smallest stream id greater than ``entry_id`` (``ms-seq`` → ``ms-(seq+1)``).

    Raises:
        ValueError: not a stream id.
    """
    ms, _, seq = entry_id.partition(b"-")
    ms_i, seq_i = int(ms), int(seq or b"0")
    if seq_i >= 2**64 - 1:
        return b"%d-0" % (ms_i + 1)
    return b"%d-%d" % (ms_i, seq_i + 1)


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or b"0")


class ReaderStats:
    """Plain counters for the metrics exporter."""

    __slots__ = ("callback_errors", "connects", "entries", "errors", "reads")

    def __init__(self) -> None:
        self.reads = 0              # XREAD replies received (including empty ones)
        self.entries = 0            # entries handed to on_entries
        self.errors = 0             # lost connections, timeouts and error replies
        self.connects = 0           # successful (re)connections
        self.callback_errors = 0    # exceptions raised by on_entries


class OutboundReader:
    """Follows one stream and hands its entries, in order, to ``on_entries``.

    Args:
        url: Redis URL.
        key: the stream (``KeySpace.out(node)``).
        on_entries: called from the event loop with a :class:`StreamEntries`
            (a sequence of ``(id, {field: value})``, in stream order, that
            compiled code reads without building them); the entries are
            deleted from the stream once it returns (also when it raises:
            they were delivered).
        block_ms: XREAD BLOCK time (the connection is checked at least this often).
        count: XREAD COUNT, the largest batch.
        trim: delete delivered entries (the contract's behaviour).
        connect_timeout: seconds for one connection attempt.
        backoff_min, backoff_max: reconnect delay bounds in seconds.
        client_name: ``CLIENT SETNAME`` of the connection.
        start_id: deliver entries after this id; None (the contract's
            behaviour) starts after the newest entry present at ``start()``,
            ``b"0-0"`` delivers what is already there too (tools, benchmarks).

    Raises:
        ValueError: a malformed URL or start_id, or non-positive block_ms/count.
    """

    def __init__(self, url: str, key: bytes, on_entries: Callable[[Entries], None], *,
                 block_ms: int = 1000, count: int = 1000, trim: bool = True,
                 connect_timeout: float = 5.0, backoff_min: float = 0.05,
                 backoff_max: float = 2.0, client_name: str = "ocpp-router:out-reader",
                 start_id: bytes | None = None) -> None:
        if block_ms < 1 or count < 1:
            raise ValueError("block_ms and count must be positive")
        parse_redis_url(url)
        self.url = url
        self.key = key
        self.on_entries = on_entries
        self.block_ms = block_ms
        self.count = count
        self.trim = trim
        self.connect_timeout = connect_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.client_name = client_name
        self.stats = ReaderStats()
        self.start_id = start_id
        if start_id is not None:
            _id_key(start_id)  # a malformed id fails here
        self.last_id = b"0-0"
        self._conn: RedisConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._trim_to: bytes | None = None      # delivered up to here: XTRIM with the next read
        self._sent_trim: bytes | None = None    # the XTRIM in flight
        self._chain: asyncio.Future[StreamsError] | None = None   # set when the chain breaks
        # A blocked XREAD answers within block_ms; past this the connection
        # is considered dead (e.g. a Redis frozen by SIGSTOP or a lost route).
        self._read_timeout = block_ms / 1000 + max(2.0, connect_timeout)

    @property
    def connected(self) -> bool:
        """True while the reader's connection is open."""
        return self._conn is not None and self._conn.connected

    async def start(self) -> None:
        """Connect, note where the stream ends now, and start following it.

        Raises:
            RedisConnectionError: the first connection failed.
            ConnectionLostError, RedisTimeoutError: it broke during the start.
            RedisReplyError: the key holds something other than a stream.
            RuntimeError: started twice.
        """
        if self._task is not None:
            raise RuntimeError("OutboundReader already started")
        await self._connect()
        assert self._conn is not None
        if self.start_id is not None:
            self.last_id = self.start_id
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="redis-out-reader")
            return
        try:
            newest = await self._conn.command(b"XREVRANGE", self.key, b"+", b"-", b"COUNT", 1,
                                              timeout=self.connect_timeout)
        except StreamsError:
            conn, self._conn = self._conn, None
            conn.close()
            await conn.wait_closed()
            raise
        if newest:
            self.last_id = newest[0][0]
        self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-out-reader")

    async def stop(self) -> None:
        """Stop reading and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
            await conn.wait_closed()

    async def _connect(self) -> None:
        conn = RedisConnection()
        try:
            await conn.connect(self.url, timeout=self.connect_timeout, name=self.client_name)
        except RedisConnectionError:
            self.stats.errors += 1
            raise
        self._conn = conn
        self.stats.connects += 1

    async def _run(self) -> None:
        """Keep a read chain going; reconnect (with backoff) when it breaks."""
        delay = self.backoff_min
        healthy = True  # the connection start() made was checked by its XREVRANGE
        loop = asyncio.get_running_loop()
        while True:
            conn = self._conn
            if conn is None or not conn.connected:
                self._conn = None
                try:
                    await self._connect()
                except RedisConnectionError:
                    await self._backoff(delay)
                    delay = min(delay * 2, self.backoff_max)
                    continue
                conn = self._conn
                assert conn is not None
                healthy = False   # until one XREAD succeeds on this connection
                try:
                    await self._resync(conn)
                except StreamsError:
                    self.stats.errors += 1
                    conn.abort()
                    self._conn = None
                    await self._backoff(delay)
                    delay = min(delay * 2, self.backoff_max)
                    continue
            reads = self.stats.reads
            self._chain = loop.create_future()
            try:
                self._read(conn)
                error = await self._chain
            finally:
                self._chain = None
            if self.stats.reads > reads:
                delay = self.backoff_min
                healthy = True
            self.stats.errors += 1
            if isinstance(error, RedisReplyError):
                # WRONGTYPE, LOADING after a restart, …: retry later.
                await self._backoff(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            conn.abort()
            self._conn = None
            if not healthy:
                # Dropped before a single read worked: back off, or a server
                # that accepts and drops would make this spin.
                await self._backoff(delay)
                delay = min(delay * 2, self.backoff_max)
            # A connection that worked: reconnect at once.

    def _read(self, conn: RedisConnection) -> None:
        """Send the next XREAD (after the XTRIM of what was delivered, in the
        same write); its reply comes to :meth:`_on_reply`."""
        buf = CommandBuffer(256)
        trim_to = self._trim_to
        if trim_to is not None:
            buf.append_command(b"XTRIM", self.key, b"MINID", next_id(trim_to))
        buf.append_command(b"XREAD", b"COUNT", self.count, b"BLOCK", self.block_ms,
                           b"STREAMS", self.key, self.last_id)
        self._sent_trim = trim_to
        n = len(buf)
        try:
            conn.send_raw(buf.take(), n, self._on_reply, self._read_timeout, xread=True)
        except StreamsError as exc:
            self._end_chain(exc)
        except Exception as exc:  # a bug: break the chain visibly, never stall it
            self._end_chain(ConnectionLostError(f"out-stream read could not be sent: {exc!r}"))

    def _on_reply(self, result: Replies) -> None:
        # Runs inside the connection's data_received: the entries are handed
        # over and the next XREAD written without a wake-up of the task.
        if self._chain is None:
            return          # stopped: what was read stays in the stream
        if isinstance(result, StreamsError):
            self._end_chain(result)
            return
        if self._sent_trim is not None and not isinstance(result[0], RedisReplyError):
            self._trim_to = None      # done (an error reply: tried again with the next read)
        reply = result[-1]
        if isinstance(reply, RedisReplyError):
            self._end_chain(reply)
            return
        self.stats.reads += 1
        entries: StreamEntries = reply
        last_id = entries.last_id
        if last_id is not None:
            self.last_id = last_id
            self.stats.entries += len(entries)
            if self.trim:
                self._trim_to = last_id
            try:
                self.on_entries(entries)
            except Exception as exc:
                self.stats.callback_errors += 1
                asyncio.get_running_loop().call_exception_handler({
                    "message": "exception in OutboundReader.on_entries",
                    "exception": exc,
                })
        conn = self._conn
        if self._chain is None or conn is None:
            return          # stopped by on_entries
        self._read(conn)

    def _end_chain(self, error: StreamsError) -> None:
        chain = self._chain
        if chain is not None and not chain.done():
            chain.set_result(error)

    async def _resync(self, conn: RedisConnection) -> None:
        """After a reconnect: if the stream now ends before our last id, Redis
        lost data (restart without persistence, failover to a lagging replica)
        and may hand out ids below ours, e.g. from a clock that is behind;
        read the new stream from its start instead of skipping those."""
        newest = await conn.command(b"XREVRANGE", self.key, b"+", b"-", b"COUNT", 1,
                                    timeout=self.connect_timeout)
        if not newest:
            # Empty: either a new stream or ours fully trimmed; 0-0 misses
            # nothing in both cases.
            self.last_id = b"0-0"
            self._trim_to = None
        elif _id_key(newest[0][0]) < _id_key(self.last_id):
            self.last_id = b"0-0"
            self._trim_to = None

    async def _backoff(self, delay: float) -> None:
        # Jitter so that many nodes do not retry in lockstep.
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))
