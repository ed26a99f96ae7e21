"""The router's publisher: every XADD of one event-loop iteration in one write.

``publish_inbound`` / ``xadd`` only append pre-encoded RESP to a buffer
(``router.streams._resp``); this per-entry work and the batch's completion are
compiled (``PublisherCore``, ``router.streams._publisher``), this module adds
the lifecycle. The first append of an iteration schedules one
flush with ``loop.call_soon``, which runs after every callback already queued
for this iteration (the reads of all ready sockets), so one ``transport.write``
carries the whole batch. While a batch awaits its replies, new entries wait in
the buffer and leave in one write as soon as those replies are in: at most one
batch is in flight, so batches grow with the load and the Redis round trip,
without a timer (an idle publisher writes at once). Replies are matched to
entries in order.

Failure semantics (what the router relies on to never tell a charger
"accepted" for a message the backend will not see):

* every entry ends in exactly one of ``on_done(entry_id)`` or
  ``on_error(exc)``, always called from the event loop, never from inside
  ``publish_inbound``/``xadd`` themselves;
* an entry has ``timeout`` seconds (``--publish-timeout``) from its batch's
  first write attempt to be acknowledged. While there is no connection — Redis
  restarting, a Sentinel failover, a master demoted under us (``-READONLY``) —
  batches are *held* and written again, oldest first, as soon as a connection
  to the (new) master is up. A batch lost in flight may have been written
  already: written again, its entries are at least once and consumers drop the
  repeat by (cs, conn, id). Held entries count as pending, so reading from
  chargers pauses at ``max_pending`` as usual;
* ``on_error`` gets a :class:`~router.streams.errors.StreamsError`: an error
  reply for that entry only (:class:`RedisReplyError`), the timeout spent
  (:class:`RedisTimeoutError` when Redis did not answer,
  :class:`NotConnectedError`/:class:`ConnectionLostError` when no connection
  came back in time: the entry may still have been written; at least once),
  with ``wait_replicas`` no replica confirmation in time
  (:class:`ReplicationTimeoutError`), or the buffer at its hard limit
  (:class:`PublishOverloadError`);
* a lost connection is reopened in the background with capped exponential
  backoff and jitter; the same Publisher carries on.

With ``wait_replicas`` (``--durability replicated``) each write ends with
``WAIT <wait_replicas> <ms>``: an entry counts as published (``on_done``) only
once that many replicas have it, so it survives the master's crash and the
promotion of a replica that confirmed it. While fewer replicas confirm (a
master just promoted, its replicas still syncing), WAIT is sent again until
the publish timeout is spent; then the entries fail
(:class:`ReplicationTimeoutError`).

Memory is bounded: ``pending`` counts entries buffered or awaiting their reply.
At ``max_pending`` entries (or ``max_pending_bytes``) ``on_pause`` is called so
the router stops reading sockets; at half of both, ``on_resume``. At twice the
limits entries are refused with :class:`PublishOverloadError`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from collections.abc import Callable

from router.streams._publisher import PublisherCore
from router.streams.connection import RedisConnection
from router.streams.errors import NotConnectedError, RedisConnectionError
from router.streams.keys import KeySpace
from router.streams.redis_url import parse_redis_url

#: A connection that lived this long (seconds) counts as healthy: when it is
#: lost, the reconnect is immediate and the backoff starts over.
HEALTHY_AFTER = 1.0

#: How many recent batches ``PublisherStats`` keeps (latency, size).
RECENT_BATCHES = 1024


class PublisherStats:
    """Plain counters, read by the metrics exporter at scrape time.

    Counters only grow. ``recent`` holds ``(entries, seconds)`` of the last
    :data:`RECENT_BATCHES` answered batches (write to last reply); a
    histogram can also be fed live through ``Publisher(on_batch=...)``.
    """

    __slots__ = ("batches", "connect_failures", "connects", "entries", "expired", "failed",
                 "held", "recent", "replication_timeouts", "reply_errors", "resent", "rewaits",
                 "timeouts", "writes_bytes")

    def __init__(self) -> None:
        self.batches = 0            # batches written
        self.entries = 0            # entries written and acknowledged with an id
        self.failed = 0             # entries that ended in on_error (any reason)
        self.reply_errors = 0       # of those: Redis error replies
        self.timeouts = 0           # batches that timed out
        self.connects = 0           # successful (re)connections
        self.connect_failures = 0   # failed connection attempts
        self.writes_bytes = 0       # bytes written to Redis
        self.held = 0               # batches held for want of a connection (failover)
        self.resent = 0             # held batches written again on a new connection
        self.expired = 0            # entries failed because no connection came back in time
        self.replication_timeouts = 0   # batches no replica confirmed in time (WAIT)
        self.rewaits = 0            # WAITs sent again because no replica had confirmed yet
        self.recent: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=RECENT_BATCHES)


class Publisher(PublisherCore):
    """Publishes inbound entries (and any other XADD) to Redis in batches.

    Args:
        url: Redis URL (``redis://``, ``rediss://``, ``unix://``).
        keys: the deployment's key space (inbound shard keys).
        maxlen: ``MAXLEN ~`` of the inbound streams (``--stream-maxlen``).
        timeout: seconds a batch may wait for its replies before the
            connection is dropped and its entries fail.
        max_pending: entries buffered or in flight at which to pause.
        max_pending_bytes: encoded bytes buffered or in flight at which to pause.
        on_pause: called when a limit is reached (stop reading sockets).
        on_resume: called when back under half of both limits.
        on_batch: called with ``(entries, seconds)`` for every answered batch.
        connect_timeout: seconds for one connection attempt.
        backoff_min, backoff_max: reconnect delay bounds in seconds.
        client_name: ``CLIENT SETNAME`` of the connection.
        wait_replicas: ``--durability replicated``: an entry counts as
            published once this many replicas have it (``WAIT``); 0 for
            ``none`` (acknowledged by the master alone).
        on_reconnect: called after every connection but the first (Redis
            restarted, a new master): the owner re-registers its state there.

    Raises:
        ValueError: a non-positive limit or timeout, or a malformed URL.
    """

    def __init__(self, url: str, *, keys: KeySpace, maxlen: int | None = 1_000_000,
                 timeout: float = 2.0, max_pending: int = 50_000,
                 max_pending_bytes: int = 64 * 1024 * 1024,
                 on_pause: Callable[[], None] | None = None,
                 on_resume: Callable[[], None] | None = None,
                 on_batch: Callable[[int, float], None] | None = None,
                 connect_timeout: float = 5.0,
                 backoff_min: float = 0.05, backoff_max: float = 2.0,
                 client_name: str = "ocpp-router:publisher",
                 wait_replicas: int = 0,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        if max_pending < 1 or max_pending_bytes < 1:
            raise ValueError("publish limits must be positive")
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if wait_replicas < 0:
            raise ValueError("wait_replicas must be 0 or more")
        parse_redis_url(url)  # a malformed URL fails here, not in the reconnect loop
        self.url = url
        self.keys = keys
        self.maxlen = maxlen
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.connect_timeout = connect_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.client_name = client_name
        self.on_pause = on_pause
        self.on_resume = on_resume
        self.on_batch = on_batch
        self.wait_replicas = wait_replicas
        self.on_reconnect = on_reconnect
        # Half the publish timeout: WAIT's answer (0 replicas) must arrive
        # before the connection's own timeout would drop the connection.
        self.wait_ms = max(1, int(timeout * 500))
        self.stats = PublisherStats()
        self._inbound = keys.all_inbound()
        self._supervisor: asyncio.Task[None] | None = None
        self._lost: asyncio.Event | None = None

    # -- lifecycle --------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Connect and keep connected.

        Args:
            wait: connect before returning and raise if that fails; with False,
                return at once and connect in the background (publishes fail
                with NotConnectedError until then).

        Raises:
            RedisConnectionError: ``wait`` and the first connection failed.
            RuntimeError: started twice.
        """
        if self._loop is not None:
            raise RuntimeError("Publisher already started")
        self._loop = asyncio.get_running_loop()
        self._lost = asyncio.Event()
        if wait:
            try:
                await self._connect_once()
            except BaseException:
                self._loop = None  # not started: the caller may try again
                raise
        self._supervisor = self._loop.create_task(self._supervise(), name="redis-publisher")

    async def close(self, flush: bool = True, timeout: float = 5.0) -> None:
        """Stop publishing: optionally wait for pending entries, then disconnect.

        Entries still pending after ``timeout`` fail with ConnectionLostError;
        later publishes fail with NotConnectedError.

        Args:
            flush: write what is buffered and wait for its replies first.
            timeout: the most seconds to wait for that.
        """
        if self._closed:
            return
        if flush and self._loop is not None:
            self._flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wait_flushed()
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
            await conn.wait_closed()
        # Anything appended since, or held for a connection: fail it now
        # rather than leave it hanging.
        self._flush()
        self._drop_held(NotConnectedError("publisher closed"))

    @property
    def connected(self) -> bool:
        """True while a Redis connection is open (readiness)."""
        return self._conn is not None and self._conn.connected

    async def wait_flushed(self) -> None:
        """Return once no entry is buffered or awaiting its reply (drain)."""
        if self.pending == 0:
            return
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._flushed_waiters.append(fut)
        await fut

    # -- connection supervision -------------------------------------------------

    async def _connect_once(self) -> None:
        assert self._lost is not None
        conn = RedisConnection(on_lost=lambda _reason: self._on_lost(conn))
        try:
            await conn.connect(self.url, timeout=self.connect_timeout, name=self.client_name)
        except RedisConnectionError:
            self.stats.connect_failures += 1
            raise
        self._conn = conn
        self._lost.clear()
        self.stats.connects += 1
        self._resend_held()
        if self.stats.connects > 1 and self.on_reconnect is not None:
            self.on_reconnect()

    def _on_lost(self, conn: RedisConnection) -> None:
        if self._conn is conn:
            self._conn = None
        if self._lost is not None:
            self._lost.set()

    async def _supervise(self) -> None:
        assert self._lost is not None
        delay = self.backoff_min
        while not self._closed:
            if self._conn is not None:
                since = asyncio.get_running_loop().time()
                await self._lost.wait()
                if asyncio.get_running_loop().time() - since >= HEALTHY_AFTER:
                    delay = self.backoff_min  # it worked for a while: retry at once
                    continue
                # Lost right after connecting (maxclients, a proxy in trouble):
                # back off, or this loop would spin.
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.backoff_max)
                continue
            try:
                await self._connect_once()
            except (RedisConnectionError, ValueError):
                # Capped exponential backoff with jitter, so a fleet of routers
                # does not reconnect in lockstep after a Redis restart.
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.backoff_max)
