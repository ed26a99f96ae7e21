"""Fixtures of the WebSocket tests: the echo server as a real subprocess."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compliance import start_echo_server, stop


@pytest.fixture(scope="session")
def echo_port() -> Iterator[int]:
    """Port of ``bench/echo_server.py`` running on uvloop (one per test worker),
    with the router's default compression threshold."""
    proc, port = start_echo_server(["--compression-threshold", "128",
                                    "--max-message-size", str(4 * 1024 * 1024)])
    try:
        yield port
    finally:
        stop(proc)
