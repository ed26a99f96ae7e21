"""The charger registry: ``<prefix>:cs:<identity>`` hashes and node liveness keys.

Semantics (docs/streams.md, "Registry"): a hash with ``node``, ``conn``,
``proto``, ``since``, ``addr``, written when a connection is accepted and kept
alive with a TTL while it lives. A newer connection of the same identity
overwrites it; an old connection's cleanup deletes it only if ``conn`` still
matches. Both the takeover and the conditional delete are Lua scripts, so each
is one atomic step on the server (https://redis.io/docs/latest/develop/interact/programmability/eval-intro/):
no other client can slip between reading the old holder and writing the new
one. Each script touches only its one key (``KEYS[1]``), so it runs on Redis
Cluster too.

Not on the hot path: it works over redis-py's asyncio client or a
:class:`~router.streams.connection.RedisConnection`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
import redis.exceptions as rexc

from router.streams.connection import RedisConnection, SharedConnection
from router.streams.errors import (
    ConnectionLostError,
    RedisReplyError,
    RedisTimeoutError,
    StreamsError,
)
from router.streams.keys import KeySpace

# Read the old holder, replace the whole hash (no stale fields survive), set
# the TTL; return the old node and conn, or nil when there was none.
_REGISTER = """\
local old = redis.call('HMGET', KEYS[1], 'node', 'conn')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'conn', ARGV[2], 'proto', ARGV[3],
           'since', ARGV[4], 'addr', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
if old[1] then return {old[1], old[2] or ''} end
return false
"""

# Restore an entry that vanished (Redis restarted without persistence, or the
# TTL ran out during an outage) — but never overwrite one a newer connection
# wrote in the meantime. ARGV[7..]: further field/value pairs of the entry (a
# SOAP charger's transport and endpoint).
_RESTORE = """\
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'conn', ARGV[2], 'proto', ARGV[3],
           'since', ARGV[4], 'addr', ARGV[5])
