"""Fleet state in Redis: node loads for rebalancing, per-identity reconnect counts.

Two kinds of keys (docs/streams.md, "Fleet keys"):

- ``<prefix>:fleet`` — one hash, a field per router node: ``<connections>
  <ready 0|1> <ms since the epoch>``, written every ``--rebalance-interval``.
  A node that stopped writing (dead, partitioned) drops out of the mean once
  its stamp is older than :data:`STALE_AFTER` intervals (its chargers are
  reconnecting elsewhere: counting it would make the others shed them again);
  whoever sees such a field deletes it. One key, so one slot on Redis Cluster.
- ``<prefix>:flap:{<identity>}`` — a counter of one charger's connection
  attempts in the current window, across all nodes. The hash tag keeps the
  key beside the identity's other tagged keys on Redis Cluster.

The flap check is one ``EVALSHA`` per admitted handshake on the node's shared
pipelined connection: no read-modify-write race between nodes, one round trip.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, NamedTuple

from router.streams.connection import SharedConnection
from router.streams.errors import RedisReplyError

#: A node's load entry counts while younger than this many intervals.
STALE_AFTER = 3

# KEYS[1] = flap counter; ARGV = limit, window s, cool-down s.
# Counts every attempt; the attempt that crosses the limit starts the
# cool-down by re-arming the key's TTL; attempts during the cool-down are
# refused with its remaining TTL and do not extend it (a charger that waits
# it out gets in, one that keeps hammering is still refused only until then).
_FLAP = """\
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
local limit = tonumber(ARGV[1])
if n <= limit then return 0 end
if n == limit + 1 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 1 then ttl = 1 end
return ttl
"""


class Script:
    """A Lua script run by ``EVALSHA``, falling back to ``EVAL`` after NOSCRIPT
    (the script cache is empty after a Redis restart or failover)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(self, redis: SharedConnection, keys: list[bytes], *args: bytes | str | int,
                  timeout: float = 5.0) -> Any:
        """Run with ``keys`` (all in one slot) and ``args``.

        Raises:
            StreamsError: Redis failed or is unreachable.
        """
        try:
            return await redis.command(b"EVALSHA", self.sha, len(keys), *keys, *args,
                                       timeout=timeout)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await redis.command(b"EVAL", self.source, len(keys), *keys, *args,
                                   timeout=timeout)


class NodeLoad(NamedTuple):
    """One node's entry in the fleet hash."""

    node: str
    connections: int
    ready: bool
    stamp_ms: int


def fleet_key(prefix: str) -> bytes:
    """``<prefix>:fleet``: the hash of node loads."""
    return f"{prefix}:fleet".encode()


def flap_key(prefix: str, identity: str) -> bytes:
    """``<prefix>:flap:{<identity>}``: one charger's attempt counter."""
    return f"{prefix}:flap:{{{identity}}}".encode()


class FleetState:
    """The node's view of the fleet keys, over its shared Redis connection.

    Args:
        redis: the node's shared pipelined connection.
        prefix: the key prefix (``--key-prefix``).
    """

    def __init__(self, redis: SharedConnection, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.key = fleet_key(prefix)
        self._flap = Script(_FLAP)

    async def publish_and_read(self, node: str, connections: int, ready: bool,
                               interval: float) -> list[NodeLoad]:
        """Write this node's load and read every fresh one (this node's too).

        Stale fields (nodes silent for :data:`STALE_AFTER` intervals: dead, or
        cut off from Redis) are left out and deleted; a node that comes back
        writes its field again. A node dropped too early only makes the mean
        look higher, so the others shed less (the safe side).

        Raises:
            StreamsError: Redis failed or is unreachable.
        """
        now = int(time.time() * 1000)
        value = f"{connections} {int(ready)} {now}"
        replies = await self.redis.pipeline(
            [(b"HSET", self.key, node, value), (b"HGETALL", self.key)], timeout=5.0)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        raw = replies[1] or []
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
        fresh: list[NodeLoad] = []
        stale: list[bytes] = []
        horizon = now - int(STALE_AFTER * interval * 1000)
        for field, val in pairs:
            load = _parse(field, val)
            if load is None or load.stamp_ms < horizon:
                stale.append(field if isinstance(field, bytes) else str(field).encode())
            else:
                fresh.append(load)
        if stale:
            await self.redis.command(b"HDEL", self.key, *stale, timeout=5.0)
        return fresh

    async def leave(self, node: str) -> None:
        """Remove this node's field (clean stop).

        Raises:
            StreamsError: Redis failed or is unreachable.
        """
        await self.redis.command(b"HDEL", self.key, node, timeout=2.0)

    async def count_attempt(self, identity: str, limit: int, window: int, cooldown: int) -> int:
        """Count a connection attempt of ``identity`` across the fleet.

        Returns:
            0 when admitted, else the seconds of cool-down left (Retry-After).

        Raises:
            StreamsError: Redis failed or is unreachable.
        """
        reply = await self._flap.run(self.redis, [flap_key(self.prefix, identity)],
                                     limit, window, cooldown, timeout=2.0)
        return int(reply or 0)


def _parse(field: Any, value: Any) -> NodeLoad | None:
    try:
        node = field.decode() if isinstance(field, bytes) else str(field)
        text = value.decode() if isinstance(value, bytes) else str(value)
        count, ready, stamp = text.split()
        return NodeLoad(node, int(count), ready == "1", int(stamp))
    except (ValueError, UnicodeDecodeError):
        return None
