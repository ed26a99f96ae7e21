"""Fixtures of the OCPP-S tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import RouterNode
from tests.server.helpers import Backend
from tests.server.test_handshake import pki  # the PKI of the WebSocket TLS tests

__all__ = ["backend", "pki"]


@pytest.fixture
async def backend(router_node: RouterNode) -> AsyncIterator[Backend]:
    """A stream-contract backend on the test's router."""
    b = Backend(router_node)
    yield b
    await b.close()
