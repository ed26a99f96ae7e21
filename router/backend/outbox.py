"""Answers and acknowledgements of the backend SDK, encoded in C, written in batches.

:class:`Answers` collects what handlers produced for one pipelined write:
the RESP of every reply (``XADD`` to ``<prefix>:out:<node>``) and of the
Redis commands handlers added with :meth:`Message.write`, in one
``CommandBuffer`` (``router.streams._resp``), plus which entry each group of
commands answers. Entries without anything to write are acknowledged in the
same write; an entry with a reply is acknowledged only after Redis confirmed
every command of its group (docs/streams.md: acknowledge only after the
reply is written), so its ``XACK`` goes out with the next write. Redis runs a
connection's commands in order, but a failed ``XADD`` does not stop the
``XACK`` behind it: hence the second step.

The per-shard readers (``router.backend.app``) put their ``Answers`` in
front of the next ``XREADGROUP``, so a batch costs one round trip. The
:class:`Outbox` writes the answers of handlers that finished later (after
an ``await``), on a connection of its own, in two round trips per flush.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from router.streams._resp import CommandBuffer
from router.streams.connection import RedisConnection
from router.streams.errors import RedisReplyError, StreamsError

if TYPE_CHECKING:
    from router.backend.message import Message

log = logging.getLogger(__name__)

# docs/streams.md: "Backends should add to out streams with MAXLEN ~ 100000".
OUT_MAXLEN = 100_000


class Answers:
    """What one pipelined write carries for the handlers (see the module doc).

    ``buf`` holds the commands; ``counts[k]`` commands in it answer
    ``msgs[k]``; ``acks`` are entries to acknowledge in this write.
    """

    __slots__ = ("acks", "buf", "counts", "msgs")

    def __init__(self) -> None:
        self.buf = CommandBuffer(1 << 16)
        self.counts: list[int] = []
        self.msgs: list[Message] = []
        self.acks: list[Message] = []

    def __bool__(self) -> bool:
        return bool(self.msgs or self.acks)

    def confirm(self, replies: list[Any], first: int,
                failed: Callable[[Message, str], None]) -> tuple[list[Message], int]:
        """Check the replies of this write's groups (they start at ``first``).

        Returns the entries whose every command succeeded (to acknowledge
        next) and the index after the last reply of the groups. ``failed`` is
        called for each other entry, with the first error.
        """
        ok: list[Message] = []
        pos = first
        for n, msg in zip(self.counts, self.msgs, strict=True):
            end = pos + n
            error = None
            for reply in replies[pos:end]:
                if type(reply) is RedisReplyError:
                    error = str(reply)
                    break
            if error is None:
                ok.append(msg)
            else:
                failed(msg, error)
            pos = end
        return ok, pos


def append_acks(buf: CommandBuffer, group: bytes, msgs: list[Message]) -> int:
    """Append the ``XACK``s of ``msgs`` (one per stream); return how many commands."""
    by_stream: dict[str, list[bytes]] = {}
    for msg in msgs:
        ids = by_stream.get(msg.stream)
        if ids is None:
            ids = by_stream[msg.stream] = []
        ids.append(msg.entry_ref)
    for stream, ids in by_stream.items():
        buf.append_command(b"XACK", stream, group, *ids)
    return len(by_stream)


class Outbox:
    """Writes the answers of handlers that finished outside a reader's batch.

    Args:
        connect: opens the outbox's connection (``Connector.connect``).
        group: the consumer group that acknowledges.
        failed: called for an entry whose answer or acknowledgement failed
            (it stays pending), with the error.
        done: called for every entry once its fate is known (acknowledged or
            left pending).
        stats: counts ``handled`` (acknowledged) entries.
        send: on Redis Cluster, ``Connector.send``: writes the commands split
            per master (the outbox then has no connection of its own).
    """

    def __init__(self, connect: Callable[[], Any], group: str,
                 failed: Callable[[Message, str], None],
                 done: Callable[[list[Message]], None],
                 stats: collections.Counter[str],
                 send: Callable[[bytes, int], Awaitable[list[Any]]] | None = None) -> None:
        self.stats = stats
        self._routed_send = send
        self._connect = connect
        self.group = group.encode()
        self._failed = failed
        self._done = done
        self.answers = Answers()
        self._conn: RedisConnection | None = None
        self._task: asyncio.Task[None] | None = None

    def kick(self) -> None:
        """Write what was added to :attr:`answers` (soon, batched with others)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="backend-outbox")

    async def idle(self) -> None:
        """Return once everything added so far is written (or failed)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        await self.idle()
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
            self._conn = None

    async def _run(self) -> None:
        try:
            while self.answers:
                # One yield lets every handler finishing in this iteration add
                # its answer; under load, answers also pile up during a write.
                await asyncio.sleep(0)
                answers, self.answers = self.answers, Answers()
                await self._write(answers)
        finally:
            self._task = None

    async def _send(self, buf: CommandBuffer) -> list[Any]:
        if self._routed_send is not None:
            n = len(buf)
            return await self._routed_send(buf.take(), n)
        if self._conn is None or not self._conn.connected:
            self._conn = await self._connect()
        n = len(buf)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._conn.send_raw(buf.take(), n, lambda r: _settle(fut, r), 30.0)
        result = await fut
        if isinstance(result, StreamsError):
            raise result
        return list(result)

    async def _write(self, answers: Answers) -> None:
        everyone = [*answers.msgs, *answers.acks]
        try:
            buf = answers.buf
            if answers.acks:
                append_acks(buf, self.group, answers.acks)
            replies = await self._send(buf)
            self.stats["handled"] += len(answers.acks)
            ok, _ = answers.confirm(replies, 0, self._failed)
            if ok:
                # The second step: the replies are in their out streams.
                buf = CommandBuffer(4096)
                append_acks(buf, self.group, ok)
                await self._send(buf)
                self.stats["handled"] += len(ok)
        except (StreamsError, OSError) as exc:
            log.warning("writing %d answers failed (they stay pending): %s", len(everyone), exc)
            if self._conn is not None:
                self._conn.abort()
                self._conn = None
        finally:
            self._done(everyone)


def _settle(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)
