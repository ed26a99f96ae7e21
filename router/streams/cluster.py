"""Redis Cluster for the router: one topology object, commands routed by slot.

The shape is redis-py's cluster client and Valkey GLIDE's: one
:class:`ClusterTopology` per process holds the slot map (``CLUSTER SLOTS``
from any node it knows, the URL's seeds last) and one pipelined
:class:`~router.streams.connection.RedisConnection` per master. Everything
else asks it one question — "which connection for this slot?" — and reports
back what went wrong; every retry decision is :func:`retry_delay`.

* :class:`ClusterPublisher` is the node's publisher in cluster mode. The
  compiled charger path calls its ``inbound`` exactly as in standalone mode
  (``router.streams._cluster``); the entry goes to the :class:`SlotPublisher`
  of its shard's slot: an ordinary :class:`~router.streams.publisher.Publisher`
  (batching, holding through a failover, resending) that writes on the
  connection of the master owning that slot. All slot publishers of one master
  share its connection, so each batch is split per slot and every master gets
  its batches on one socket.
* :class:`ClusterOutboundReader` reads the node's out stream on its master
  (its own connection: a blocked ``XREAD`` must not hold up the publishes).
* :class:`ClusterCommands` is the registry's and the password look-ups'
  connection: each command goes to the master of its key.

Cluster errors (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#redirection-and-resharding):

``MOVED <slot> <host:port>``
    the slot lives elsewhere now: the map is updated at once and refreshed; a
    publish batch is held and written again to the new owner.
``ASK <slot> <host:port>``
    the key was migrated, the slot not yet: the batch is written again to the
    target, each command preceded by ``ASKING``; the map is not changed.
``TRYAGAIN``, ``CLUSTERDOWN``, ``LOADING``, a lost connection
    back off (:func:`retry_delay`) and try again after refreshing the map.

Retries are bounded: a publish by ``--publish-timeout`` (then its entries fail
as in standalone mode and the charger gets its CALLERROR), a command by
:data:`COMMAND_ATTEMPTS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from router.streams._cluster import ClusterPublisherCore
from router.streams.connection import RedisConnection, Replies, ReplyCallback, SharedConnection
from router.streams.errors import (
    ConnectionLostError,
    NotConnectedError,
    RedisConnectionError,
    RedisReplyError,
    StreamsError,
)
from router.streams.keys import KeySpace
from router.streams.publisher import Publisher, PublisherStats
from router.streams.reader import Entries, OutboundReader
from router.streams.redis_url import RedisURL, parse_redis_url

log = logging.getLogger("router.cluster")

SLOTS = 16384
Address = tuple[str, int]

#: Attempts of one control-plane command (registry, password look-up) through
#: redirections and fail-overs before its error is returned.
COMMAND_ATTEMPTS = 6

#: A map younger than this is not fetched again (a burst of MOVED from many
#: slot publishers costs one CLUSTER SLOTS).
REFRESH_MIN_INTERVAL = 0.05


# -- slots ------------------------------------------------------------------------

def _crc16_table() -> tuple[int, ...]:
    # CRC-16/XMODEM (poly 0x1021, init 0), the one the cluster spec names
    # (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#appendix-a-crc16-reference-implementation-in-ansi-c).
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16 = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM of ``data`` (table-driven)."""
    crc = 0
    table = _CRC16
    for b in data:
        crc = ((crc << 8) & 0xFF00) ^ table[(crc >> 8) ^ b]
    return crc


def key_slot(key: bytes | str) -> int:
    """The cluster slot of ``key``: CRC16 of its hash tag (the part between
    the first ``{`` and the next ``}``, when not empty) or of the whole key,
    modulo 16384 — what ``CLUSTER KEYSLOT`` answers."""
    if isinstance(key, str):
        key = key.encode()
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return crc16(key) & (SLOTS - 1)


# -- errors and the retry policy ----------------------------------------------------

_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "LOADING")


def redirect_kind(reply: BaseException) -> str | None:
    """``moved``, ``ask``, ``tryagain``, ``clusterdown``, ``loading`` for the
    cluster's error replies, else None."""
    text = str(reply)
    if not text.startswith(_REDIRECTS):
        return None
    return text.split(" ", 1)[0].lower()


