"""Fixtures of the backend SDK tests: an asyncio Redis client on a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from router.embedded_redis import RedisServer


@pytest.fixture
async def redis(redis_session: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client of the worker's redis-server; combine with ``key_prefix``."""
    client = aioredis.Redis.from_url(redis_session.url)
    try:
        yield client
    finally:
        await client.aclose()
