"""The real haproxy launcher the fleet and chaos tests stand on."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from bench.services import HAProxy


class _Named(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(self.server.name)  # type: ignore[attr-defined]


@pytest.fixture
def two_servers() -> Iterator[list[socketserver.ThreadingTCPServer]]:
    servers = []
    for name in (b"A", b"B"):
        srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Named)
        srv.name = name  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    yield servers
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return s.recv(1)


def test_round_robin_and_reload(two_servers: list[socketserver.ThreadingTCPServer]) -> None:
    a, b = (("127.0.0.1", srv.server_address[1]) for srv in two_servers)
    with HAProxy([a, b]) as lb:
        seen = {_ask(lb.listen_port) for _ in range(6)}
        assert seen == {b"A", b"B"}
        lb.set_backends([b])
        # The old process stops listening and, holding no connection, exits.
        lb.wait_reloaded(timeout=10)
        assert {_ask(lb.listen_port) for _ in range(4)} == {b"B"}
