"""Memory per idle connection of the echo server (the router's codec and glue
on uvloop): a regression guard for the ≤ 4 KiB goal (docs/websocket.md).

RSS of the server process grows with the connections it holds; kernel socket
buffers are not part of RSS. A warm-up batch first makes the allocator's
arenas and the shared receive buffer exist.
"""

from __future__ import annotations

import resource
import socket
import time

import psutil
import pytest

from tests.compliance import start_echo_server, stop
from tests.ws.helpers import upgrade_request

N = 4000
REQUEST = upgrade_request(b"Sec-WebSocket-Protocol: ocpp2.0.1",
                          b"Authorization: Basic Q1AwMDE6c2VjcmV0")


def open_idle(port: int, n: int, into: list[socket.socket]) -> None:
    batch = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    for s in batch:
        s.sendall(REQUEST)
    for s in batch:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            assert chunk
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 ")
    into.extend(batch)


def settle(proc: psutil.Process) -> int:
    # RSS once it stops moving (the server has processed every upgrade).
    last = -1
    for _ in range(50):
        rss = int(proc.memory_info().rss)
        if rss == last:
            return rss
        last = rss
        time.sleep(0.1)
    return last


def ensure_fds(need: int) -> None:
    """Raise the soft fd limit (inherited by the server child) or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"needs {need} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


@pytest.mark.slow
def test_idle_connection_costs_at_most_4_kib() -> None:
    ensure_fds(N + 1000)
    server, port = start_echo_server(["--ping-interval", "60"])
    socks: list[socket.socket] = []
    try:
        proc = psutil.Process(server.pid)
        open_idle(port, 300, socks)
        before = settle(proc)
        open_idle(port, N, socks)
        after = settle(proc)
        per_connection = (after - before) / N
        assert per_connection <= 4096, f"{per_connection:.0f} bytes per idle connection"
    finally:
        for s in socks:
            s.close()
        stop(server)
