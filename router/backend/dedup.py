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
trip. An entry is marked *after* its handler finished and before it is
acknowledged, with the stream entry that carried it: a copy under another
entry id is dropped (acknowledged, not handled). The *same* entry delivered
again (claimed) is handled again: its answer or its acknowledgement was not
written — a master died mid-write; on a cluster the answer and the mark live
on different masters, so the mark may have landed without the answer — and
its charger may still wait for that answer. A handler may thus run twice for
one entry (the router drops an answer to a CALL no longer pending), never for
two copies of one message. Two copies handled at the same
moment by two consumers are both handled (the check is not a lock); repeats
come seconds apart (a reconnect), so that is rare, and handlers stay
idempotent where it matters (as for any at-least-once stream).

Cost: the app asks once per batch, not once per entry. A shard reader sends
one pipelined ``GET`` per entry of the batch it read, in one write on its
own connection, before it hands the batch to the handlers (:meth:`plan`);
the mark is a ``SET … EX`` that leaves in the same write as the entry's
answer (:meth:`mark_command`). The keys carry the shard's hash tag, so on a
Redis Cluster they live on the node of the shard they came from, like the
handlers' ``Message.write`` commands. Only entries handled outside a batch
(claimed from a dead consumer, or queued behind an ``async def`` handler of
the same charger) ask with a round trip of their own (:meth:`seen`).

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
        # key → the "<stream> <entry id>" that was handled (see entry_of)
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self.dropped = 0

    def key(self, msg: Message) -> str | None:
        """The Redis key that stands for ``msg``, None for entries that cannot
        repeat unnoticed (``send`` and ``failed`` carry no charger message id).

        ``<prefix>:seen:<group>:{N}:<cs>:<conn>:<kind>[:<id>]``, ``{N}`` being the
        hash tag of the inbound shard the entry came from."""
        stream = msg.stream
        tag = stream[stream.rfind("{"):] if stream.endswith("}") else ""
        if msg.kind in _WITH_ID and msg.id and msg.conn:
            return f"{self._head}{tag}:{msg.cs}:{msg.conn}:{msg.kind}:{msg.id}"
        if msg.kind in _ONCE_PER_CONN and msg.conn:
            return f"{self._head}{tag}:{msg.cs}:{msg.conn}:{msg.kind}"
        return None

    @staticmethod
    def entry_of(msg: Message) -> bytes:
        """What a mark holds: the stream entry that was handled."""
        return f"{msg.stream} {msg.entry_id}".encode()

    def is_repeat(self, msg: Message, marked: bytes | str | None) -> bool:
        """``msg`` is a copy of a message handled from another entry (``marked``:
        the mark's value, None if there is none)."""
        if marked is None:
            return False
        if isinstance(marked, str):
            marked = marked.encode()
        return marked != self.entry_of(msg)

    def plan(self, msgs: list[Message]) -> tuple[list[tuple[int, str]], set[int]]:
        """What to ask Redis about a batch read from one shard.

        Returns the messages (index, key) whose key Redis must be asked about
        (``GET``, then :meth:`is_repeat`), and the indexes of repeats known
        without asking: copies of a message earlier in the batch or of one
        whose answer this process wrote lately (the local cache). Messages in
        neither (no key, or this very entry handled here before) need no check.
        """
        ask: list[tuple[int, str]] = []
        repeats: set[int] = set()
        batch: set[str] = set()
        cache = self._cache
        for i, msg in enumerate(msgs):
            key = self.key(msg)
            if key is None:
                continue
            cached = cache.get(key)
            if key in batch or (cached is not None and cached != self.entry_of(msg)):
                # The first copy is handled by this process; if it fails it
                # stays pending and is claimed and retried: nothing is lost.
                repeats.add(i)
                continue
            if cached is not None:
                continue    # this entry again: its answer may be lost, handle it
            batch.add(key)
            ask.append((i, key))
        return ask, repeats

    def remember(self, key: str, entry: bytes) -> None:
        """``key``'s message was handled by this process from ``entry`` (local cache)."""
        if self.local:
            cache = self._cache
            cache[key] = entry
            if len(cache) > self.local:
                cache.popitem(last=False)

    def mark_command(self, msg: Message) -> tuple[bytes | str | int, ...] | None:
        """The ``SET`` that marks ``msg`` handled; it rides with the answer."""
        key = self.key(msg)
        if key is None:
            return None
        return (b"SET", key, self.entry_of(msg), b"EX", self.ttl)

    async def seen(self, msg: Message) -> bool:
        """True if the group handled this charger message already, from
        another stream entry (a copy the router wrote again); False for the
        entry that was handled itself, delivered again.

        Raises:
            redis.exceptions.RedisError: Redis failed (the entry stays pending).
        """
        key = self.key(msg)
        if key is None:
            return False
        marked: bytes | str | None = self._cache.get(key)
        if marked is not None:
            self._cache.move_to_end(key)
        else:
            marked = await self.redis.get(key)
        hit = self.is_repeat(msg, marked)
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
        entry = self.entry_of(msg)
        await self.redis.set(key, entry, ex=self.ttl)
        self.remember(key, entry)
