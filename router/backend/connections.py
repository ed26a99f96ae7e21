"""Where the backend SDK's data path gets its Redis connections: one place.

The data path (the per-shard readers and the outbox) speaks RESP on
``router.streams.RedisConnection`` (compiled encoder and reply parser), not
through redis-py. It asks :meth:`Connector.connect` for "a connection for
this stream key" and nothing more, so a Redis Cluster or Sentinel deployment
routes here (by slot, or to the current primary) without touching the data
path. The control path (group creation, claim sweeps, dead letters, handlers'
own commands) keeps using the redis-py client the app was given.

On Redis Cluster (``redis+cluster://``, or a redis-py ``RedisCluster``) a
shard's reader connects to the master that owns the shard's slot, and
:meth:`Connector.send` writes the outbox's pre-encoded commands split per
master: each command goes to the master of its key, so a batch of replies to
several routers' out streams never becomes one ``CROSSSLOT`` command or lands
on the wrong node (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis

from router.streams.cluster import (
    COMMAND_ATTEMPTS,
    Address,
    ClusterTopology,
    key_slot,
    redirect_kind,
    redirect_target,
    retry_delay,
)
from router.streams.connection import RedisConnection, open_connection
from router.streams.errors import RedisConnectionError, RedisReplyError, StreamsError
from router.streams.redis_url import RedisURL, parse_redis_url, url_of_client


def _auth(kw: dict[str, Any]) -> str:
    if kw.get("password") is None:
        return ""
    user = quote(str(kw.get("username") or ""), safe="")
    return f"{user}:{quote(str(kw['password']), safe='')}@"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def url_of(redis: Any) -> str:
    """The ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://``
    URL the redis-py client connects to (host, port, database, user and
    password of its pool; a ``RedisCluster``'s startup nodes).

    Raises:
        ValueError: the client connects some way this cannot express (a
            cluster over TLS: build the client with ``RedisURL.redis_py()``).
    """
    manager = getattr(redis, "nodes_manager", None)
    if manager is not None:  # redis.asyncio.cluster.RedisCluster
        kw: dict[str, Any] = dict(getattr(redis, "connection_kwargs", {}))
        if kw.get("connection_class") is not None and \
                "SSL" in kw["connection_class"].__name__:
            raise ValueError("a RedisCluster over TLS: make it with "
                             "router.streams.redis_url.parse_redis_url(url).redis_py()")
        seeds = ",".join(f"{_host(n.host)}:{n.port}"
                         for n in manager.startup_nodes.values())
        return f"redis+cluster://{_auth(kw)}{seeds}"
    pool = redis.connection_pool
    kw = pool.connection_kwargs
    auth = _auth(kw)
    db = int(kw.get("db") or 0)
    if kw.get("path"):
        return f"unix://{auth}{kw['path']}?db={db}"
    host = _host(kw.get("host") or "localhost")
    scheme = "rediss" if "SSL" in pool.connection_class.__name__ else "redis"
    return f"{scheme}://{auth}{host}:{int(kw.get('port') or 6379)}/{db}"


def _split(data: bytes) -> list[tuple[bytes, int]]:
    """Cut pre-encoded RESP commands apart: each command's bytes and the slot
    of its key (the first key of ``EVAL``/``EVALSHA``/``FCALL``, else the
    first argument; slot 0 for a command without one).

    The SDK's own encoder wrote them (``CommandBuffer``): arrays of bulk
    strings only, so a length-prefixed walk suffices.
    """
    out: list[tuple[bytes, int]] = []
    pos = 0
    end = len(data)
    find = data.find
    while pos < end:
        eol = find(b"\r\n", pos)
        n = int(data[pos + 1:eol])
        p = eol + 2
        args: list[bytes] = []
        for _ in range(n):
            eol = find(b"\r\n", p)
            size = int(data[p + 1:eol])
            if len(args) < 4:
                args.append(data[eol + 2:eol + 2 + size])
            p = eol + 2 + size + 2
        name = args[0].upper() if args else b""
        if name in (b"EVAL", b"EVALSHA", b"FCALL", b"FCALL_RO"):
            key = args[3] if len(args) > 3 and int(args[2]) > 0 else None
        else:
            key = args[1] if len(args) > 1 else None
        out.append((data[pos:p], key_slot(key) if key is not None else 0))
        pos = p
    return out


class Connector:
    """Opens the data path's connections.

    Args:
        redis: the app's redis-py client; its address is used.
        timeout: seconds for one connection attempt (connect + handshake).
    """

    def __init__(self, redis: aioredis.Redis, *, timeout: float = 5.0) -> None:
        # A client made by RedisURL.redis_py() (the CLI, the reference CSMS)
        # carries its deployment: TLS files, the Sentinel master name.
        self.url: str | RedisURL = url_of_client(redis) or url_of(redis)
        self.timeout = timeout
        parsed = self.url if isinstance(self.url, RedisURL) else parse_redis_url(self.url)
        #: The slot map on Redis Cluster, else None.
        self.topology: ClusterTopology | None = None
        if parsed.mode == "cluster":
            self.topology = ClusterTopology(parsed, connect_timeout=timeout,
                                            name="ocpp-backend")
        self._links: dict[Address, RedisConnection] = {}
        self._stale = False     # a master failed: fetch the map before the next send

    @property
    def cluster(self) -> bool:
        """True on Redis Cluster."""
        return self.topology is not None

    async def connect(self, key: bytes, *, name: str) -> RedisConnection:
        """A new connection that serves commands on ``key`` (an inbound shard
        stream; the outbox asks with its first key): on Redis Cluster, to the
        master that owns ``key``'s slot as the map says now (it is fetched
        again first, at most every 50 ms).

        Args:
            key: the stream key the connection will read or write.
            name: the ``CLIENT SETNAME`` of the connection.

        Raises:
            router.streams.errors.RedisConnectionError: no connection.
        """
        topo = self.topology
        if topo is None:
            return await open_connection(self.url, timeout=self.timeout, name=name)
        await topo.refresh()
        address = topo.master_for(key_slot(key))
        if address is None:
            raise RedisConnectionError(f"slot {key_slot(key)} is not served (cluster down)")
        return await open_connection(topo.url.server(*address), timeout=self.timeout,
                                     name=name)

    # -- the outbox on Redis Cluster --------------------------------------------------

    async def send(self, data: bytes, n: int, timeout: float = 30.0) -> list[Any]:
        """Run ``n`` pre-encoded commands on Redis Cluster, one pipelined write
        per master (each command on the master of its key's slot), and return
        their replies in order.

        A command answered ``MOVED``/``ASK``/``TRYAGAIN``/``CLUSTERDOWN``/
        ``LOADING`` (not run) is sent again where the refreshed map says, at
        most ``COMMAND_ATTEMPTS`` times. The commands of a master whose
        connection failed may or may not have run: they come back as error
        replies (their entries stay pending and are claimed again, as after a
        lost connection in standalone mode), never re-sent blindly.
        """
        topo = self.topology
        assert topo is not None
        if self._stale or not topo.masters():
            # After a lost master nothing else may tell us where its slots
            # went (no MOVED comes from a dead node): ask the cluster.
            self._stale = False
            try:
                await topo.refresh()
            except StreamsError:
                self._stale = True
        commands = _split(data)
        assert len(commands) == n, (len(commands), n)
        replies: list[Any] = [None] * n
        todo = list(range(n))
        asking: dict[int, Address] = {}
        kind = "moved"
        for attempt in range(COMMAND_ATTEMPTS):
            if attempt:
                await asyncio.sleep(retry_delay(kind, attempt - 1))
                try:
                    await topo.refresh()
                except StreamsError:
                    pass
            groups: dict[Address, list[int]] = {}
            for i in todo:
                address = asking.get(i) or topo.master_for(commands[i][1])
                if address is None:
                    replies[i] = RedisReplyError("CLUSTERDOWN the slot is not served")
                    continue
                groups.setdefault(address, []).append(i)
            results = await asyncio.gather(*(
                self._run(address, [commands[i][0] for i in ix], [i in asking for i in ix],
                          timeout)
                for address, ix in groups.items()))
            todo = []
            asking = {}
            for (_address, ix), result in zip(groups.items(), results, strict=True):
                for i, reply in zip(ix, result, strict=True):
                    replies[i] = reply
                    if type(reply) is RedisReplyError:
                        found = redirect_kind(reply)
                        if found is None:
                            continue
                        kind = found
                        target = redirect_target(reply)
                        if found == "moved" and target is not None:
                            topo.moved(commands[i][1], target)
                        elif found == "ask" and target is not None:
                            asking[i] = target
                        todo.append(i)
            if not todo:
                break
        return replies

    async def _run(self, address: Address, commands: list[bytes], asking: list[bool],
                   timeout: float) -> list[Any]:
        """One pipelined write to ``address``; error replies (or the
        connection's error, once per command) as items."""
        try:
            conn = self._links.get(address)
            if conn is None or not conn.connected:
                assert self.topology is not None
                conn = self._links[address] = await open_connection(
                    self.topology.url.server(*address), timeout=self.timeout,
                    name="ocpp-backend:outbox")
            if any(asking):
                parts = [b"*1\r\n$6\r\nASKING\r\n" + c if a else c
                         for c, a in zip(commands, asking, strict=True)]
                n = len(commands) + sum(asking)
            else:
                parts, n = commands, len(commands)
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[Any] = loop.create_future()
            conn.send_raw(b"".join(parts), n, lambda r: _settle(fut, r), timeout)
            result = await fut
            if isinstance(result, StreamsError):
                raise result
        except (StreamsError, OSError) as exc:
            link = self._links.pop(address, None)
            if link is not None:
                link.abort()
            if self.topology is not None:
                self.topology._failed[address] = time.monotonic()
            self._stale = True
            return [RedisReplyError(f"connection to {address[0]}:{address[1]}: {exc}")
                    ] * len(commands)
        if not any(asking):
            return list(result)
        # Drop the ASKING replies.
        out = []
        pos = 0
        for a in asking:
            pos += a
            out.append(result[pos])
            pos += 1
        return out

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for conn in links:
            conn.close()
        for conn in links:
            await conn.wait_closed()
        if self.topology is not None:
            await self.topology.close()


def _settle(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)
