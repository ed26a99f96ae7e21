"""Per-charger command queues: backend CALLs that follow the charger.

A backend CALL sent with ``wait`` (``client.call(…, wait=seconds)``) is not
addressed to a node but to the charger: it goes into the charger's queue and
whichever node holds the charger — now, after a reconnect, after its old node
died — delivers it. docs/streams.md, "Command queues", is the contract; the
keys, all with the identity as Redis Cluster hash tag so every script below
touches one slot:

- ``<prefix>:cmd:{<identity>}`` — a stream of pending commands, oldest first
  (fields ``v`` ``1``, ``id``, ``action``, ``payload``, ``timeout``,
  ``expires`` ms since the epoch, optional ``reply_to``);
- ``<prefix>:cmd:{<identity>}:claim`` — a hash, entry id → ``<node> <conn>
  held`` (taken by a connection, not sent yet) or ``<node> <conn> sent
  <deadline ms>`` (written to the charger);
- ``<prefix>:cmd:due`` — a sorted set, identity → earliest ``expires`` of its
  queue, so nodes can expire commands of chargers that never come back.

Exactly once, in order: only the head of a queue is ever handed out, to one
connection at a time (``PULL``); the claim becomes ``sent`` only by a
compare-and-set (``MARK_SENT``) just before the frame is written, and an
entry is removed only by compare-and-delete (``DONE``), whose caller alone
publishes the outcome. A connection that closes before sending gives its
claim back (``RELEASE``); a node that dies leaves a ``held`` claim that the
next connection takes over, or a ``sent`` claim that ends as ``failed
Closed`` once its deadline has passed (it may have reached the charger:
never sent twice).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from router.streams.connection import SharedConnection
from router.streams.fleet import Script

#: Commands one charger's queue holds at most (beyond: ``QueueFull``).
MAX_QUEUED = 1000
#: Seconds the queue keys outlive the longest wait + timeout added to them.
KEY_GRACE_S = 3600

# KEYS: queue. ARGV: max entries, keep ms, then the entry's field pairs.
# -> the entry id, or false when the queue is full.
ENQUEUE = """\
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return id
"""

# KEYS: queue, claim. ARGV: node, conn, now ms, keep ms.
# -> {taken, expired, interrupted, busy}: the head entry claimed for this
#    connection ({id, fields} or false; a head this connection already holds
#    unsent is handed out again: the node lost track of it after a Redis
#    error), entries that expired unsent, a head that was sent by a
#    connection whose deadline passed, and 1 when the head is sent and still
#    within its deadline (ask again later).
PULL = """\
local me = ARGV[1] .. ' ' .. ARGV[2]
local now = tonumber(ARGV[3])
local expired, interrupted = {}, false
for _ = 1, 100 do
  local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  if not head then return {false, expired, interrupted, 0} end
  local id, fields = head[1], head[2]
  local claim = redis.call('HGET', KEYS[2], id)
  local expires = 0
  for i = 1, #fields, 2 do
    if fields[i] == 'expires' then expires = tonumber(fields[i + 1]) end
  end
  local state, deadline = nil, 0
  if claim then
    local words = {}
    for w in string.gmatch(claim, '%S+') do words[#words + 1] = w end
    state = words[3]
    deadline = tonumber(words[4] or '0')
    if state == 'sent' and (words[1] .. ' ' .. words[2]) == me then
      return {false, expired, interrupted, 1}
    end
  end
  if state == 'sent' then
    if now <= deadline then return {false, expired, interrupted, 1} end
    redis.call('XDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    interrupted = {id, fields}
  elseif now > expires then
    redis.call('XDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    expired[#expired + 1] = {id, fields}
  else
    redis.call('HSET', KEYS[2], id, me .. ' held')
    if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[4]) then
      redis.call('PEXPIRE', KEYS[2], ARGV[4])
    end
    return {{id, fields}, expired, interrupted, 0}
  end
end
return {false, expired, interrupted, 0}
"""

# KEYS: queue, claim. ARGV: entry, node, conn, now ms, deadline ms.
# -> 1 sent (claim is ours and held), 0 lost (someone else has it now),
#    -1 expired before it could be sent (removed; caller publishes Expired).
MARK_SENT = """\
local me = ARGV[2] .. ' ' .. ARGV[3]
if redis.call('HGET', KEYS[2], ARGV[1]) ~= me .. ' held' then return 0 end
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])[1]
if not entry then redis.call('HDEL', KEYS[2], ARGV[1]); return 0 end
for i = 1, #entry[2], 2 do
  if entry[2][i] == 'expires' and tonumber(entry[2][i + 1]) < tonumber(ARGV[4]) then
    redis.call('XDEL', KEYS[1], ARGV[1])
    redis.call('HDEL', KEYS[2], ARGV[1])
    return -1
  end