def redirect_target(reply: BaseException) -> Address | None:
    """The ``host:port`` of a ``MOVED``/``ASK`` reply (an empty host means
    the node that answered: ``cluster-preferred-endpoint-type unknown-endpoint``)."""
    parts = str(reply).split(" ")
    if len(parts) < 3:
        return None
    host, _, port = parts[2].rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        return None


_TRANSIENT = (*_REDIRECTS, "UNBLOCKED", "READONLY", "MASTERDOWN")


def transient_reply(reply: BaseException) -> bool:
    """True for error replies that only say "not here" or "not now": cluster
    redirections and fail-overs, and ``UNBLOCKED`` (a blocked read on a key
    that migrated away or on a master demoted under it). A client re-routes
    and tries again; the SDK's readers use this."""
    return str(reply).startswith(_TRANSIENT)


class ClusterRedirectError(ConnectionLostError):
    """A cluster error reply that the publisher treats like a lost connection:
    its batch is held and written again once the map says where."""

    code = "cluster_redirect"

    def __init__(self, reply: BaseException, kind: str) -> None:
        super().__init__(str(reply))
        self.kind = kind
        self.target = redirect_target(reply)


def retry_delay(kind: str, attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` after ``kind``
    (``moved``, ``ask``, ``tryagain``, ``clusterdown``, ``loading``,
    ``connection``): every retry decision of the cluster layer.

    MOVED and ASK say where to go: at once. The others mean "not now" — a
    failover (``CLUSTERDOWN`` until a replica is promoted, 1 to 2 node timeouts),
    a slot in migration (``TRYAGAIN``), a restarted master loading its data:
    capped exponential back-off, 25 ms … 500 ms, so recovery is noticed within
    half a second without hammering the cluster.
    """
    if kind in ("moved", "ask"):
        return 0.0
    return float(min(0.025 * (2 ** attempt), 0.5))


# -- the topology -------------------------------------------------------------------

class _Link:
    """A master's shared connection and whoever wants to hear of its loss."""

    __slots__ = ("address", "conn", "listeners")

    def __init__(self, address: Address, conn: RedisConnection) -> None:
        self.address = address
        self.conn = conn
        self.listeners: set[Callable[[], None]] = set()


class ClusterTopology:
    """The slot map of one cluster and one connection per master.

    Args:
        url: a ``redis+cluster://`` / ``rediss+cluster://`` URL: its seeds,
            credentials and TLS settings.
        connect_timeout: seconds for one connection attempt.
        name: ``CLIENT SETNAME`` of the master connections.

    Raises:
        ValueError: not a cluster URL.
    """

    def __init__(self, url: str | RedisURL, *, connect_timeout: float = 5.0,
                 name: str = "ocpp-router") -> None:
        self.url = url if isinstance(url, RedisURL) else parse_redis_url(url)
        if self.url.mode != "cluster":
            raise ValueError("ClusterTopology needs a redis+cluster:// URL")
        self.connect_timeout = connect_timeout
        self.name = name
        self.slots: list[Address | None] = [None] * SLOTS
        self.refreshes = 0              # CLUSTER SLOTS fetched
        self.changes = 0                # of those, how many changed the map
        self.redirects = 0              # MOVED/ASK/TRYAGAIN/CLUSTERDOWN/LOADING seen
        self._refreshed_at = -1.0
        self._refreshing: asyncio.Future[None] | None = None
        self._links: dict[Address, _Link] = {}
        self._opening: dict[Address, asyncio.Future[_Link]] = {}
        self._failed: dict[Address, float] = {}     # address → when it last failed
        self._users = 0
        self._closed = False

    # -- the map --------------------------------------------------------------------

    def master_for(self, slot: int) -> Address | None:
        """The master serving ``slot`` as last known, None when unknown."""
        return self.slots[slot]

    def masters(self) -> list[Address]:
        """Every master in the map."""
        return sorted({a for a in self.slots if a is not None})

    def moved(self, slot: int, address: Address) -> None:
        """Record a ``MOVED``: the slot is served by ``address`` from now on."""
        self.redirects += 1
        if self.slots[slot] != address:
            self.slots[slot] = address
            self.changes += 1

    async def refresh(self) -> None:
        """Fetch the slot map again (one fetch shared by concurrent callers,
        none if the map is younger than :data:`REFRESH_MIN_INTERVAL`).

        Raises:
            RedisConnectionError: no node answered ``CLUSTER SLOTS``.
        """
        if self._refreshing is None:
            if time.monotonic() - self._refreshed_at < REFRESH_MIN_INTERVAL:
                return
            self._refreshing = asyncio.ensure_future(self._refresh())
            self._refreshing.add_done_callback(self._refreshed)
        await asyncio.shield(self._refreshing)

    def _refreshed(self, fut: asyncio.Future[None]) -> None:
        self._refreshing = None
        if not fut.cancelled():
            fut.exception()     # retrieved here; the awaiting callers raise it

    async def _refresh(self) -> None:
        errors = []
        for address in self._candidates():
            conn = RedisConnection()
            try:
                await conn.connect(self.url.server(*address),
                                   timeout=min(self.connect_timeout, 2.0))
                reply = await conn.command(b"CLUSTER", b"SLOTS",
                                           timeout=min(self.connect_timeout, 2.0))
            except StreamsError as exc:
                self._failed[address] = time.monotonic()
                errors.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            finally:
                conn.close()
            self._apply(reply, address)
            return
        raise RedisConnectionError("no cluster node answered CLUSTER SLOTS: " + "; ".join(errors))

    def _candidates(self) -> list[Address]:
        # Masters we know first (they answer for sure unless dead), then the
        # seeds; nodes that failed lately last (a dead host may cost a
        # connect timeout).
        seen: dict[Address, None] = {}
        for address in (*self.masters(), *self.url.addresses):
            seen.setdefault(address)
        failed = self._failed
        return sorted(seen, key=lambda a: failed.get(a, 0.0))

    def _apply(self, reply: Any, asked: Address) -> None:
        slots: list[Address | None] = [None] * SLOTS
        for item in reply:
            start, end, master = int(item[0]), int(item[1]), item[2]
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            if host in ("", "?"):
                host = asked[0]     # the node does not know its own address
            address = (host, int(master[1]))
            slots[start:end + 1] = [address] * (end - start + 1)
        self.refreshes += 1
        self._refreshed_at = time.monotonic()
        if slots != self.slots:
            self.changes += 1
            before = set(self.masters())
            self.slots = slots
            after = set(self.masters())
            uncovered = slots.count(None)
            log.info("cluster map: %d masters%s%s", len(after),
                     f" (new: {sorted(after - before)})" if before and after != before else "",
                     f", {uncovered} slots not served" if uncovered else "")
        for address in list(self._links):
            if address not in self.masters():
                # Demoted or removed: its users move to the new owners.
                self._drop(address, "no longer a master")

    # -- connections ------------------------------------------------------------------

    async def connection(self, address: Address,
                         on_lost: Callable[[], None] | None = None) -> RedisConnection:
        """The shared connection to the master at ``address`` (opened on first
        use); ``on_lost`` is called once when that connection ends.

        Raises:
            RedisConnectionError: it could not be opened.
        """
        link = self._links.get(address)
        if link is None or not link.conn.connected:
            opening = self._opening.get(address)
            if opening is None:
                opening = self._opening[address] = asyncio.ensure_future(self._open(address))
                opening.add_done_callback(lambda _f: self._opening.pop(address, None))
            link = await asyncio.shield(opening)
        if on_lost is not None:
            link.listeners.add(on_lost)
        return link.conn

    async def _open(self, address: Address) -> _Link:
        if self._closed:
            raise NotConnectedError("the cluster client is closed")
        conn = RedisConnection(on_lost=lambda _reason: self._lost(link))
        # The slot publishers of this master each flush their own batch:
        # one write per master per loop iteration (bench/RESULTS.md, "Redis Cluster").
        conn.coalesce = True
        link = _Link(address, conn)
        try:
            await conn.connect(self.url.server(*address), timeout=self.connect_timeout,
                               name=self.name)
        except RedisConnectionError:
            self._failed[address] = time.monotonic()
            raise
        self._failed.pop(address, None)
        self._links[address] = link
        return link

    def _lost(self, link: _Link) -> None:
        if self._links.get(link.address) is link:
            del self._links[link.address]
        self._failed[link.address] = time.monotonic()
        self._notify(link)

    def _drop(self, address: Address, why: str) -> None:
        link = self._links.pop(address, None)
        if link is None:
            return
        log.info("closing the connection to %s:%d (%s)", address[0], address[1], why)
        link.conn.close()
        self._notify(link)

    @staticmethod
    def _notify(link: _Link) -> None:
        listeners, link.listeners = link.listeners, set()
        for listener in listeners:
            listener()

    def forget(self, address: Address, on_lost: Callable[[], None]) -> None:
        """Stop telling ``on_lost`` about the connection to ``address``."""
        link = self._links.get(address)
        if link is not None:
            link.listeners.discard(on_lost)

    @property
    def connected(self) -> bool:
        """True while every master of the map has an open connection."""
        masters = self.masters()
        return bool(masters) and all(
            a in self._links and self._links[a].conn.connected for a in masters)

    # -- sharing ------------------------------------------------------------------------

    def acquire(self) -> ClusterTopology:
        self._users += 1
        return self

    async def release(self) -> None:
        """Close the connections once the last user released the topology."""
        self._users -= 1
        if self._users > 0:
            return
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if _SHARED.get((str(self.url), self.name)) is self:
            del _SHARED[(str(self.url), self.name)]
        for opening in list(self._opening.values()):
            opening.cancel()
        links, self._links = list(self._links.values()), {}
        for link in links:
            link.conn.close()
        for link in links:
            await link.conn.wait_closed()


_SHARED: dict[tuple[str, str], ClusterTopology] = {}


def shared_topology(url: str, *, name: str = "ocpp-router",
                    connect_timeout: float = 5.0) -> ClusterTopology:
    """The topology of ``url`` shared by the publisher, the reader and the
    registry of one node (one connection per master in all); each user calls
    :meth:`ClusterTopology.release` when done."""
    parsed = parse_redis_url(url)
    key = (str(parsed), name)
    topo = _SHARED.get(key)
    if topo is None or topo._closed:
        topo = _SHARED[key] = ClusterTopology(parsed, name=name,
                                              connect_timeout=connect_timeout)
    return topo.acquire()


# -- publishing -----------------------------------------------------------------------

class _SlotLink:
    """What a :class:`SlotPublisher` writes through: the master's shared
    connection, with the cluster's error replies turned into a held batch.

    One batch holds entries of one slot only, so a slot that moved shows in
    its last XADD reply (or the one before the ``WAIT`` of
    ``--durability replicated``): two type checks per batch, none per entry.
    With ``asking`` (after ``ASK``) each command is preceded by ``ASKING``.
    """

    __slots__ = ("address", "asking", "conn", "owner")

    def __init__(self, owner: SlotPublisher, conn: RedisConnection, address: Address,
                 asking: bool = False) -> None:
        self.owner = owner
        self.conn = conn
        self.address = address
        self.asking = asking

    @property
    def connected(self) -> bool:
        return self.conn.connected

    def send_raw(self, data: bytes, n_replies: int, callback: ReplyCallback,
                 timeout: float | None = None, *, xread: bool = False) -> None:
        if self.asking:
            self._send_asking(data, n_replies, callback, timeout)
            return
        owner = self.owner

        def checked(result: Replies) -> None:
            if type(result) is list and result:
                bad = result[-1]
                if type(bad) is not RedisReplyError and len(result) > 1:
                    bad = result[-2]
                if type(bad) is RedisReplyError:
                    kind = redirect_kind(bad)
                    if kind is not None:
                        error = ClusterRedirectError(bad, kind)
                        callback(error)             # the core holds the batch
                        owner._redirected(self, error)
                        return
                owner._attempt = 0      # answered: the next trouble starts a new back-off
            callback(result)

        self.conn.send_raw(data, n_replies, checked, timeout, xread=xread)

    def _send_asking(self, data: bytes, n_replies: int, callback: ReplyCallback,
                     timeout: float | None) -> None:
        # ASKING is valid for the next command only
        # (https://redis.io/commands/asking/): one before each.
        commands = split_commands(data)
        if n_replies != len(commands):
            raise AssertionError("a batch's reply count does not match its commands")
        out = b"".join(b"*1\r\n$6\r\nASKING\r\n" + c for c in commands)
        owner = self.owner

        def stripped(result: Replies) -> None:
            if type(result) is list:
                result = result[1::2]
                bad = next((r for r in result if type(r) is RedisReplyError
                            and redirect_kind(r) is not None), None)
                if bad is not None:
                    error = ClusterRedirectError(bad, redirect_kind(bad) or "ask")
                    callback(error)
                    owner._redirected(self, error)
                    return
            callback(result)

        self.conn.send_raw(out, 2 * len(commands), stripped, timeout)

    def close(self) -> None:
        self.owner.topology.forget(self.address, self.owner._link_lost)

    async def wait_closed(self) -> None:
        return None


def split_commands(data: bytes) -> list[bytes]:
    """The RESP commands (arrays of bulk strings) of ``data``, each as bytes.

    Raises:
        ValueError: ``data`` is not a sequence of RESP command arrays.
    """
    out = []
    pos = 0
    end = len(data)
    while pos < end:
        start = pos
        if data[pos:pos + 1] != b"*":
            raise ValueError("not a RESP command array")
        eol = data.index(b"\r\n", pos)
        count = int(data[pos + 1:eol])
        pos = eol + 2
        for _ in range(count):
            if data[pos:pos + 1] != b"$":
                raise ValueError("not a RESP bulk string")
            eol = data.index(b"\r\n", pos)
            pos = eol + 2 + int(data[pos + 1:eol]) + 2
        out.append(data[start:pos])
    return out


class SlotPublisher(Publisher):
    """The publisher of one slot: a :class:`Publisher` whose connection is the
    shared one of the slot's master, chosen again from the map on every
    (re)connect; ``MOVED``/``ASK``/``CLUSTERDOWN``/… hold its batch and
    reconnect it (see :func:`retry_delay`)."""

    def __init__(self, url: str, topology: ClusterTopology, slot: int,
                 **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.topology = topology
        self.slot = slot
        self._ask: Address | None = None
        self._attempt = 0
        self._last_kind = "connection"

    async def _connect_once(self) -> None:
        assert self._lost is not None
        topo = self.topology
        if self._attempt:
            # Every retry decision in one place: how long before the next.
            await asyncio.sleep(retry_delay(self._last_kind, self._attempt - 1))
        self._attempt += 1
        ask, self._ask = self._ask, None
        try:
            if ask is None:
                await topo.refresh()
            address = ask or topo.master_for(self.slot)
            if address is None:
                self._last_kind = "clusterdown"
                raise RedisConnectionError(f"slot {self.slot} is not served (cluster down)")
            conn = await topo.connection(address, self._link_lost)
        except RedisConnectionError:
            self.stats.connect_failures += 1
            if self._last_kind in ("moved", "ask"):
                self._last_kind = "connection"
            raise
        self._conn = _SlotLink(self, conn, address, asking=ask is not None)
        self._lost.clear()
        self.stats.connects += 1
        self._resend_held()
        if self.stats.connects > 1 and self.on_reconnect is not None:
            self.on_reconnect()

    def _link_lost(self) -> None:
        link = self._conn
        if isinstance(link, _SlotLink) and not link.conn.connected:
            self._detach(link, "connection")

    def _redirected(self, link: _SlotLink, error: ClusterRedirectError) -> None:
        self.topology.redirects += 1
        if error.kind == "moved" and error.target is not None:
            self.topology.moved(self.slot, error.target)
        if error.kind == "ask":
            self._ask = error.target
        log.debug("slot %d: %s", self.slot, error)
        self._detach(link, error.kind)

    def _detach(self, link: _SlotLink, kind: str) -> None:
        if self._conn is not link:
            return
        self._last_kind = kind
        self.topology.forget(link.address, self._link_lost)
        self._conn = None
        if self._lost is not None:
            self._lost.set()

    def start_now(self) -> None:
        """:meth:`Publisher.start` with ``wait=False``, synchronously (a slot
        publisher made on demand must take the entry that asked for it)."""
        loop = self._loop = asyncio.get_running_loop()
        self._lost = asyncio.Event()
        self._supervisor = loop.create_task(self._supervise(), name=f"redis-slot-{self.slot}")


class _SummedStats:
    """``PublisherStats`` of a :class:`ClusterPublisher`: the sums over its
    slot publishers, read at scrape time."""

    def __init__(self, owner: ClusterPublisher) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        if name not in PublisherStats.__slots__ or name == "recent":
            raise AttributeError(name)
        return sum(getattr(p.stats, name) for p in self._owner.publishers())


class ClusterPublisher(ClusterPublisherCore):
    """The node's publisher on Redis Cluster; same arguments, same API and
    the same failure semantics as :class:`~router.streams.publisher.Publisher`
    (whose docstring is the contract), per slot.

    The pending limits are shared out: each slot publisher pauses at
    ``max_pending / S`` entries; reading from chargers pauses while any of
    them is paused.

    Raises:
        ValueError: not a cluster URL, a non-positive limit or timeout.
    """

    def __init__(self, url: str, *, keys: KeySpace, maxlen: int | None = 1_000_000,
                 timeout: float = 2.0, max_pending: int = 50_000,
                 max_pending_bytes: int = 64 * 1024 * 1024,
                 on_pause: Callable[[], None] | None = None,
                 on_resume: Callable[[], None] | None = None,
                 on_batch: Callable[[int, float], None] | None = None,
                 connect_timeout: float = 5.0,
                 backoff_min: float = 0.025, backoff_max: float = 0.5,
                 client_name: str = "ocpp-router:publisher",
                 wait_replicas: int = 0,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        self.url = url
        self.keys = keys
        self.maxlen = maxlen
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.on_pause = on_pause
        self.on_resume = on_resume
        self.on_batch = on_batch
        self.wait_replicas = wait_replicas
        self.topology = shared_topology(url, name=client_name, connect_timeout=connect_timeout)
        self._paused_slots = 0
        self._per_slot = dict(
            maxlen=maxlen, timeout=timeout,
            max_pending=max(1, max_pending // keys.shards),
            max_pending_bytes=max(1, max_pending_bytes // keys.shards),
            on_pause=self._slot_paused, on_resume=self._slot_resumed, on_batch=on_batch,
            connect_timeout=connect_timeout, backoff_min=backoff_min,
            backoff_max=backoff_max, client_name=client_name,
            wait_replicas=wait_replicas, on_reconnect=on_reconnect)
        self._slots: dict[int, SlotPublisher] = {}
        self._started = False
        self._shard_publishers = [self._for_slot(key_slot(k)) for k in keys.all_inbound()]
        self._by_shard = list(self._shard_publishers)    # what the compiled inbound reads
        self._inbound = keys.all_inbound()
        self.stats = _SummedStats(self)

    def _for_slot(self, slot: int) -> SlotPublisher:
        pub = self._slots.get(slot)
        if pub is None:
            pub = self._slots[slot] = SlotPublisher(self.url, self.topology, slot,
                                                    keys=self.keys, **self._per_slot)
            if self._started:
                pub.start_now()
        return pub

    def publishers(self) -> list[SlotPublisher]:
        return list(self._slots.values())

    # -- the API of Publisher -------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Learn the map and connect every shard's publisher.

        Raises:
            RedisConnectionError: ``wait`` and no node answered, or a master
                could not be reached.
            RuntimeError: started twice.
        """
        if self._loop is not None:
            raise RuntimeError("Publisher already started")
        self._loop = asyncio.get_running_loop()
        try:
            if wait:
                await self.topology.refresh()
            for pub in self.publishers():
                await pub.start(wait=wait)
        except BaseException:
            self._loop = None
            for pub in self.publishers():
                await pub.close(flush=False)
            raise
        self._started = True

    def xadd(self, key: bytes, fields: Sequence[Any], maxlen: int | None,
             on_error: Callable[[StreamsError], None] | None = None,
             on_done: Callable[[bytes], None] | None = None) -> None:
        """Queue any XADD, on the publisher of the key's slot."""
        if self._loop is None:
            raise RuntimeError("Publisher not started")
        self._for_slot(key_slot(key)).xadd(key, fields, maxlen, on_error, on_done)

    async def close(self, flush: bool = True, timeout: float = 5.0) -> None:
        """Close every slot publisher (see :meth:`Publisher.close`)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(p.close(flush=flush, timeout=timeout)
                               for p in self.publishers()))
        await self.topology.release()

    async def wait_flushed(self) -> None:
        await asyncio.gather(*(p.wait_flushed() for p in self.publishers()))

    @property
    def connected(self) -> bool:
        """True while the publisher of every inbound shard has a connection."""
        return all(p.connected for p in self._shard_publishers)

    @property
    def pending(self) -> int:  # type: ignore[override]
        return sum(p.pending for p in self.publishers())

    def _slot_paused(self) -> None:
        self._paused_slots += 1
        if self._paused_slots == 1:
            self.paused = True
            if self.on_pause is not None:
                self.on_pause()

    def _slot_resumed(self) -> None:
        self._paused_slots -= 1
        if self._paused_slots == 0:
            self.paused = False
            if self.on_resume is not None:
                self.on_resume()


# -- the out stream -------------------------------------------------------------------

class ClusterOutboundReader(OutboundReader):
    """:class:`~router.streams.reader.OutboundReader` on the master of its
    stream's slot: every (re)connect asks the map, and ``MOVED``/``ASK``/
    ``CLUSTERDOWN``/… end the read chain like a lost connection, so the reader
    reconnects where the map (refreshed) says, and continues from its last id.
    """

    def __init__(self, url: str, key: bytes, on_entries: Callable[[Entries], None], *,
                 client_name: str = "ocpp-router:out-reader", **kwargs: Any) -> None:
        super().__init__(url, key, on_entries, client_name=client_name, **kwargs)
        self.topology = shared_topology(url, name=client_name + ":map",
                                        connect_timeout=self.connect_timeout)
        self.slot = key_slot(key)

    async def _connect(self) -> None:
        topo = self.topology
        try:
            await topo.refresh()
            address = topo.master_for(self.slot)
            if address is None:
                raise RedisConnectionError(f"slot {self.slot} is not served (cluster down)")
            conn = RedisConnection()
            await conn.connect(topo.url.server(*address), timeout=self.connect_timeout,
                               name=self.client_name)
        except RedisConnectionError:
            self.stats.errors += 1
            raise
        self._conn = conn
        self.stats.connects += 1

    def _end_chain(self, error: StreamsError) -> None:
        if isinstance(error, RedisReplyError) and redirect_kind(error) is not None:
            # Reconnect where the refreshed map says (the read resumes from last_id).
            error = ClusterRedirectError(error, redirect_kind(error) or "moved")
        super()._end_chain(error)

    async def stop(self) -> None:
        await super().stop()
        await self.topology.release()


# -- control-plane commands -----------------------------------------------------------

def command_key(args: Sequence[bytes | str | int]) -> bytes | str | int | None:
    """The key a command is routed by: the first key of ``EVAL``/``EVALSHA``,
    else the first argument."""
    name = args[0].upper() if isinstance(args[0], bytes | str) else b""
    if name in (b"EVALSHA", b"EVAL", "EVALSHA", "EVAL"):
        return args[3] if int(args[2]) > 0 else None
    return args[1] if len(args) > 1 else None


class ClusterCommands(SharedConnection):
    """The registry's and the password look-ups' Redis in cluster mode: each
    command on the shared connection of its key's master, through redirects
    and fail-overs (at most :data:`COMMAND_ATTEMPTS` tries)."""

    def __init__(self, url: str, *, name: str | None = None,
                 connect_timeout: float = 5.0) -> None:
        super().__init__(url, name=name, connect_timeout=connect_timeout)
        self.topology = shared_topology(url, name=name or "ocpp-router",
                                        connect_timeout=connect_timeout)

    @property
    def connected(self) -> bool:
        return self.topology.connected

    async def command(self, *args: bytes | str | int, timeout: float | None = None) -> Any:
        """Run one command on its key's master (see :meth:`RedisConnection.command`).

        Raises:
            StreamsError: the last attempt's error (reply, connection, timeout).
        """
        key = command_key(args)
        slot = key_slot(key if isinstance(key, bytes | str) else str(key)) if key else 0
        topo = self.topology
        error: StreamsError = NotConnectedError("no attempt")
        kind = "connection"
        ask: Address | None = None
        for attempt in range(COMMAND_ATTEMPTS):
            if attempt:
                await asyncio.sleep(retry_delay(kind, attempt - 1))
            try:
                if ask is None and (attempt or topo.master_for(slot) is None):
                    await topo.refresh()
                address = ask or topo.master_for(slot)
                if address is None:
                    raise RedisConnectionError(f"slot {slot} is not served (cluster down)")
                conn = await topo.connection(address)
                if ask is not None:
                    replies = await conn.pipeline([(b"ASKING",), args], timeout=timeout)
                    if isinstance(replies[1], RedisReplyError):
                        raise replies[1]
                    return replies[1]
                return await conn.command(*args, timeout=timeout)
            except RedisReplyError as exc:
                found = redirect_kind(exc)
                if found is None:
                    raise
                error, kind, ask = exc, found, None
                topo.redirects += 1
                target = redirect_target(exc)
                if found == "moved" and target is not None:
                    topo.moved(slot, target)
                elif found == "ask":
                    ask = target
            except (RedisConnectionError, ConnectionLostError) as exc:
                error, kind, ask = exc, "connection", None
            except StreamsError as exc:     # timeout: the server may be gone
                error, kind, ask = exc, "connection", None
            log.debug("%s on slot %d (attempt %d): %s", kind, slot, attempt + 1, error)
        log.warning("cluster command gave up after %d attempts: %s", COMMAND_ATTEMPTS, error)
        raise error

    async def pipeline(self, commands: Sequence[Sequence[bytes | str | int]],
                       timeout: float | None = None) -> list[Any]:
        """Run the commands, one pipeline per master, concurrently; a command
        redirected or cut off is run again on its own (:meth:`command`).
        Error replies come back as items, as with :meth:`RedisConnection.pipeline`.

        Raises:
            StreamsError: a command could not be run at all.
        """
        if not commands:
            return []
        topo = self.topology
        if not topo.masters():
            await topo.refresh()
        groups: dict[Address | None, list[int]] = {}
        for i, cmd in enumerate(commands):
            key = command_key(cmd)
            slot = key_slot(key if isinstance(key, bytes | str) else str(key)) if key else 0
            groups.setdefault(topo.master_for(slot), []).append(i)
        out: list[Any] = [None] * len(commands)
        retry: list[int] = []

        async def run(address: Address | None, indexes: list[int]) -> None:
            if address is None:
                retry.extend(indexes)
                return
            try:
                conn = await topo.connection(address)
                replies = await conn.pipeline([commands[i] for i in indexes], timeout=timeout)
            except StreamsError:
                retry.extend(indexes)
                return
            for i, reply in zip(indexes, replies, strict=True):
                if isinstance(reply, RedisReplyError) and redirect_kind(reply) is not None:
                    retry.append(i)
                else:
                    out[i] = reply

        await asyncio.gather(*(run(a, ix) for a, ix in groups.items()))
        for i in sorted(retry):
            try:
                out[i] = await self.command(*commands[i], timeout=timeout)
            except RedisReplyError as exc:
                out[i] = exc
        return out

    async def close(self) -> None:
        with contextlib.suppress(StreamsError):
            await self.topology.release()


def is_cluster(url: str) -> bool:
    """True for a ``redis+cluster://`` / ``rediss+cluster://`` URL."""
    return parse_redis_url(url).mode == "cluster"
