"""Shared fixtures: real redis-server processes, free ports, one timeout factor.

Every test that needs Redis gets its own redis-server (function scope) or shares
one per worker (``redis_session``) and then uses a unique key prefix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from router.embedded_redis import RedisServer, free_port

# One factor scales every timeout in the tests (slow or loaded machines: raise it).
TIMEOUT_FACTOR = float(os.environ.get("OCPP_ROUTER_TEST_TIMEOUT_FACTOR", "1"))


def timeout(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for this test only."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    """One redis-server per test worker; combine with ``key_prefix``."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def port() -> int:
    return free_port()
