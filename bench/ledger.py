"""Chargers that keep books: every CALL they send ends in exactly one outcome.

Used by the chaos runs (bench/chaos.py) and the soak (bench/soak.py), where
what matters is not speed but accounting: each charger (a real ``websockets``
client, OCPP 1.6) boots, then sends a CALL every ``interval`` seconds (one
outstanding at a time, OCPP-J 1.6 §4.1.1) with a unique message id, and
records how it ended:

``answered``    a CALLRESULT with its id;
``callerror``   a CALLERROR with its id (by error code);
``timeout``     no answer within ``call_timeout`` on a connection that stayed up;
``lost``        the connection dropped before the answer came;
``late``        an answer after the CALL's timeout (counted besides it);
``duplicate``   an answer to an id already answered (must stay 0);
``unknown``     an answer to an id this charger never sent (must stay 0).

A dropped connection is reconnected after ``reconnect_delay`` seconds (and
booted again); ``cycle_every`` closes and reopens each connection on purpose
every so many seconds (the soak's churn). The ids of answered CALLs are kept
so a run can be compared with what the backend recorded.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

BOOT = {"chargePointVendor": "Chaos", "chargePointModel": "Monkey"}


@dataclass
class Books:
    """Counters of a fleet (summed over its chargers)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    sent: int = 0
    # Message ids by outcome (answered, callerror, timeout, lost).
    ids: dict[str, set[str]] = field(default_factory=dict)
    # (time, outcome, seconds since the CALL was sent) of every outcome.
    timeline: list[tuple[float, str, float]] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        return {"sent": self.sent, **{k: self.outcomes[k] for k in (
            "answered", "callerror", "timeout", "lost", "late", "duplicate", "unknown")},
            "callerror_codes": dict(self.errors), "connects": self.connects,
            "connect_failures": self.connect_failures, "disconnects": self.disconnects}


class Charger:
    def __init__(self, fleet: Fleet, identity: str) -> None:
        self.fleet = fleet
        self.identity = identity
        self.seq = 0
        self.t_sent = 0.0
        self.answered: set[str] = set()

    async def run(self) -> None:
        f = self.fleet
        await asyncio.sleep(random.uniform(0, f.interval))
        while not f.stopping.is_set():
            try:
                async with websockets.connect(f.url + "/" + self.identity,
                                              subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                              open_timeout=f.call_timeout,
                                              ping_interval=None, max_size=1 << 20) as ws:
                    f.books.connects += 1
                    f.connected += 1
                    try:
                        await self.session(ws)
                    finally:
                        f.connected -= 1
            except (OSError, ConnectionClosed, TimeoutError,
                    websockets.exceptions.InvalidHandshake, websockets.exceptions.InvalidURI):
                f.books.connect_failures += 1
            if not f.stopping.is_set():
                await asyncio.sleep(f.reconnect_delay * random.uniform(0.5, 1.5))

    async def session(self, ws: Any) -> None:
        f = self.fleet
        if not await self.call(ws, "BootNotification", BOOT, count=False):
            return
        opened = time.monotonic()
        while not f.stopping.is_set():
            if f.cycle_every and time.monotonic() - opened > f.cycle_every:
                await ws.close()
                return
            await asyncio.sleep(f.interval * random.uniform(0.8, 1.2))
            if f.paused:
                continue
            action, payload = f.next_call(self)
            if not await self.call(ws, action, payload):
                return

    async def call(self, ws: Any, action: str, payload: dict[str, Any], count: bool = True) -> bool:
        """Send one CALL and wait for its answer; False if the connection is gone."""
        f, b = self.fleet, self.fleet.books
        self.seq += 1
        mid = f"{self.identity}-{self.seq}"
        try:
            await ws.send(json.dumps([2, mid, action, payload]))
        except ConnectionClosed:
            b.disconnects += 1
            return False
        if count:
            b.sent += 1
            f.outstanding += 1
        self.t_sent = time.monotonic()
        deadline = self.t_sent + f.call_timeout
        while True:
            left = deadline - time.monotonic()
            try:
                raw = await asyncio.wait_for(ws.recv(), max(0.0, left))
            except TimeoutError:
                self.outcome("timeout", count, mid)
                return True
            except ConnectionClosed:
                b.disconnects += 1
                self.outcome("lost", count, mid)
                return False
            msg = json.loads(raw)
            if msg[0] == 2:          # a backend CALL: not simulated here
                await ws.send(json.dumps([4, msg[1], "NotImplemented", "", {}]))
                continue
            rid = msg[1]
            if rid != mid:
                # An answer to an earlier CALL: after its timeout ("late"),
                # a second one ("duplicate"), or to nothing we sent.
                kind = ("duplicate" if rid in self.answered
                        else "late" if rid.startswith(self.identity + "-") else "unknown")
                self.outcome(kind, True)
                continue
            self.answered.add(mid)
            if msg[0] == 3:
                self.outcome("answered", count, mid)
            else:
                b.errors[msg[2]] += count
                self.outcome("callerror", count, mid)
            return True

    def outcome(self, kind: str, count: bool, mid: str = "") -> None:
        if not count:
            return
        b = self.fleet.books
        if kind in ("answered", "callerror", "timeout", "lost"):
            self.fleet.outstanding -= 1
        b.outcomes[kind] += 1
        now = time.monotonic()
        b.timeline.append((now, kind, now - self.t_sent))
        if mid:
            b.ids.setdefault(kind, set()).add(mid)


