"""Shared helpers of the streams tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from tests.conftest import timeout


async def until(predicate: Callable[[], bool], seconds: float = 5.0,
                what: str = "condition") -> None:
    """Wait for ``predicate()`` to hold, checking every few ms (no fixed sleeps)."""
    deadline = time.monotonic() + timeout(seconds)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def until_async(predicate: Callable[[], Awaitable[bool]], seconds: float = 5.0,
                      what: str = "condition") -> None:
    """``until`` for a predicate that has to ask Redis."""
    deadline = time.monotonic() + timeout(seconds)
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def client(url: str) -> AsyncIterator[aioredis.Redis]:
    """A redis-py client, the independent reference used to check what we wrote."""
    r = aioredis.Redis.from_url(url)
    try:
        yield r
    finally:
        await r.aclose()
