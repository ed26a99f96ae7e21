"""Redis Cluster on the hot path: one topology, one connection per master.

``redis+cluster://`` / ``rediss+cluster://`` (:mod:`router.streams.redis_url`).
The shape is redis-py's cluster client and Valkey GLIDE's: one
:class:`ClusterTopology` knows which master serves each of the 16384 slots and
holds one pipelined :class:`~router.streams.connection.RedisConnection` per
master (the compiled RESP encoder and parser stay on the hot path); everything
else asks it "which connection for this slot?" and nothing more.

Every retry decision is in one place, :meth:`ClusterTopology.decide`, after
the cluster specification's redirections
(https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#redirection-and-resharding):

* ``MOVED <slot> <host:port>``: the slot has a new owner for good. The map is
  updated at once for that slot, a full refresh (``CLUSTER SLOTS``) is
  scheduled, and the command goes to the new owner.
* ``ASK <slot> <host:port>``: the slot is migrating and this key is already on
  the target. The command is sent there once, after ``ASKING``; the map is not
  changed.
* ``TRYAGAIN`` (a multi-key command during a migration), ``CLUSTERDOWN`` (no
  quorum or an uncovered slot during a failover), ``LOADING``, ``MASTERDOWN``:
  back off (capped exponential) and retry.
* A lost connection to a master: refresh the topology (with backoff, until
  every slot has a reachable master again: a failover takes about
  ``cluster-node-timeout`` plus an election) and retry on the new owner.

Every retry is bounded by the caller's deadline: the publisher's
``--publish-timeout`` (held batches, the same machinery that rides through a
Sentinel failover) or the command timeout of the control plane.

The publisher keeps its compiled batching: :class:`ClusterPublisher` runs one
:class:`~router.streams._publisher.PublisherCore` *lane* per slot in use (one
per inbound shard, plus out streams and ``reply_to`` streams), and each lane's
batch — all of one slot, so all of one master — is one write on that master's
connection. Lanes of the same master share its socket. A redirect applies to
a whole batch (one slot); when part of a batch had already been added before
the slot moved, the whole batch is written again on the new owner: its entries
are at least once, and consumers drop the repeat by (``cs``, ``conn``, ``id``)
as after any failover (docs/streams.md).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from router.streams._publisher import PublisherCore
from router.streams._resp import CommandBuffer
from router.streams.connection import RedisConnection, Replies, SharedConnection
from router.streams.errors import (
    ConnectionLostError,
    NotConnectedError,
    RedisConnectionError,
    RedisReplyError,
    RedisTimeoutError,
    StreamsError,
)
from router.streams.keys import KeySpace
from router.streams.publisher import PublisherStats
from router.streams.reader import OutboundReader
from router.streams.redis_url import RedisURL, parse_redis_url

log = logging.getLogger("router.streams.cluster")

#: Redis Cluster's hash slots (cluster spec, "Key distribution model").
SLOTS = 16384

Address = tuple[str, int]


def key_slot(key: bytes | str) -> int:
    """The hash slot of ``key``: CRC16 (XMODEM) of the key, or of its hash tag
    (the part between the first ``{`` and the next ``}``, when not empty),
    modulo 16384 (cluster spec, "Hash tags").

    ``binascii.crc_hqx`` with an initial value of 0 is exactly the CRC16 the
    spec names (CCITT polynomial 0x1021, XMODEM variant).
    """
    if isinstance(key, str):
        key = key.encode()
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return binascii.crc_hqx(key, 0) & (SLOTS - 1)


class ClusterBusyError(ConnectionLostError):
    """The cluster asked us to come back later (``TRYAGAIN``, ``CLUSTERDOWN``,
    ``LOADING``) or a slot just moved: the batch is held and written again."""

    code = "cluster_retry"


@dataclass(frozen=True)
class Decision:
    """What to do about one error reply (see :meth:`ClusterTopology.decide`).

    Attributes:
        action: ``moved`` (send to ``address``, the slot's new owner), ``ask``
            (send once to ``address`` after ``ASKING``) or ``retry`` (back off
            ``delay`` seconds, then send to the slot's owner again).
        slot: the slot named by the redirect (-1 for ``retry``).
        address: where to send next (None for ``retry``).
        delay: seconds to wait first.
    """

    action: Literal["moved", "ask", "retry"]
    slot: int = -1
    address: Address | None = None
    delay: float = 0.0


_RETRY_PREFIXES = ("TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN")


def is_redirect(reply: object) -> bool:
    """True for an error reply the cluster client handles itself."""
    if type(reply) is not RedisReplyError:
        return False
    text = str(reply)
    return text.startswith(("MOVED ", "ASK ")) or text.startswith(_RETRY_PREFIXES)


class TopologyStats:
    """Counters of the topology (read at scrape time or by tests)."""

    __slots__ = ("asks", "moved", "refresh_failures", "refreshes", "retries")

    def __init__(self) -> None:
        self.refreshes = 0          # successful CLUSTER SLOTS refreshes
        self.refresh_failures = 0   # refreshes that found no node or left slots without a master
        self.moved = 0              # MOVED replies followed
        self.asks = 0               # ASK replies followed
        self.retries = 0            # TRYAGAIN / CLUSTERDOWN / LOADING back-offs


class ClusterTopology:
    """The slot map of one cluster and one connection per master.

    Args:
        url: a ``redis+cluster://`` URL (its addresses are the seeds).
        name: ``CLIENT SETNAME`` of the connections.
        connect_timeout: seconds for one connection attempt or refresh query.
        backoff_min, backoff_max: bounds of the refresh and retry back-off.

    Raises:
        ValueError: not a cluster URL.
    """

    def __init__(self, url: str | RedisURL, *, name: str = "ocpp-router",
                 connect_timeout: float = 5.0, backoff_min: float = 0.05,
                 backoff_max: float = 0.5) -> None:
        self.url = url if isinstance(url, RedisURL) else parse_redis_url(url)
        if self.url.mode != "cluster":
            raise ValueError("ClusterTopology needs a redis+cluster:// URL")
        self.name = name
        self.connect_timeout = connect_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.stats = TopologyStats()
        #: The master of each slot (None: unknown or uncovered).
        self.owner: list[Address | None] = [None] * SLOTS
        #: The hot path's table: the open connection of each slot's master.
        self.slot_conn: list[RedisConnection | None] = [None] * SLOTS
        self._conns: dict[Address, RedisConnection] = {}
        self._opening: dict[Address, asyncio.Future[RedisConnection]] = {}
        self._known: list[Address] = list(self.url.addresses)
        self._listeners: list[Callable[[], None]] = []
        self._reconnect_listeners: list[Callable[[], None]] = []
        self._dirty: asyncio.Event | None = None
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Future[None] | None = None
        self._closed = False
        self._first = True

    # -- what the rest asks ------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True when every slot has an open connection to its master."""
        return all(c is not None and c.connected for c in self.slot_conn)

    @property
    def masters(self) -> list[Address]:
        """The masters that serve slots, in slot order."""
        seen: dict[Address, None] = {}
        for addr in self.owner:
            if addr is not None:
                seen.setdefault(addr)
        return list(seen)

    def conn_for_slot(self, slot: int) -> RedisConnection | None:
        """The open connection to the master of ``slot``, or None (hot path)."""
        conn = self.slot_conn[slot]
        if conn is not None and conn.connected:
            return conn
        return None

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the event loop) whenever connections to
        masters were opened or the map changed: held work can be retried."""
        self._listeners.append(callback)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after a master changed or came back (a failover,
        a restart): the caller re-registers its state there."""
        self._reconnect_listeners.append(callback)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Learn the topology and connect to every master; keep it current.

        Args:
            wait: refresh before returning and raise if that fails; with
                False, do it in the background.

        Raises:
            RedisConnectionError: ``wait`` and no seed answered.
        """
        self._dirty = asyncio.Event()
        self._ready = asyncio.Event()
        if wait:
            await self.refresh()
        else:
            self._dirty.set()
        self._task = asyncio.get_running_loop().create_task(self._supervise(),
                                                             name="redis-cluster-topology")

    async def close(self) -> None:
        """Stop refreshing and close every connection."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for fut in list(self._opening.values()):
            fut.cancel()
        conns = list(self._conns.values())
        self._conns.clear()
        self.slot_conn = [None] * SLOTS
        for conn in conns:
            conn.close()
        for conn in conns:
            await conn.wait_closed()

    def invalidate(self, why: str) -> None:
        """Ask for a refresh (a lost connection, a MOVED)."""
        if self._dirty is not None and not self._dirty.is_set():
            log.info("cluster topology refresh: %s", why)
            self._dirty.set()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every slot to have a master."""
        if self.ready:
            return True
        if self._dirty is not None:
            self._dirty.set()
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.ready and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return self.ready

    # -- the one place of retry decisions ---------------------------------------

    def decide(self, error: RedisReplyError, attempt: int, *,
               source: Address | None = None) -> Decision | None:
        """What to do about ``error``, the ``attempt``-th failure (from 0) of
        one command or batch; None: not a cluster condition, report it.

        A MOVED also updates the map for its slot (at once, before the
        refresh it schedules), so the very next send goes to the new owner.
        """
        text = str(error)
        head, _, rest = text.partition(" ")
        if head in ("MOVED", "ASK"):
            slot_text, _, where = rest.partition(" ")
            host, _, port_text = where.rpartition(":")
            try:
                slot = int(slot_text)
                port = int(port_text)
            except ValueError:
                return None
            if not host and source is not None:
                # "MOVED 3999 :6381": the node does not know its own IP and
                # means "the host you are talking to".
                host = source[0]
            address = (host, port)
            if head == "MOVED":
                self.stats.moved += 1
                self._moved(slot, address)
                return Decision("moved", slot, address)
            self.stats.asks += 1
            return Decision("ask", slot, address)
        if text.startswith(_RETRY_PREFIXES):
            self.stats.retries += 1
            if head == "CLUSTERDOWN":
                self.invalidate(text)
            delay = min(self.backoff_min * (2 ** min(attempt, 16)), self.backoff_max)
            return Decision("retry", delay=delay * random.uniform(0.5, 1.0))
        return None

    def _moved(self, slot: int, address: Address) -> None:
        if self.owner[slot] == address:
            return
        self.owner[slot] = address
        conn = self._conns.get(address)
        self.slot_conn[slot] = conn if conn is not None and conn.connected else None
        if conn is None:
            self._open_soon(address)
        self.invalidate(f"slot {slot} moved to {address[0]}:{address[1]}")

    # -- connections -------------------------------------------------------------

    async def connection(self, address: Address) -> RedisConnection:
        """The open connection to ``address``, opened if needed (one attempt
        shared by all callers).

        Raises:
            RedisConnectionError: the connection failed.
        """
        conn = self._conns.get(address)
        if conn is not None and conn.connected:
            return conn
        fut = self._opening.get(address)
        if fut is None:
            fut = self._opening[address] = asyncio.ensure_future(self._open(address))
            fut.add_done_callback(lambda _f: self._opening.pop(address, None))
        return await asyncio.shield(fut)

    async def connection_for_slot(self, slot: int, timeout: float) -> RedisConnection:
        """The connection to the master of ``slot``, waiting up to ``timeout``
        seconds for the topology to know one (a failover).

        Raises:
            RedisConnectionError: no master for the slot in time.
        """
        conn = self.conn_for_slot(slot)
        if conn is not None:
            return conn
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = self.backoff_min
        while True:
            address = self.owner[slot]
            if address is not None:
                try:
                    return await self.connection(address)
                except RedisConnectionError:
                    self.invalidate(f"cannot connect to {address[0]}:{address[1]}")
            else:
                self.invalidate(f"no master known for slot {slot}")
            if loop.time() + delay > deadline:
                raise NotConnectedError(f"no master of slot {slot} reachable in time")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    async def _open(self, address: Address) -> RedisConnection:
        conn = RedisConnection(on_lost=lambda reason: self._lost(address, conn, reason))
        await conn.connect(self.url.server(*address), timeout=self.connect_timeout,
                           name=self.name)
        if self._closed:
            conn.close()
            raise NotConnectedError("cluster client closed")
        old = self._conns.get(address)
        self._conns[address] = conn
        if old is not None and old is not conn:
            old.close()
        for slot, owner in enumerate(self.owner):
            if owner == address:
                self.slot_conn[slot] = conn
        self._notify()
        return conn

    def _open_soon(self, address: Address) -> None:
        async def open_it() -> None:
            with contextlib.suppress(StreamsError):
                await self.connection(address)
        if not self._closed:
            asyncio.get_running_loop().create_task(open_it())

    def _lost(self, address: Address, conn: RedisConnection, reason: StreamsError) -> None:
        if self._conns.get(address) is conn:
            del self._conns[address]
            self.slot_conn = [None if c is conn else c for c in self.slot_conn]
        self.invalidate(f"lost {address[0]}:{address[1]}: {reason}")

    def _notify(self) -> None:
        loop = asyncio.get_running_loop()
        for cb in self._listeners:
            loop.call_soon(cb)

    # -- refreshing --------------------------------------------------------------

    async def refresh(self) -> None:
        """Ask the known nodes, in turn, for ``CLUSTER SLOTS``; take the first
        answer, connect to every master in it and drop the others.

        Raises:
            RedisConnectionError: no node answered.
        """
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            await self._refresh()
            self._refreshing.set_result(None)
        except BaseException as exc:
            self._refreshing.set_exception(exc)
            self._refreshing.exception()   # retrieved: callers re-raise their own
            raise
        finally:
            self._refreshing = None

    async def _refresh(self) -> None:
        # Masters we hold connections to first, then every node ever seen
        # (replicas included: after a failover one of them is the master).
        # A node may still hold a stale view during a failover (a dead master
        # as owner): a view whose masters are not all reachable is kept only
        # if no other node offers a better one.
        errors: list[str] = []
        best: tuple[int, list[Address | None], dict[Address, RedisConnection]] | None = None
        order = list(self._conns) + [a for a in self._known if a not in self._conns]
        for address in order:
            try:
                reply = await self._cluster_slots(address)
            except StreamsError as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            owner = self._parse_slots(reply, address)
            if owner is None:
                errors.append(f"{address[0]}:{address[1]}: no slots (not a cluster node?)")
                continue
            conns = await self._connect_all(owner)
            missing = sum(1 for a in owner if a is None or a not in conns)
            if best is None or missing < best[0]:
                best = (missing, owner, conns)
            if missing == 0:
                break
        if best is None:
            self.stats.refresh_failures += 1
            raise RedisConnectionError("no cluster node answered CLUSTER SLOTS: "
                                       + "; ".join(errors[-4:]))
        _missing, owner, conns = best
        changed = owner != self.owner
        before = set(self.masters)
        self.owner = owner
        masters = self.masters
        self.slot_conn = [conns.get(a) if a is not None else None for a in owner]
        for address in [a for a in self._conns if a not in masters]:
            self._conns.pop(address).close()   # demoted or gone: a replica now
        self.stats.refreshes += 1
        if changed:
            log.info("cluster topology: %d masters (%s)", len(masters),
                     ", ".join(f"{h}:{p}" for h, p in masters))
        self._notify()
        if not self.ready:
            self.stats.refresh_failures += 1
            raise RedisConnectionError("slots without a reachable master")
        if self._first:
            self._first = False
        elif changed or set(masters) != before:
            for cb in self._reconnect_listeners:
                asyncio.get_running_loop().call_soon(cb)

    async def _cluster_slots(self, address: Address) -> Any:
        conn = self._conns.get(address)
        if conn is not None and conn.connected:
            return await conn.command(b"CLUSTER", b"SLOTS", timeout=self.connect_timeout)
        probe = RedisConnection()
        try:
            await probe.connect(self.url.server(*address), timeout=self.connect_timeout,
                                name=self.name)
            return await probe.command(b"CLUSTER", b"SLOTS", timeout=self.connect_timeout)
        finally:
            probe.close()

    async def _connect_all(self, owner: list[Address | None]) -> dict[Address, RedisConnection]:
        masters = list(dict.fromkeys(a for a in owner if a is not None))
        results = await asyncio.gather(*(self.connection(a) for a in masters),
                                       return_exceptions=True)
        conns: dict[Address, RedisConnection] = {}
        for address, result in zip(masters, results, strict=True):
            if isinstance(result, RedisConnection):
                conns[address] = result
            elif not isinstance(result, StreamsError | ValueError):
                raise result
        return conns

    def _parse_slots(self, reply: Any, source: Address) -> list[Address | None] | None:
        # CLUSTER SLOTS (https://redis.io/commands/cluster-slots/):
        # [[start, end, [host, port, id, …], [replica host, port, …], …], …]
        if not isinstance(reply, list) or not reply:
            return None
        owner: list[Address | None] = [None] * SLOTS
        for item in reply:
            start, end = int(item[0]), int(item[1])
            nodes = []
            for node in item[2:]:
                host = node[0].decode() if isinstance(node[0], bytes) else str(node[0] or "")
                nodes.append((host or source[0], int(node[1])))
            if not nodes:
                continue
            for slot in range(start, end + 1):
                owner[slot] = nodes[0]
            for node_addr in nodes:
                if node_addr not in self._known:
                    self._known.append(node_addr)
        return owner

    async def _supervise(self) -> None:
        assert self._dirty is not None
        delay = self.backoff_min
        while not self._closed:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self.refresh()
            except (StreamsError, ValueError) as exc:
                # A failover takes seconds of failed refreshes: say it once.
                level = logging.INFO if delay == self.backoff_min else logging.DEBUG
                log.log(level, "cluster topology refresh failed (retrying every %.2f s at "
                        "most): %s", self.backoff_max, exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.backoff_max)
                self._dirty.set()
                continue
            delay = self.backoff_min


# -- the publisher -----------------------------------------------------------------


class _SlotPipe:
    """A lane's ``_conn``: the connection of its slot's master, wherever that is.

    ``PublisherCore`` calls ``connected`` and ``send_raw``; replies pass
    through here first, where redirects become a retry (MOVED, TRYAGAIN, …:
    the batch is held by the lane and written again) or an ``ASKING`` resend.
    """

    __slots__ = ("lane", "slot", "topology")

    def __init__(self, topology: ClusterTopology, slot: int, lane: ClusterLane) -> None:
        self.topology = topology
        self.slot = slot
        self.lane = lane

    @property
    def connected(self) -> bool:
        return self.topology.conn_for_slot(self.slot) is not None

    def send_raw(self, data: bytes, n_replies: int, callback: Callable[[Replies], None],
                 timeout: float | None = None, *, xread: bool = False) -> None:
        conn = self.topology.conn_for_slot(self.slot)
        if conn is None:
            raise NotConnectedError(f"no connection to the master of slot {self.slot}")
        attempt = _Attempt(self, data, n_replies, callback, conn)
        conn.send_raw(data, n_replies, attempt.done, timeout)


class _Attempt:
    __slots__ = ("callback", "conn", "data", "n", "pipe")

    def __init__(self, pipe: _SlotPipe, data: bytes, n: int,
                 callback: Callable[[Replies], None], conn: RedisConnection) -> None:
        self.pipe = pipe
        self.data = data
        self.n = n
        self.callback = callback
        self.conn = conn

    def done(self, result: Replies) -> None:
        # Speed: a constant check per batch, not a scan of every reply. All
        # entries of a batch are of one slot, and a slot's move is one-way
        # within a pipeline: once an entry is redirected, every later one is
        # too, so the last entry's reply (before WAIT's) tells.
        if isinstance(result, StreamsError) or (
                type(result[-1]) is not RedisReplyError
                and (len(result) < 2 or type(result[-2]) is not RedisReplyError)):
            self.callback(result)
            return
        try:
            self._redirected(result)
        except Exception as exc:
            # A bug here must not leave the batch unsettled (its entries
            # would never be answered): hold it like a lost connection.
            log.exception("cluster redirect handling failed")
            self.callback(ClusterBusyError(f"redirect handling failed: {exc}"))

    def _redirected(self, result: list[Any]) -> None:
        for reply in result:
            if is_redirect(reply):
                break
        else:
            self.pipe.lane.retries = 0
            self.callback(result)      # ordinary error replies: per entry
            return
        topology = self.pipe.topology
        source = self.conn.address.addresses[0] if self.conn.address is not None else None
        decision = topology.decide(reply, self.pipe.lane.retries, source=source)
        if decision is None:
            self.callback(result)
            return
        lane = self.pipe.lane
        lane.retries += 1
        if decision.action == "ask" and decision.address is not None:
            target = topology._conns.get(decision.address)
            if target is not None and target.connected:
                self._ask(target)
                return
            topology._open_soon(decision.address)
            decision = Decision("retry", delay=topology.backoff_min)
        # MOVED and retries: the lane holds the batch (the publish timeout
        # bounds it) and writes it again after the delay or when the new
        # owner's connection is up.
        self.callback(ClusterBusyError(str(reply)))
        lane.retry_after(decision.delay)

    def _ask(self, target: RedisConnection) -> None:
        # ASKING is one-shot, but it lasts through a MULTI block (Redis keeps
        # the flag while the client is in MULTI), so one ASKING covers the
        # whole batch: ASKING, MULTI, the batch, EXEC; the batch's replies are
        # EXEC's array.
        buf = CommandBuffer(64)
        buf.append_command(b"ASKING")
        buf.append_command(b"MULTI")
        head = buf.take()
        buf.append_command(b"EXEC")
        tail = buf.take()

        def unwrap(result: Replies) -> None:
            if isinstance(result, StreamsError):
                self.callback(result)
                return
            execed = result[-1]
            if isinstance(execed, list) and len(execed) == self.n:
                self.pipe.lane.retries = 0
                self.callback(execed)
                return
            # EXECABORT (the slot finished moving meanwhile: MOVED at queue
            # time) or a WAIT inside MULTI: retry through the map.
            self.callback(ClusterBusyError(f"ASK resend failed: {execed!r}"[:200]))
            self.pipe.lane.retry_after(self.pipe.topology.backoff_min)

        try:
            target.send_raw(head + self.data + tail, self.n + 3, unwrap,
                            self.pipe.lane.timeout)
        except StreamsError as exc:
            self.callback(ClusterBusyError(f"ASK target not connected: {exc}"))


class ClusterLane(PublisherCore):
    """The publisher of one slot: compiled batching on the slot master's
    connection (see :class:`ClusterPublisher`)."""

    def __init__(self, owner: ClusterPublisher, slot: int) -> None:
        self.keys = owner.keys
        self.maxlen = owner.maxlen
        self.timeout = owner.timeout
        self.max_pending = owner.lane_max_pending
        self.max_pending_bytes = owner.lane_max_pending_bytes
        self.on_pause = lambda: owner._lane_paused(self)
        self.on_resume = lambda: owner._lane_resumed(self)
        self.on_batch = owner.on_batch
        self.wait_replicas = owner.wait_replicas
        self.wait_ms = max(1, int(owner.timeout * 500))
        self.stats = PublisherStats()
        self._inbound = owner.keys.all_inbound()
        self._conn = _SlotPipe(owner.topology, slot, self)
        self._loop = owner._loop
        self.slot = slot
        self.retries = 0
        self._retry_timer: asyncio.TimerHandle | None = None

    def retry_after(self, delay: float) -> None:
        """Write the held batches again in ``delay`` seconds; one timer per
        lane, so the replies of many batches (every batch answers
        CLUSTERDOWN during a failover) do not each start a resend."""
        if self._retry_timer is None:
            assert self._loop is not None
            self._retry_timer = self._loop.call_later(delay, self.retry_held)

    def retry_held(self) -> None:
        """Write the held batches again if the slot's master is reachable."""
        self._retry_timer = None
        if self._held and not self._closed and self._conn.connected:
            self._resend_held()

    def connection_changed(self) -> None:
        self.retries = 0
        if self._held and self._conn.connected:
            self._resend_held()


class ClusterPublisher:
    """The router's publisher on Redis Cluster: one lane per slot in use.

    The same interface as :class:`~router.streams.publisher.Publisher`
    (``publish_inbound``, ``xadd``, ``pending``, ``connected``, ``start``,
    ``close``, ``wait_flushed``) plus :meth:`lane_for_shard`, which the charger
    hot path binds once per connection (its shard never changes).

    ``max_pending`` and ``max_pending_bytes`` bound the whole publisher: each
    of the ``S`` inbound lanes gets ``1/S`` of them (at least 1000 entries and
    1 MiB), and reading from chargers pauses while any lane is at its limit.
    """

    def __init__(self, url: str, *, keys: KeySpace, maxlen: int | None = 1_000_000,
                 timeout: float = 2.0, max_pending: int = 50_000,
                 max_pending_bytes: int = 64 * 1024 * 1024,
                 on_pause: Callable[[], None] | None = None,
                 on_resume: Callable[[], None] | None = None,
                 on_batch: Callable[[int, float], None] | None = None,
                 connect_timeout: float = 5.0,
                 client_name: str = "ocpp-router:publisher",
                 wait_replicas: int = 0,
                 on_reconnect: Callable[[], None] | None = None,
                 topology: ClusterTopology | None = None) -> None:
        if max_pending < 1 or max_pending_bytes < 1:
            raise ValueError("publish limits must be positive")
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.url = url
        self.topology = topology or ClusterTopology(url, name=client_name,
                                                    connect_timeout=connect_timeout)
        self._own_topology = topology is None
        self.keys = keys
        self.maxlen = maxlen
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.lane_max_pending = max(1000, max_pending // keys.shards)
        self.lane_max_pending_bytes = max(1 << 20, max_pending_bytes // keys.shards)
        self.on_pause = on_pause
        self.on_resume = on_resume
        self.on_batch = on_batch
        self.wait_replicas = wait_replicas
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lanes: dict[int, ClusterLane] = {}
        self._paused: set[int] = set()
        self._closed = False
        self._shard_lanes = [self._lane(key_slot(k)) for k in keys.all_inbound()]
        self.topology.on_change(self._connections_changed)
        if on_reconnect is not None:
            self.topology.on_reconnect(on_reconnect)

    # -- routing -----------------------------------------------------------------

    def _lane(self, slot: int) -> ClusterLane:
        lane = self._lanes.get(slot)
        if lane is None:
            lane = self._lanes[slot] = ClusterLane(self, slot)
        return lane

    def lane_for_shard(self, shard: int) -> ClusterLane:
        """The lane of inbound shard ``shard`` (bound once per charger)."""
        return self._shard_lanes[shard]

    def publish_inbound(self, cs: Any, kind: Any, proto: Any, node: Any, conn: Any,
                        ts_ms: int, id: Any = None, action: Any = None, payload: Any = None,
                        extra: Sequence[Any] = (), *, shard: int | None = None,
                        on_error: Callable[[StreamsError], None] | None = None,
                        on_done: Callable[[bytes], None] | None = None) -> None:
        """As :meth:`Publisher.publish_inbound`."""
        if shard is None:
            shard = self.keys.shard_of(cs)
        self._shard_lanes[shard].publish_inbound(
            cs, kind, proto, node, conn, ts_ms, id, action, payload, extra, shard=shard,
            on_error=on_error, on_done=on_done)

    def xadd(self, key: bytes, fields: Sequence[Any], maxlen: int | None,
             on_error: Callable[[StreamsError], None] | None = None,
             on_done: Callable[[bytes], None] | None = None) -> None:
        """As :meth:`Publisher.xadd`, on the lane of ``key``'s slot."""
        if self._loop is None:
            raise RuntimeError("Publisher not started")
        self._lane(key_slot(key)).xadd(key, fields, maxlen, on_error, on_done)

    # -- state -------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return sum(lane.pending for lane in self._lanes.values())

    @property
    def connected(self) -> bool:
        return self.topology.ready

    @property
    def stats(self) -> PublisherStats:
        """The lanes' counters summed (a new object per call: read at scrape time)."""
        total = PublisherStats()
        for lane in self._lanes.values():
            for name in PublisherStats.__slots__:
                if name != "recent":
                    setattr(total, name, getattr(total, name) + getattr(lane.stats, name))
        return total

    @property
    def paused(self) -> bool:
        return bool(self._paused)

    def _lane_paused(self, lane: ClusterLane) -> None:
        first = not self._paused
        self._paused.add(lane.slot)
        if first and self.on_pause is not None:
            self.on_pause()

    def _lane_resumed(self, lane: ClusterLane) -> None:
        self._paused.discard(lane.slot)
        if not self._paused and self.on_resume is not None:
            self.on_resume()

    def _connections_changed(self) -> None:
        for lane in list(self._lanes.values()):
            lane.connection_changed()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Learn the topology and connect (see :meth:`Publisher.start`).

        Raises:
            RedisConnectionError: ``wait`` and no seed answered.
        """
        if self._loop is not None:
            raise RuntimeError("Publisher already started")
        self._loop = asyncio.get_running_loop()
        for lane in self._lanes.values():
            lane._loop = self._loop
        if self._own_topology:
            await self.topology.start(wait=wait)

    async def wait_flushed(self) -> None:
        """Return once no entry is buffered or awaiting its reply."""
        await asyncio.gather(*(_flushed(lane) for lane in list(self._lanes.values())))

    async def close(self, flush: bool = True, timeout: float = 5.0) -> None:
        """Stop publishing (see :meth:`Publisher.close`)."""
        if self._closed:
            return
        if flush and self._loop is not None:
            for lane in self._lanes.values():
                lane._flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wait_flushed()
        self._closed = True
        for lane in self._lanes.values():
            lane._closed = True
            lane._flush()
            lane._drop_held(NotConnectedError("publisher closed"))
            if lane._retry_timer is not None:
                lane._retry_timer.cancel()
                lane._retry_timer = None
        if self._own_topology:
            await self.topology.close()


async def _flushed(lane: ClusterLane) -> None:
    if lane.pending == 0:
        return
    assert lane._loop is not None
    fut: asyncio.Future[None] = lane._loop.create_future()
    lane._flushed_waiters.append(fut)
    await fut


# -- the out stream reader ---------------------------------------------------------


class ClusterReader(OutboundReader):
    """The node's out-stream reader on the master that owns the stream's slot;
    after a redirect or a lost connection it asks the topology again."""

    def __init__(self, topology: ClusterTopology, key: bytes,
                 on_entries: Callable[[Any], None], **kwargs: Any) -> None:
        super().__init__(str(topology.url).replace("redis+cluster", "redis", 1)
                         .replace("rediss+cluster", "rediss", 1).split(",")[0],
                         key, on_entries, **kwargs)
        self.topology = topology
        self.slot = key_slot(key)

    async def _connect(self) -> None:
        topology = self.topology
        address = topology.owner[self.slot]
        if address is None:
            with contextlib.suppress(StreamsError):
                await topology.refresh()
            address = topology.owner[self.slot]
            if address is None:
                self.stats.errors += 1
                raise NotConnectedError(f"no master known for slot {self.slot}")
        conn = RedisConnection()
        try:
            await conn.connect(topology.url.server(*address), timeout=self.connect_timeout,
                               name=self.client_name)
        except RedisConnectionError:
            self.stats.errors += 1
            topology.invalidate(f"reader cannot connect to {address[0]}:{address[1]}")
            raise
        self._conn = conn
        self.stats.connects += 1

    def _end_chain(self, error: StreamsError) -> None:
        if isinstance(error, RedisReplyError) and is_redirect(error):
            # MOVED after a failover or a reshard, CLUSTERDOWN, …: drop this
            # connection; the next one goes where the topology says.
            source = None
            if self._conn is not None and self._conn.address is not None:
                source = self._conn.address.addresses[0]
            self.topology.decide(error, 0, source=source)
            if self._conn is not None:
                self._conn.abort()
        elif isinstance(error, ConnectionLostError | RedisTimeoutError):
            self.topology.invalidate(f"out-stream reader: {error}")
        super()._end_chain(error)


# -- the control plane's shared connection ------------------------------------------


def command_key(args: Sequence[bytes | str | int]) -> bytes | None:
    """The key that decides where a command goes: the first key of
    ``EVAL``/``EVALSHA`` (``numkeys`` ≥ 1), else the first argument; None for
    a command without keys (``PING``)."""
    name = args[0].upper() if isinstance(args[0], bytes) else str(args[0]).upper().encode()
    if name in (b"EVAL", b"EVALSHA", b"FCALL"):
        if len(args) > 3 and int(args[2]) > 0:
            key = args[3]
        else:
            return None
    elif len(args) > 1 and name not in (b"PING", b"INFO", b"CLUSTER", b"SCRIPT", b"WAIT"):
        key = args[1]
    else:
        return None
    return key if isinstance(key, bytes) else str(key).encode()


class ClusterSharedConnection(SharedConnection):
    """:class:`SharedConnection`'s interface on a cluster: each command goes
    to the master of its key's slot, redirects and lost connections are
    retried (bounded by the command's timeout); a pipeline is split per master
    and its replies put back in order."""

    def __init__(self, topology: ClusterTopology, *, timeout: float = 5.0) -> None:
        self.url = str(topology.url)
        self.name = topology.name
        self.connect_timeout = topology.connect_timeout
        self._conn = None
        self._opening = None
        self.topology = topology
        self.timeout = timeout

    @property
    def connected(self) -> bool:
        return self.topology.ready

    async def command(self, *args: bytes | str | int, timeout: float | None = None) -> Any:
        """Run one command on the master of its key.

        Raises:
            StreamsError: no master in time, the connection broke, timeout, or
                an error reply that is not a cluster redirect.
        """
        reply = (await self._run([args], timeout))[0]
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Sequence[bytes | str | int]],
                       timeout: float | None = None) -> list[Any]:
        """Run several commands, one pipeline per master.

        Raises:
            StreamsError: a master unreachable in time or a connection broke.
        """
        return await self._run(commands, timeout)

    async def _run(self, commands: Sequence[Sequence[bytes | str | int]],
                   timeout: float | None) -> list[Any]:
        topology = self.topology
        loop = asyncio.get_running_loop()
        budget = timeout if timeout is not None else self.timeout
        deadline = loop.time() + budget
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        attempt = 0
        while todo:
            left = deadline - loop.time()
            if left <= 0:
                raise RedisTimeoutError("Redis Cluster did not answer in time")
            groups: dict[int, list[int]] = {}
            for i in todo:
                key = command_key(commands[i])
                slot = key_slot(key) if key is not None else 0
                groups.setdefault(slot, []).append(i)
            by_conn: dict[int, tuple[RedisConnection, list[int]]] = {}
            for slot, idx in groups.items():
                conn = await topology.connection_for_slot(slot, left)
                by_conn.setdefault(id(conn), (conn, []))[1].extend(idx)
            ask_targets: dict[int, Address] = {}
            jobs = []
            for conn, idx in by_conn.values():
                jobs.append(self._send(conn, commands, idx, left))
            results = await asyncio.gather(*jobs, return_exceptions=True)
            retry: list[int] = []
            delay = 0.0
            lost: BaseException | None = None
            for (conn, idx), result in zip(by_conn.values(), results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, ConnectionLostError | NotConnectedError):
                        raise result
                    lost = result
                    topology.invalidate(f"control-plane connection: {result}")
                    retry.extend(idx)
                    continue
                source = conn.address.addresses[0] if conn.address is not None else None
                for i, reply in zip(idx, result, strict=True):
                    if is_redirect(reply):
                        decision = topology.decide(reply, attempt, source=source)
                        if decision is not None:
                            if decision.action == "ask" and decision.address is not None:
                                ask_targets[i] = decision.address
                            delay = max(delay, decision.delay)
                            retry.append(i)
                            continue
                    replies[i] = reply
            if not retry:
                break
            attempt += 1
            if lost is not None:
                delay = max(delay, min(topology.backoff_min * 2 ** attempt,
                                       topology.backoff_max))
            # ASK: once, straight to the target, after ASKING.
            for i, address in ask_targets.items():
                with contextlib.suppress(StreamsError):
                    conn = await topology.connection(address)
                    reply = (await conn.pipeline([(b"ASKING",), commands[i]],
                                                 timeout=max(deadline - loop.time(), 0.01)))[1]
                    if not is_redirect(reply):
                        replies[i] = reply
                        retry.remove(i)
            todo = retry
            if todo and delay:
                await asyncio.sleep(min(delay, max(deadline - loop.time(), 0)))
        return replies

    @staticmethod
    async def _send(conn: RedisConnection, commands: Sequence[Sequence[bytes | str | int]],
                    idx: list[int], timeout: float) -> list[Any]:
        return await conn.pipeline([commands[i] for i in idx], timeout=timeout)

    async def close(self) -> None:
        """Nothing of its own: the topology's owner closes the connections."""
