"""Rebalancing: a node holding more than its share of chargers sheds the surplus.

Charger sockets live for days, so a node added by a scale-out, a rollout or
a recovery stays empty while the old ones stay hot. Every
``--rebalance-interval`` seconds each node writes its connection count to the
fleet hash in Redis (:mod:`router.streams.fleet`) and reads everyone's. The
mean is taken over the live, ready nodes only (a node that is starting,
draining or cut off from Redis publishes ``ready 0``; a dead one stops
publishing and drops out). A node holding more than (1 + tolerance) x mean
closes its surplus with close code 1012 (or 1001), at most
``--rebalance-rate`` connections per second, so the chargers reconnect
through the load balancer, mostly to emptier nodes.

No oscillation, by construction:

- only a node above the upper bound sheds; a node below the mean never does;
- it sheds only down to the bound ("within tolerance"), never to the mean;
- one shedding episode (from crossing the bound until back within it) closes
  only connections older than the episode: a charger shed once that comes
  back to the same node is never shed again in that episode;
- at most rate x interval per round, so a round's decision is never far
  behind the counts it was made on (a shed charger is counted nowhere until
  it has reconnected);
- no shedding in a round in which far more chargers arrived than shedding
  brings, or the fleet's total grew by more than the tolerance (a ramp-up, a
  reconnect storm, a neighbour draining): the other nodes' counts lag, and
  shedding would only add to the storm.

Chargers with nothing in flight go first (no charger CALL waiting for the
backend, no backend CALL in flight or queued), oldest first; busy ones only
when no idle one is left, and their backend CALLs end as ``failed Closed``
(or, queued with ``wait``, follow the charger: router/server/commands.py).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from typing import TYPE_CHECKING

from router.streams.fleet import FleetState, NodeLoad

if TYPE_CHECKING:
    from router.server.connection import ChargerConnection
    from router.server.node import Node

log = logging.getLogger("router.rebalance")

# A round with more accepted handshakes than this many times what shedding
# at the full rate would bring back (and at least STORM_MIN), or in which the
# fleet's total grew by more than the tolerance (and STORM_MIN), holds shedding.
STORM_FACTOR = 4
STORM_MIN = 100
# Never shed to correct an excess of fewer connections than this over the
# mean: in a small fleet 10 % is a handful of chargers, not worth a reconnect.
MIN_EXCESS = 10


def surplus_of(own: int, loads: list[NodeLoad], tolerance: float) -> tuple[int, int, float]:
    """(surplus to shed, live ready nodes, their mean) for a node holding ``own``.

    ``loads`` are the fresh entries of the fleet hash, this node's included
    (its count replaced by ``own``, the live figure); not-ready ones do not
    count. The surplus is what brings ``own`` down to floor((1 + tolerance) x mean)
    (and never closer than :data:`MIN_EXCESS` to the mean), 0 when it is within
    that bound or when it is the only ready node.
    """
    counts = [load.connections for load in loads if load.ready]
    if not counts:
        return 0, 0, 0.0
    mean = sum(counts) / len(counts)
    if len(counts) < 2:
        return 0, len(counts), mean
    bound = max(math.floor((1.0 + tolerance) * mean), math.ceil(mean) + MIN_EXCESS)
    return max(0, own - bound), len(counts), mean


def is_idle(conn: ChargerConnection) -> bool:
    """Nothing in flight either way."""
    return conn.call_id is None and conn.inflight is None and not conn.queue


class Rebalancer:
    """One node's rebalancing loop (see the module docstring)."""

    def __init__(self, node: Node, fleet: FleetState) -> None:
        c = node.config
        self.node = node
        self.fleet = fleet
        self.enabled = c.rebalance
        self.tolerance = c.rebalance_tolerance
        self.rate = c.rebalance_rate
        self.interval = c.rebalance_interval
        self.close_code = c.rebalance_close_code
        self.episode_ms: int | None = None   # connections since then are not shed
        self.accepted = 0                     # handshakes accepted up to the last round
        self.total = 0                        # the ready nodes' total in the last round
        self.nodes = 0
        self.mean = 0.0
        self.surplus = 0
        self.idle_picked = 0

    async def run(self) -> None:
        """Publish, check, shed; every interval, until cancelled."""
        node = self.node
        while True:
            started = time.monotonic()
            ready = node.ready()[0]
            try:
                loads = await self.fleet.publish_and_read(
                    node.node_id, len(node.connections), ready, self.interval)
            except Exception:
                node.metrics.inc(node.metrics.redis_errors, "fleet")
                loads = None
            if loads is not None:
                await self._round(loads, ready)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def _round(self, loads: list[NodeLoad], ready: bool) -> None:
        node = self.node
        own = len(node.connections)
        mine = [NodeLoad(node.node_id, own, ready, 0)]
        others = [load for load in loads if load.node != node.node_id]
        self.surplus, self.nodes, self.mean = surplus_of(own, mine + others, self.tolerance)
        # Is the fleet settled? Many chargers arriving here, or the fleet's
        # total growing: a ramp-up, a storm, a neighbour draining. Then the
        # other nodes' counts (a round old) lag behind and this node only
        # looks above the mean; shedding would add reconnects to the storm.
        accepted = node.metrics.handshakes.get("accepted", 0)
        arrivals, self.accepted = accepted - self.accepted, accepted
        total = sum(load.connections for load in mine + others if load.ready)
        grew, self.total = total - self.total, total
        unsettled = (arrivals > max(STORM_MIN, STORM_FACTOR * self.rate * self.interval)
                     or grew > max(STORM_MIN, self.tolerance * (total - grew)))
        if not self.enabled or not ready or node.draining or self.surplus == 0:
            if self.episode_ms is not None:
                log.info("rebalancing done: %d connections, fleet mean %.0f over %d nodes",
                         own, self.mean, self.nodes)
            self.episode_ms = None
            self.surplus = 0
            return
        if unsettled:
            return
        if self.episode_ms is None:
            self.episode_ms = int(time.time() * 1000)
            log.info("rebalancing: %d connections, fleet mean %.0f over %d nodes: "
                     "shedding %d at %g/s", own, self.mean, self.nodes, self.surplus, self.rate)
        batch = min(self.surplus, max(1, int(self.rate * self.interval)))
        await self._shed(self._pick(batch))

    def _pick(self, n: int) -> list[ChargerConnection]:
        """Up to ``n`` connections older than the episode: idle first, oldest first."""
        episode = self.episode_ms or 0
        idle: list[ChargerConnection] = []
        busy: list[ChargerConnection] = []
        for conn in self.node.connections:
            if conn.opened and conn.since_ms < episode:
                (idle if is_idle(conn) else busy).append(conn)
        picked = heapq.nsmallest(n, idle, key=_age_key)
        self.idle_picked = len(picked)
        if len(picked) < n:
            picked += heapq.nsmallest(n - len(picked), busy, key=_age_key)
        return picked

    async def _shed(self, conns: list[ChargerConnection]) -> None:
        """Close ``conns`` one every 1/rate seconds (no burst of reconnects)."""
        node = self.node
        step = 1.0 / self.rate
        start = time.monotonic()
        for i, conn in enumerate(conns):
            delay = start + i * step - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if node.draining:
                return
            if not conn.opened or (i < self.idle_picked and not is_idle(conn)):
                continue      # gone, or picked idle and busy now: next round
            state = "idle" if is_idle(conn) else "busy"
            node.metrics.inc(node.metrics.shed, state)
            self.surplus = max(0, self.surplus - 1)
            conn.close(self.close_code, "rebalancing: please reconnect")


def _age_key(conn: ChargerConnection) -> int:
    return int(conn.since_ms)
