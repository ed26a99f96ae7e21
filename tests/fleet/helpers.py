"""Pieces the fleet tests share: a real backend that answers every charger
CALL, node connection counts, waiting on conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bench.services import Service, python_module
from tests.conftest import RouterNode, timeout


@contextmanager
def responder(redis_url: str, key_prefix: str) -> Iterator[Service]:
    """bench's fast responder: answers every charger CALL through Redis (its
    group reads from the start, so no BootNotification is missed)."""
    svc = Service("responder", python_module(
        "bench.backends.fast_responder", "--redis-url", redis_url, "--key-prefix", key_prefix,
        "--from-start"), None)
    with svc:
        yield svc


def connections(node: RouterNode) -> int:
    """The node's open charger connections (its /metrics gauge)."""
    return int(node.metric("ocpp_router_connections"))


async def wait_until(pred: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll ``pred`` (a blocking check is fine: it runs in a thread) until
    true; the seconds it took. Fails after ``timeout(seconds)``."""
    t0 = time.monotonic()
    deadline = t0 + timeout(seconds)
    while not await asyncio.to_thread(pred):
        assert time.monotonic() < deadline, f"not within {timeout(seconds):.0f}s: {what}"
        await asyncio.sleep(0.25)
    return time.monotonic() - t0
