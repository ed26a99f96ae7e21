"""The admin HTTP port: ``/healthz``, ``/readyz``, ``/metrics``.

Deliberately tiny: GET only, one request per connection, bounded request
size. It serves probes and Prometheus scrapes, not users.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("router.admin")

MAX_REQUEST = 8192
Handler = Callable[[], Awaitable[tuple[int, str, bytes]]]

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value) if value.strip().isdigit() else None
    return 0


class ListenError(OSError):
    """A listening socket could not be bound; the message names which one
    (``what``: "charger port" or "admin port") and the address."""

    def __init__(self, what: str, host: str, port: int, exc: OSError) -> None:
        super().__init__(exc.errno, f"cannot listen on the {what} {host}:{port}: "
                                    f"{exc.strerror or exc}")
        self.what = what

    def __str__(self) -> str:
        return str(self.strerror)


class AdminServer:
    """Serve ``routes`` (path -> async handler returning status, content type,
    body; ``"POST <path>"`` keys are actions answered to POST)."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0).

        Raises:
            ListenError: the port cannot be bound (in use, no permission …).
        """
        try:
            self.server = await asyncio.start_server(self._handle, host, port,
                                                     reuse_address=True)
        except OSError as exc:
            raise ListenError("admin port", host, port, exc) from exc
        sock = self.server.sockets[0]
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body, head = await asyncio.wait_for(self._respond(reader), 10)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            writer.close()
            return
        reason = _REASONS.get(status, "Error")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + (b"" if head else body)
        )
        try:
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, bool]:
        data = await reader.readuntil(b"\r\n\r\n")
        if len(data) > MAX_REQUEST:
            return 400, "text/plain", b"request too large\n", False
        try:
            method, target, _ = data.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
        except (UnicodeDecodeError, ValueError):
            return 400, "text/plain", b"bad request\n", False
        path = target.split("?", 1)[0]
        if method == "POST" and f"POST {path}" in self.routes:
            # An action (``POST /profiles/reload``): a small body is read and
            # ignored, so closing the socket does not reset the answer away.
            length = _content_length(data)
            if length is None or length > MAX_REQUEST:
                return 400, "text/plain", b"bad request\n", False
            await reader.readexactly(length)
            path = f"POST {path}"
        elif method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n", False
        handler = self.routes.get(path)
        if handler is None:
            return 404, "text/plain", b"not found\n", method == "HEAD"
        try:
            status, ctype, body = await handler()
        except Exception:  # a probe must answer, whatever broke
            log.exception("admin handler for %s failed", target)
            status, ctype, body = 503, "text/plain", b"error\n"
        return status, ctype, body, method == "HEAD"
