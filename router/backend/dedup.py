"""Drop inbound entries a consumer group has handled already.

Why there are repeats: the router publishes at least once. A batch of XADDs
whose connection broke before Redis answered (master killed, failover,
demotion) is written again on the next connection (docs/streams.md,
"Delivery"); if the first write had landed, the stream holds the entry twice,
under two entry ids. Every inbound entry carries what identifies the charger
message itself — ``cs``, ``conn`` (one WebSocket connection) and ``id`` (the
OCPP-J message id, unique per sender and connection, OCPP-J 1.6 §4.1.1 /
2.0.1 §4.2.1) — so a consumer can tell a repeat from a new message.

:class:`Deduplicator` remembers what its group handled, in Redis (so every
consumer of the group and a restarted one see it) with a TTL, plus a bounded
in-process cache in front so a repeat seen by the same consumer costs no round
trip. An entry is marked *after* its handler finished and before its answer
is written and it is acknowledged, with the stream entry that carried it: a
copy under another entry id is dropped (acknowledged, not handled), but the
*same* entry delivered again is handled again — its answer (or its
acknowledgement) was not written, a master died in between, so the charger
still waits for it. A handler may therefore run twice for one entry, never for
two copies of one message. Two copies handled at the same
moment by two consumers are both handled (the check is not a lock); repeats
come seconds apart (a reconnect), so that is rare, and handlers stay
idempotent where it matters (as for any at-least-once stream).

Use: ``BackendApp(redis, group="csms", dedup=Deduplicator(redis, prefix="ocpp",
group="csms"))``.
"""

from __future__ import annotations

import collections

import redis.asyncio as aioredis

from router.backend.message import Message

#: Kinds whose (cs, conn, kind, id) names one charger message.
_WITH_ID = frozenset(("call", "result", "error"))
#: Connection events: one of each per connection.
_ONCE_PER_CONN = frozenset(("connected", "disconnected"))


class Deduplicator:
    """Remembers the charger messages one consumer group has handled.

    Args:
        redis: the group's Redis client.
        prefix: the key prefix (``--key-prefix``).
        group: the consumer group (each group handles every message once).
        ttl: seconds a handled message is remembered; longer than a
            failover plus the claim delay (default one hour).
        local: how many keys the in-process cache keeps.
    """

    def __init__(self, redis: aioredis.Redis, *, prefix: str = "ocpp", group: str,
                 ttl: int = 3600, local: int = 100_000) -> None:
        if ttl < 1 or local < 0:
            raise ValueError("ttl must be at least 1 and local at least 0")
        self.redis = redis
        self.ttl = ttl
        self.local = local
        self._head = f"{prefix}:seen:{group}:"
        # key → the "<stream> <entry id>" that was handled
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self.dropped = 0

    def key(self, msg: Message) -> str | None:
        """The Redis key that stands for ``msg``, None for entries that cannot
        repeat unnoticed (``send`` and ``failed`` carry no charger message id)."""
        if msg.kind in _WITH_ID and msg.id and msg.conn:
            return f"{self._head}{msg.cs}:{msg.conn}:{msg.kind}:{msg.id}"
        if msg.kind in _ONCE_PER_CONN and msg.conn:
            return f"{self._head}{msg.cs}:{msg.conn}:{msg.kind}"
        return None

    @staticmethod
    def _entry(msg: Message) -> bytes:
        return f"{msg.stream} {msg.entry_id}".encode()

    async def seen(self, msg: Message) -> bool:
        """True if the group handled this charger message already, from
        another stream entry (a copy the router wrote again). False for the
        entry that was handled itself, delivered again (claimed) because its
        answer or acknowledgement was not written.

        Raises:
            redis.exceptions.RedisError: Redis failed (the entry stays pending).
        """
        key = self.key(msg)
        if key is None:
            return False
        entry = self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
        else:
            stored = await self.redis.get(key)
            entry = stored.encode() if isinstance(stored, str) else stored
        hit = entry is not None and entry != self._entry(msg)
        if hit:
            self.dropped += 1
        return hit

    async def mark(self, msg: Message) -> None:
        """Remember that the group handled ``msg``.

        Raises:
            redis.exceptions.RedisError: Redis failed (the entry stays pending).
        """
        key = self.key(msg)
        if key is None:
            return
        entry = self._entry(msg)
        # Two copies handled at the same moment (rare: see the module doc)
        # were both handled; whichever is remembered, later copies are dropped.
        await self.redis.set(key, entry, ex=self.ttl)
        if self.local:
            self._cache[key] = entry
            if len(self._cache) > self.local:
                self._cache.popitem(last=False)