if #ARGV > 6 then redis.call('HSET', KEYS[1], unpack(ARGV, 7)) end
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""
# Delete only when this connection still holds the entry.
_UNREGISTER = """\
if redis.call('HGET', KEYS[1], 'conn') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


#: Identities refreshed per round trip (see :meth:`Registry.refresh`).
REFRESH_CHUNK = 1000


class Entry(NamedTuple):
    """One registry entry to write back (see :meth:`Registry.restore_many`)."""

    identity: str
    node: str
    conn: str
    proto: str
    since_ms: int
    addr: str
    #: Further field/value pairs (a SOAP charger's ``transport``, ``endpoint``).
    extra: tuple[str, ...] = ()


class Holder(NamedTuple):
    """Where an identity was connected before a takeover."""

    node: str
    conn: str


class _Script:
    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Registry:
    """Writes and reads the registry of one deployment.

    Args:
        redis: redis-py asyncio client or a connected :class:`RedisConnection`.
        keys: the deployment's key space.
        ttl: seconds an entry lives without :meth:`refresh` (``--registry-ttl``).

    Raises:
        ValueError: a TTL below one second.
    """

    def __init__(self, redis: aioredis.Redis | RedisConnection | SharedConnection,
                 keys: KeySpace,
                 ttl: int = 300) -> None:
        if ttl < 1:
            raise ValueError("the registry TTL must be at least 1 s")
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        self._register = _Script(_REGISTER)
        self._unregister = _Script(_UNREGISTER)
        self._restore = _Script(_RESTORE)

    # -- public API -----------------------------------------------------------

    async def register(self, identity: str, *, node: str, conn: str, proto: str,
                       since_ms: int, addr: str) -> Holder | None:
        """Record that ``identity`` is now connected as ``conn`` on ``node``.

        Args:
            identity: the charger identity.
            node, conn, proto, since_ms, addr: the registry fields.

        Returns:
            The previous holder ``(node, conn)`` when there was one (the caller
            closes that connection: takeover), else None.

        Raises:
            StreamsError: Redis failed or is unreachable.
        """
        reply = await self._eval(self._register, self.keys.registry(identity),
                                 node, conn, proto, since_ms, addr, self.ttl)
        if not reply:
            return None
        return Holder(_text(reply[0]), _text(reply[1]))

    async def restore(self, identity: str, *, node: str, conn: str, proto: str,
                      since_ms: int, addr: str, extra: Sequence[str] = ()) -> bool:
        """Write the entry of ``identity`` only if there is none (see
        :meth:`refresh`): a lost entry comes back, a newer holder's stays.
        ``extra``: further field/value pairs of the entry, written with it.

        Returns:
            True if written, False if an entry existed.

        Raises:
            StreamsError: Redis failed or is unreachable.
        """
        return bool(await self._eval(self._restore, self.keys.registry(identity),
                                     node, conn, proto, since_ms, addr, self.ttl, *extra))

    async def restore_many(self, entries: Iterable[Entry]) -> int:
        """:meth:`restore` for many entries: pipelined, :data:`REFRESH_CHUNK`
        per round trip, one chunk in flight at a time.

        This is how a node writes its whole registry back after Redis lost it
        (a restart without persistence): tens of thousands of sequential round
        trips would leave backends without a route for seconds to minutes, one
        huge pipeline would block the event loop; chunks do neither. The
        script cache is empty after such a restart too: entries answered
        ``NOSCRIPT`` are sent again with ``EVAL`` (which loads the script, so
        the next chunks' ``EVALSHA`` work). One key per command: valid on
        Redis Cluster.

        Returns:
            How many entries were written (the others existed already).

        Raises:
            StreamsError: Redis failed or is unreachable.
        """
        batch = list(entries)
        script = self._restore
        written = 0
        for start in range(0, len(batch), REFRESH_CHUNK):
            chunk = batch[start:start + REFRESH_CHUNK]
            args: list[tuple[bytes | str | int, ...]] = [
                (self.keys.registry(e.identity), e.node, e.conn, e.proto, e.since_ms, e.addr,
                 self.ttl, *e.extra) for e in chunk]
            replies = await self._pipeline([(b"EVALSHA", script.sha, 1, *a) for a in args])
            again = [a for a, reply in zip(args, replies, strict=True)
                     if isinstance(reply, BaseException) and _noscript(reply)]
            if again:
                replies = [r for r in replies if not (isinstance(r, BaseException)
                                                       and _noscript(r))]
                replies += await self._pipeline([(b"EVAL", script.source, 1, *a)
                                                 for a in again])
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise RedisReplyError(f"registry restore failed: {reply}")
                written += bool(reply)
        return written

    async def unregister(self, identity: str, conn: str) -> bool:
        """Delete the entry of ``identity`` if ``conn`` still holds it.

        Returns:
            True if it was deleted, False if it was gone or a newer connection
            holds it.

        Raises:
            StreamsError: Redis failed or is unreachable.
        """
        return bool(await self._eval(self._unregister, self.keys.registry(identity), conn))

    async def refresh(self, identities: Iterable[str]) -> list[str]:
        """Extend the TTL of these identities' entries: pipelined ``EXPIRE``s,
        :data:`REFRESH_CHUNK` per round trip.

        Chunking keeps the event loop responsive on a node holding tens of
        thousands of chargers (one redis-py pipeline of 50,000 commands is
        about a second of CPU in one go); one key per command keeps it valid
        on Redis Cluster.

        Returns:
            The identities whose entry was missing (expired, or lost in a Redis
            restart without persistence), so the caller can register them again.

        Raises:
            StreamsError: Redis failed or is unreachable.
        """
        idents = list(identities)
        missing = []
        for start in range(0, len(idents), REFRESH_CHUNK):
            chunk = idents[start:start + REFRESH_CHUNK]
            replies = await self._pipeline(
                [(b"EXPIRE", self.keys.registry(i), self.ttl) for i in chunk])
            for ident, reply in zip(chunk, replies, strict=True):
                if isinstance(reply, BaseException):
                    raise RedisReplyError(f"EXPIRE failed: {reply}")
                if not reply:
                    missing.append(ident)
        return missing

    async def lookup(self, identity: str) -> dict[str, str] | None:
        """The registry entry of ``identity`` as text, or None.

        Raises:
            StreamsError: Redis failed or is unreachable.
        """
        reply = await self._command(b"HGETALL", self.keys.registry(identity))
        if not reply:
            return None
        if isinstance(reply, dict):   # redis-py turns HGETALL into a dict
            return {_text(k): _text(v) for k, v in reply.items()}
        return {_text(reply[i]): _text(reply[i + 1]) for i in range(0, len(reply), 2)}

    async def node_alive(self, node: str, ttl: int) -> None:
        """Set the liveness key ``<prefix>:node:<node>`` for ``ttl`` seconds;
        its value is this node's clock, ms since the epoch, when it was set.

        Raises:
            StreamsError: Redis failed or is unreachable.
        """
        await self._command(b"SET", self.keys.node(node), int(time.time() * 1000),
                            b"EX", max(1, ttl))

    async def node_is_alive(self, node: str) -> bool:
        """True while ``node`` keeps its liveness key.

        Raises:
            StreamsError: Redis failed or is unreachable.
        """
        return bool(await self._command(b"EXISTS", self.keys.node(node)))

    # -- transport ------------------------------------------------------------

    async def _eval(self, script: _Script, key: bytes, *args: str | int) -> Any:
        # EVALSHA first (the script body is not resent each time); the script
        # cache is empty after a Redis restart or failover, then NOSCRIPT → EVAL.
        try:
            return await self._command(b"EVALSHA", script.sha, 1, key, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self._command(b"EVAL", script.source, 1, key, *args)

    async def _command(self, *args: bytes | str | int) -> Any:
        redis = self.redis
        if isinstance(redis, RedisConnection | SharedConnection):
            return await redis.command(*args, timeout=_TIMEOUT)
        try:
            return await redis.execute_command(*args)  # type: ignore[no-untyped-call]
        except rexc.NoScriptError as exc:
            raise RedisReplyError(f"NOSCRIPT {exc}") from None
        except rexc.RedisError as exc:
            raise _translate(exc) from None

    async def _pipeline(self, commands: Sequence[tuple[bytes | str | int, ...]]) -> list[Any]:
        redis = self.redis
        if isinstance(redis, RedisConnection | SharedConnection):
            return await redis.pipeline(commands, timeout=_TIMEOUT)
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for cmd in commands:
                    pipe.execute_command(*cmd)
                return list(await pipe.execute(raise_on_error=False))
        except rexc.RedisError as exc:
            raise _translate(exc) from None


# Registry calls are not on the hot path; bound them anyway so a frozen Redis
# cannot hang a connection's setup forever.
_TIMEOUT = 5.0


def _noscript(reply: BaseException) -> bool:
    """A ``NOSCRIPT`` error reply (redis-py has its own class for it)."""
    return isinstance(reply, rexc.NoScriptError) or str(reply).startswith("NOSCRIPT")


def _translate(exc: rexc.RedisError) -> StreamsError:
    """redis-py's exceptions → this layer's (one base for the router to catch)."""
    if isinstance(exc, rexc.TimeoutError):
        return RedisTimeoutError(str(exc))
    if isinstance(exc, rexc.ConnectionError):
        return ConnectionLostError(str(exc))
    return RedisReplyError(str(exc))
