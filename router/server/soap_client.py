"""The HTTP client that POSTs backend CALLs to SOAP chargers (OCPP-S).

One request per TCP connection (``Connection: close``): a charger is called a
few times a day, and a fresh connection never meets a half-closed keep-alive
socket. The response is parsed with httptools (llhttp), the parser the router
already uses for upgrades; gzip and deflate response bodies are accepted
(OCPP-S 1.6 §2) and bounded after decompression.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpResponseParser

from router.soap.compress import BodyTooLarge, inflate


class SoapHttpError(OSError):
    """The charger's endpoint could not be reached or answered no HTTP."""


class _Response:
    __slots__ = ("body", "done", "headers", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.limit:
            raise BodyTooLarge("response body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


def _client_context() -> ssl.SSLContext:
    return ssl.create_default_context()


async def post(url: str, body: bytes, headers: list[tuple[str, str]], *,
               max_bytes: int, ssl_context: ssl.SSLContext | None = None
               ) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` to ``url`` and return (status, headers, decompressed body).

    The caller bounds the time (``asyncio.wait_for``).

    Raises:
        SoapHttpError: bad URL, connection refused/reset, no complete HTTP
            response, or a body over ``max_bytes``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SoapHttpError(f"not an http(s) URL: {url[:100]!r}")
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise SoapHttpError(f"bad port in {url[:100]!r}") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname if port in (80, 443) else f"{parts.hostname}:{port}"
    if ":" in (parts.hostname or "") and not host.startswith("["):
        host = f"[{parts.hostname}]" + ("" if port in (80, 443) else f":{port}")
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
             "Connection: close", "Accept-Encoding: gzip, deflate"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    try:
        reader, writer = await asyncio.open_connection(
            parts.hostname, port, ssl=(ssl_context or _client_context()) if tls else None)
    except (OSError, ssl.SSLError) as exc:
        raise SoapHttpError(f"cannot connect to {parts.hostname}:{port}: {exc}") from None
    resp = _Response(max_bytes)
    parser = HttpResponseParser(resp)
    try:
        writer.write(head + body)
        await writer.drain()
        while not resp.done:
            chunk = await reader.read(65536)
            if not chunk:
                parser.feed_data(b"")   # EOF ends a body without length
                break
            parser.feed_data(chunk)
    except HttpParserError as exc:
        if isinstance(exc.__context__, BodyTooLarge):
            raise SoapHttpError("response body too large") from None
        raise SoapHttpError("malformed HTTP response") from None
    except (OSError, ssl.SSLError) as exc:
        raise SoapHttpError(f"connection to the charger failed: {exc}") from None
    finally:
        writer.close()
    if not resp.done and not parser.get_status_code():
        raise SoapHttpError("the charger closed the connection without a response")
    data = b"".join(resp.body)
    try:
        data = inflate(data, resp.headers.get("content-encoding", ""), max_bytes)
    except BodyTooLarge:
        raise SoapHttpError("response body too large") from None
    except ValueError as exc:
        raise SoapHttpError(f"bad response body: {exc}") from None
    return parser.get_status_code(), resp.headers, data
