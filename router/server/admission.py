"""Admission control: which handshakes a node takes, and how it refuses the rest.

Checked in this order, cheapest first, before any WebSocket frame:

1. draining → ``503``;
2. too many connections or handshakes in progress (``--max-connections``,
   ``--max-handshakes``) → ``503``;
3. more handshakes per second than ``--max-handshake-rate`` → ``503``;
4. the identity connected more than ``--flap-limit`` times within
   ``--flap-window`` seconds, counted across every node in Redis → ``429``
   for ``--flap-cooldown`` seconds.

A ``503`` carries ``Retry-After`` drawn evenly from ``--retry-after`` to
``--retry-after`` + ``--retry-after-jitter`` seconds (RFC 9110 §10.2.3), so
chargers that honour it come back spread over that window instead of all at
once. A ``429`` (RFC 6585 §4) carries the cool-down left. Refusals counted
before the flap check (1-3) are not connection attempts of the identity: a
charger refused by a storm is never taken for a flapping one.

None of this changes ``/readyz``: a node refusing part of a storm is healthy,
and taking it out of the load balancer would send the storm to fewer nodes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from typing import TYPE_CHECKING

from router.server.wsconn import ConnectionState
from router.streams.fleet import FleetState
from router.ws import UpgradeRequest

if TYPE_CHECKING:
    from router.server.connection import ChargerConnection
    from router.server.node import Node

log = logging.getLogger("router.admission")

#: Seconds a handshake waits for the flap count before going on without it.
FLAP_WAIT = 0.25
#: Identities in cool-down remembered per node (refused without Redis).
COOLING_MAX = 100_000


class Admission:
    """One node's admission control (see the module docstring)."""

    def __init__(self, node: Node, fleet: FleetState) -> None:
        c = node.config
        self.node = node
        self.fleet = fleet
        self.retry_after = c.retry_after
        self.jitter = c.retry_after_jitter
        self.rate = c.max_handshake_rate
        # Token bucket of admitted handshakes: one second of rate as burst.
        self.burst = max(1.0, self.rate)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.flap_limit = c.flap_limit
        self.flap_window = c.flap_window
        self.flap_cooldown = c.flap_cooldown
        self._random = random.Random()
        self.cooling: dict[str, float] = {}   # identity -> monotonic end of cool-down

    def retry_after_value(self) -> str:
        """Seconds for a 503's ``Retry-After``: jittered, so retries spread."""
        return str(self.retry_after + self._random.randint(0, self.jitter))

    def refuse(self, conn: ChargerConnection, reason: str) -> None:
        """Answer ``503`` with a jittered ``Retry-After`` and count it."""
        node = self.node
        node.count_handshake(reason)
        node.metrics.inc(node.metrics.refused, ("503", reason))
        conn.reject(503, [("Retry-After", self.retry_after_value())])

    def take_handshake(self) -> bool:
        """One token of ``--max-handshake-rate``; False when the bucket is empty."""
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def admit(self, conn: ChargerConnection, request: UpgradeRequest, identity: str) -> None:
        """The flap check, then the rest of the handshake
        (``conn.continue_handshake``)."""
        if self.flap_limit <= 0:
            conn.continue_handshake(request, identity)
            return
        until = self.cooling.get(identity)
        if until is not None:
            left = until - time.monotonic()
            if left > 0:
                # Known to be cooling down: refused without asking Redis.
                self._refuse_flapping(conn, math.ceil(left))
                return
            del self.cooling[identity]
        task = asyncio.create_task(self._check_flap(conn, request, identity))
        self.node._auth_tasks.add(task)
        task.add_done_callback(self.node._auth_tasks.discard)

    async def _check_flap(self, conn: ChargerConnection, request: UpgradeRequest,
                          identity: str) -> None:
        node = self.node
        count = asyncio.ensure_future(self.fleet.count_attempt(
            identity, self.flap_limit, self.flap_window, self.flap_cooldown))
        # Wait briefly: a slow Redis (a fork for BGSAVE, a failover) must not
        # hold handshakes up. A late answer still lands in the local cache.
        done, _ = await asyncio.wait({count}, timeout=FLAP_WAIT)
        wait = 0
        if done:
            wait = self._counted(identity, count)
        else:
            node.metrics.inc(node.metrics.redis_errors, "flap_slow")
            count.add_done_callback(lambda fut: self._counted(identity, fut))
        if conn.state != ConnectionState.CONNECTING:   # gone or timed out meanwhile
            return
        if wait > 0:
            self._refuse_flapping(conn, wait)
            return
        conn.continue_handshake(request, identity)

    def _counted(self, identity: str, fut: asyncio.Future[int]) -> int:
        """The flap script's answer: remember a cool-down locally."""
        if fut.cancelled():
            return 0
        exc = fut.exception()
        if exc is not None:
            # Flap control is protection, not a gate: without Redis the
            # handshake goes on (the registry write fails and is counted).
            self.node.metrics.inc(self.node.metrics.redis_errors, "flap")
            return 0
        wait = fut.result()
        if wait > 0:
            if len(self.cooling) >= COOLING_MAX:
                now = time.monotonic()
                self.cooling = {k: v for k, v in self.cooling.items() if v > now}
            if len(self.cooling) < COOLING_MAX:
                self.cooling[identity] = time.monotonic() + wait
        return wait

    def _refuse_flapping(self, conn: ChargerConnection, wait: int) -> None:
        node = self.node
        node.count_handshake("flapping")
        node.metrics.inc(node.metrics.refused, ("429", "flapping"))
        conn.reject(429, [("Retry-After", str(wait))])
