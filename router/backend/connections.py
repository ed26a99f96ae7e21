"""Where the backend SDK's data path gets its Redis connections: one place.

The data path (the per-shard readers and the outbox) speaks RESP on
``router.streams.RedisConnection`` (compiled encoder and reply parser), not
through redis-py. It asks :meth:`Connector.connect` for "a connection for
this stream key" and nothing more, so a Redis Cluster or Sentinel deployment
routes here (by slot, or to the current primary) without touching the data
path. The control path (group creation, claim sweeps, dead letters, handlers'
own commands) keeps using the redis-py client the app was given.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis

from router.streams.connection import RedisConnection, open_connection
from router.streams.redis_url import RedisURL, url_of_client


def url_of(redis: aioredis.Redis) -> str:
    """The ``redis://``, ``rediss://`` or ``unix://`` URL the redis-py client
    connects to (host, port, database, user and password of its pool).

    Raises:
        ValueError: the client connects some way this cannot express.
    """
    pool = redis.connection_pool
    kw: dict[str, Any] = pool.connection_kwargs
    auth = ""
    if kw.get("password") is not None:
        user = quote(str(kw.get("username") or ""), safe="")
        auth = f"{user}:{quote(str(kw['password']), safe='')}@"
    db = int(kw.get("db") or 0)
    if kw.get("path"):
        return f"unix://{auth}{kw['path']}?db={db}"
    host = kw.get("host") or "localhost"
    if ":" in host:
        host = f"[{host}]"
    scheme = "rediss" if "SSL" in pool.connection_class.__name__ else "redis"
    return f"{scheme}://{auth}{host}:{int(kw.get('port') or 6379)}/{db}"


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

    async def connect(self, key: bytes, *, name: str) -> RedisConnection:
        """A new connection that serves commands on ``key`` (an inbound shard
        stream; the outbox asks with its first key).

        Args:
            key: the stream key the connection will read or write.
            name: the ``CLIENT SETNAME`` of the connection.

        Raises:
            router.streams.errors.RedisConnectionError: no connection.
        """
        return await open_connection(self.url, timeout=self.timeout, name=name)