class Fleet:
    """``n`` chargers ``<prefix>-<i>`` against ``url`` (``ws://host:port/ocpp``)."""

    def __init__(self, url: str, n: int, *, prefix: str = "CH", interval: float = 2.0,
                 call_timeout: float = 35.0, reconnect_delay: float = 1.0,
                 cycle_every: float = 0.0) -> None:
        self.url = url
        self.interval = interval
        self.call_timeout = call_timeout
        self.reconnect_delay = reconnect_delay
        self.cycle_every = cycle_every
        self.books = Books()
        self.stopping = asyncio.Event()
        self.paused = False
        self.connected = 0
        self.outstanding = 0      # CALLs sent and not ended yet
        self.chargers = [Charger(self, f"{prefix}-{i}") for i in range(n)]
        self.tasks: list[asyncio.Task[None]] = []

    def next_call(self, ch: Charger) -> tuple[str, dict[str, Any]]:
        # Both reach the backend (the router forwards Heartbeat with
        # --heartbeat forward); DataTransfer carries the charger's sequence
        # number so the backend's log can be matched.
        if ch.seq % 2:
            return "Heartbeat", {}
        return "DataTransfer", {"vendorId": "chaos", "data": str(ch.seq)}

    def start(self) -> None:
        self.tasks = [asyncio.create_task(c.run()) for c in self.chargers]

    async def wait_connected(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.connected < n and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return self.connected >= n

    async def stop(self) -> None:
        """Stop sending, wait for the outstanding answers, close everything."""
        self.paused = True
        deadline = time.monotonic() + self.call_timeout + 2
        while self.outstanding > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        self.stopping.set()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def first_answer_after(self, t: float) -> float | None:
        """Seconds from ``t`` to the first answered CALL after it."""
        for ts, kind, _lat in self.books.timeline:
            if ts >= t and kind == "answered":
                return round(ts - t, 2)
        return None

    def slowest_answer_after(self, t: float) -> float | None:
        """The longest a CALL answered after ``t`` waited (a CALL in flight at
        a fault waits for the recovery: the claim of another consumer, Redis
        coming back)."""
        lats = [lat for ts, kind, lat in self.books.timeline if ts >= t and kind == "answered"]
        return round(max(lats), 2) if lats else None

    def steady_after(self, t: float, window: float = 3.0) -> float | None:
        """Seconds from ``t`` until a ``window`` in which every outcome was
        an answer (the fleet recovered), or None."""
        events = [(ts, k) for ts, k, _lat in self.books.timeline if ts >= t]
        start = None
        for ts, kind in events:
            if kind != "answered":
                start = None
                continue
            if start is None:
                start = ts
            if ts - start >= window:
                return round(start - t, 2)
        return None
