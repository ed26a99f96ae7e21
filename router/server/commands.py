"""Commands that follow the charger: the node's side of the command queues.

A backend CALL sent with ``wait`` sits in the charger's queue in Redis
(:mod:`router.streams.commands`) until a node holding the charger takes it.
This node pulls the head of a charger's queue when the charger connects, when
a backend adds a ``pull`` entry to ``<prefix>:out:<node>`` (the SDK does after
queueing), and when the previous queued command ended. A connection holds at
most one queued command at a time, so a charger gets them one by one, in the
order they were queued.

The command then goes through the same checks and the same per-connection
queue as any backend CALL (``Node._out_entry``). Just before its frame is
written, its claim becomes ``sent`` by a compare-and-set; if the connection
closes before that, the claim is given back and the next connection (on any
node) delivers it. Every end of a queued command publishes exactly one
``result`` / ``error`` / ``failed`` entry, then removes it from the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from router.server.wsconn import ConnectionState
from router.streams.commands import Entry, NodeQueues

if TYPE_CHECKING:
    from router.server.connection import BackendCall, ChargerConnection
    from router.server.node import Node

log = logging.getLogger("router.commands")

SWEEP_EVERY = 1.0    # seconds between checks for expired commands
RETRY_AFTER = 1.0    # seconds before pulling again after a Redis error or a busy head


def now_ms() -> int:
    return int(time.time() * 1000)


class Commands:
    """One node's share of the command queues (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.queues = NodeQueues(node.redis, node.config.key_prefix)
        self.pulling: set[ChargerConnection] = set()
        self.again: set[ChargerConnection] = set()
        self.holding: dict[ChargerConnection, BackendCall] = {}

    # ------------------------------------------------------------- triggers
    def poke(self, conn: ChargerConnection) -> None:
        """Look at the head of ``conn``'s charger queue (soon, not now)."""
        if not conn.opened or conn in self.holding:
            return
        if conn in self.pulling:
            self.again.add(conn)
            return
        self.pulling.add(conn)
        self._spawn(self._pull(conn))

    def on_pull_entry(self, identity: str) -> None:
        """A ``pull`` entry in the out stream: a command was queued for ``identity``."""
        conn = self.node.by_identity.get(identity)
        if conn is not None:
            self.poke(conn)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.node._auth_tasks.add(task)
        task.add_done_callback(self.node._auth_tasks.discard)

    def _later(self, conn: ChargerConnection) -> None:
        asyncio.get_running_loop().call_later(RETRY_AFTER, self.poke, conn)

    # ----------------------------------------------------------------- pull
    async def _pull(self, conn: ChargerConnection) -> None:
        node = self.node
        identity = conn.identity or ""
        try:
            res = await self.queues.pull(identity, node.node_id, conn.conn_id, now_ms())
        except Exception:
            node.metrics.inc(node.metrics.redis_errors, "commands")
            self.pulling.discard(conn)
            self._later(conn)
            return
        self.pulling.discard(conn)
        again = conn in self.again
        self.again.discard(conn)
        for entry in res.expired:
            self._end(identity, entry, "expired", "Expired",
                      "the charger was not connected before the command's wait ran out")
        if res.interrupted is not None:
            self._end(identity, res.interrupted, "interrupted", "Closed",
                      "the node holding the charger stopped before the charger answered")
        if res.taken is not None:
            self._take(conn, identity, res.taken)
        elif res.busy:
            self._later(conn)          # another connection's command is still out
        elif again or res.expired or res.interrupted is not None:
            self.poke(conn)

    def _end(self, identity: str, entry: Entry, outcome: str, code: str,
             description: str) -> None:
        f = entry.fields
        self.node.metrics.inc(self.node.metrics.commands, outcome)
        self.node.fail(identity, _text(f.get(b"id")), _text(f.get(b"action")) or None, code,
                       description, ref=entry.entry_id, reply_to=f.get(b"reply_to") or None)

    def _take(self, conn: ChargerConnection, identity: str, entry: Entry) -> None:
        node = self.node
        if not conn.opened or node.by_identity.get(identity) is not conn:
            self._spawn(self._release(conn, identity, entry.entry_id))
            return
        fields = dict(entry.fields)
        fields[b"kind"] = b"call"
        fields[b"cs"] = identity.encode()
        fields[b"conn"] = conn.conn_b
        node._out_entry(entry.entry_id, fields, qid=entry.entry_id)
        call = _queued(conn, entry.entry_id)
        if call is None:
            # Refused by the checks (invalid payload, queue full …): the
            # failed entry is out; the command must not be tried again.
            self._spawn(self._done(conn, identity, entry.entry_id, poke=True))
            return
        self.holding[conn] = call

    async def _release(self, conn: ChargerConnection, identity: str, entry_id: bytes) -> None:
        try:
            await self.queues.release(identity, entry_id, self.node.node_id, conn.conn_id)
        except Exception:
            # The claim stays "held": the next connection takes it over.
            self.node.metrics.inc(self.node.metrics.redis_errors, "commands")

    async def _done(self, conn: ChargerConnection, identity: str, entry_id: bytes,
                    poke: bool) -> None:
        try:
            await self.queues.done(identity, entry_id, self.node.node_id, conn.conn_id)
        except Exception:
            self.node.metrics.inc(self.node.metrics.redis_errors, "commands")
        if poke:
            self.poke(conn)

    # ----------------------------------------------- the connection's calls
    def start(self, conn: ChargerConnection, call: BackendCall) -> None:
        """``call`` (queued) is next on ``conn``: claim it as sent, then send."""
        self._spawn(self._start(conn, call))

    async def _start(self, conn: ChargerConnection, call: BackendCall) -> None:
        node = self.node
        identity = conn.identity or ""
        assert call.qid is not None
        if conn.state != ConnectionState.OPEN:
            # Closing (rebalancing, takeover, drain): a frame written now would
            # be dropped. Not sent: fail_all_calls gives the claim back.
            return
        t = now_ms()
        try:
            state = await self.queues.mark_sent(identity, call.qid, node.node_id, conn.conn_id,
                                                t, t + int(call.timeout * 1000) + 5000)
        except Exception:
            node.metrics.inc(node.metrics.redis_errors, "commands")
            state = 0     # not sent: it stays queued (held), delivered later
            if conn.opened:
                self._later(conn)
        if conn.inflight is not call:
            # Closed meanwhile (fail_all_calls gave the claim back).
            if state == 1:
                node.metrics.inc(node.metrics.commands, "interrupted")
                node.fail(identity, call.id, call.action, "Closed",
                          "the connection closed while the command was being sent",
                          ref=call.qid, reply_to=call.reply_to)
                self._spawn(self._done(conn, identity, call.qid, poke=False))
            elif state == -1:
                node.metrics.inc(node.metrics.commands, "expired")
                node.fail(identity, call.id, call.action, "Expired",
                          "the command's wait ran out before it could be sent",
                          ref=call.qid, reply_to=call.reply_to)
            return
        if state == 1 and conn.state != ConnectionState.OPEN:
            # Began closing while the claim was marked: nothing was written.
            # The charger may be back any moment; the claim ends as sent, so
            # it is failed now rather than after its deadline.
            node.metrics.inc(node.metrics.commands, "interrupted")
            node.fail(identity, call.id, call.action, "Closed",
                      "the connection closed while the command was being sent",
                      ref=call.qid, reply_to=call.reply_to)
            self.holding.pop(conn, None)
            conn.inflight = None
            self._spawn(self._done(conn, identity, call.qid, poke=False))
            return
        if state == 1:
            node.metrics.inc(node.metrics.commands, "sent")
            call.sent = True
            conn.send_call(call)
            return
        self.holding.pop(conn, None)
        conn.inflight = None
        if state == -1:
            node.metrics.inc(node.metrics.commands, "expired")
            node.fail(identity, call.id, call.action, "Expired",
                      "the command's wait ran out before it could be sent",
                      conn=conn, ref=call.qid, reply_to=call.reply_to)
            self.poke(conn)
        conn.send_next_call()

    def finished(self, conn: ChargerConnection, call: BackendCall) -> None:
        """``call`` (queued) ended and its outcome is published: remove it
        from the queue and look at the next one."""
        assert call.qid is not None
        if self.holding.get(conn) is call:
            del self.holding[conn]
        self._spawn(self._done(conn, conn.identity or "", call.qid, poke=conn.opened))

    def closed(self, conn: ChargerConnection, call: BackendCall) -> None:
        """``conn`` closed while holding ``call`` unsent: give it back."""
        assert call.qid is not None
        if self.holding.get(conn) is call:
            del self.holding[conn]
        self._spawn(self._release(conn, conn.identity or "", call.qid))

    def forget(self, conn: ChargerConnection) -> None:
        self.holding.pop(conn, None)
        self.again.discard(conn)

    # ---------------------------------------------------------------- expiry
    async def sweep_forever(self) -> None:
        """Expire commands of chargers that do not come back (every node runs
        this; the scripts make each expiry happen once)."""
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            try:
                t = now_ms()
                for identity in await self.queues.due(t):
                    for entry in await self.queues.sweep(identity, t):
                        self._end(identity, entry, "expired", "Expired",
                                  "the charger was not connected before the command's wait "
                                  "ran out")
            except Exception:
                self.node.metrics.inc(self.node.metrics.redis_errors, "commands")


def _queued(conn: ChargerConnection, qid: bytes) -> BackendCall | None:
    """The call of queue entry ``qid`` if ``conn`` took it (in flight or queued)."""
    calls: list[BackendCall] = [conn.inflight] if conn.inflight is not None else []
    calls.extend(conn.queue or ())
    for call in calls:
        if call.qid == qid:
            return call
    return None


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""