end
redis.call('HSET', KEYS[2], ARGV[1], me .. ' sent ' .. ARGV[5])
return 1
"""

# KEYS: queue, claim. ARGV: entry, node, conn. Compare-and-delete: 1 when
# this connection's claim was removed with the entry (the caller publishes).
DONE = """\
local claim = redis.call('HGET', KEYS[2], ARGV[1])
local me = ARGV[2] .. ' ' .. ARGV[3] .. ' '
if not claim or string.sub(claim, 1, #me) ~= me then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# KEYS: claim. ARGV: entry, node, conn. Give back a claim not sent yet.
RELEASE = """\
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] .. ' ' .. ARGV[3] .. ' held' then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

# KEYS: queue, claim. ARGV: now ms. Remove every entry that expired and is
# not sent. -> {expired entries, the earliest expires left or false}.
SWEEP = """\
local now = tonumber(ARGV[1])
local expired, nxt = {}, false
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1000)) do
  local id, fields = entry[1], entry[2]
  local expires = 0
  for i = 1, #fields, 2 do
    if fields[i] == 'expires' then expires = tonumber(fields[i + 1]) end
  end
  local claim = redis.call('HGET', KEYS[2], id)
  local sent = claim and string.find(claim, ' sent ', 1, true)
  if not sent and now > expires then
    redis.call('XDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    expired[#expired + 1] = {id, fields}
  elseif not nxt or expires < nxt then
    nxt = expires
  end
end
return {expired, nxt}
"""

# KEYS: queue, claim. ARGV: entry. The caller gave up waiting: remove the
# entry unless it was sent. 1 removed (never delivered), 0 sent or gone.
CANCEL = """\
local claim = redis.call('HGET', KEYS[2], ARGV[1])
if claim and string.find(claim, ' sent ', 1, true) then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('XDEL', KEYS[1], ARGV[1])
"""

# KEYS: due. ARGV: identity, now ms. Forget an identity whose earliest expiry
# has passed (a newer, later one was re-added with ZADD by the sweeper).
UNDUE = """\
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


class QueueKeys:
    """Key names of the command queues of one deployment."""

    __slots__ = ("due", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.due = f"{prefix}:cmd:due".encode()

    def queue(self, identity: str) -> bytes:
        """``<prefix>:cmd:{<identity>}``."""
        return f"{self.prefix}:cmd:{{{identity}}}".encode()

    def claim(self, identity: str) -> bytes:
        """``<prefix>:cmd:{<identity>}:claim``."""
        return f"{self.prefix}:cmd:{{{identity}}}:claim".encode()


class Entry(NamedTuple):
    """A queued command as a script returned it."""

    entry_id: bytes
    fields: dict[bytes, bytes]


def entry_of(raw: Any) -> Entry:
    """``{id, {name, value, …}}`` from a script reply → :class:`Entry`."""
    entry_id, flat = raw[0], raw[1]
    return Entry(_b(entry_id), {_b(flat[i]): _b(flat[i + 1]) for i in range(0, len(flat), 2)})


def _b(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class PullResult(NamedTuple):
    """What :meth:`NodeQueues.pull` found at the head of a queue."""

    taken: Entry | None
    expired: list[Entry]
    interrupted: Entry | None
    busy: bool


class NodeQueues:
    """The router node's side of the command queues (scripts over its shared
    connection; every call raises ``StreamsError`` when Redis fails)."""

    def __init__(self, redis: SharedConnection, prefix: str) -> None:
        self.redis = redis
        self.keys = QueueKeys(prefix)
        self._pull = Script(PULL)
        self._mark = Script(MARK_SENT)
        self._done = Script(DONE)
        self._release = Script(RELEASE)
        self._sweep = Script(SWEEP)
        self._undue = Script(UNDUE)

    def _both(self, identity: str) -> list[bytes]:
        return [self.keys.queue(identity), self.keys.claim(identity)]

    async def pull(self, identity: str, node: str, conn: str, now_ms: int) -> PullResult:
        reply = await self._pull.run(self.redis, self._both(identity), node, conn, now_ms,
                                     KEY_GRACE_S * 1000)
        taken = entry_of(reply[0]) if reply[0] else None
        expired = [entry_of(e) for e in reply[1] or ()]
        interrupted = entry_of(reply[2]) if reply[2] else None
        return PullResult(taken, expired, interrupted, bool(reply[3]))

    async def mark_sent(self, identity: str, entry_id: bytes, node: str, conn: str,
                        now_ms: int, deadline_ms: int) -> int:
        return int(await self._mark.run(self.redis, self._both(identity), entry_id, node, conn,
                                        now_ms, deadline_ms))

    async def done(self, identity: str, entry_id: bytes, node: str, conn: str) -> bool:
        return bool(await self._done.run(self.redis, self._both(identity), entry_id, node, conn))

    async def release(self, identity: str, entry_id: bytes, node: str, conn: str) -> bool:
        return bool(await self._release.run(self.redis, [self.keys.claim(identity)], entry_id,
                                            node, conn))

    async def due(self, now_ms: int, limit: int = 200) -> list[str]:
        """Identities whose queue holds a command past its ``expires``."""
        reply = await self.redis.command(b"ZRANGEBYSCORE", self.keys.due, b"-inf", now_ms,
                                         b"LIMIT", 0, limit, timeout=5.0)
        return [(r.decode() if isinstance(r, bytes) else str(r)) for r in reply or ()]

    async def sweep(self, identity: str, now_ms: int) -> list[Entry]:
        """Remove the expired, unsent commands of ``identity``; keep the due
        index right."""
        reply = await self._sweep.run(self.redis, self._both(identity), now_ms)
        expired = [entry_of(e) for e in reply[0] or ()]
        nxt = reply[1]
        if nxt:
            await self.redis.command(b"ZADD", self.keys.due, int(nxt), identity, timeout=5.0)
        else:
            await self._undue.run(self.redis, [self.keys.due], identity, now_ms)
        return expired
