"""The HTTP upgrade: request parsing and validation (RFC 6455 §4.2.1), limits,
and the 101 / error responses."""

from __future__ import annotations

import pytest

from router.ws import (
    BadRequest,
    HandshakeError,
    HandshakeParser,
    HeadersTooLarge,
    MethodNotAllowed,
    UnsupportedVersion,
    accept_key,
    accept_response,
    error_response,
)
from tests.ws.helpers import UPGRADE, upgrade_request


def parse(data: bytes, **kw: int) -> HandshakeParser:
    p = HandshakeParser(**kw)
    assert p.feed(data) is not None
    return p


def test_parses_the_request() -> None:
    raw = upgrade_request(b"Sec-WebSocket-Protocol: ocpp2.0.1, ocpp1.6",
                          b"Sec-WebSocket-Protocol: ocpp2.1",
                          b"Sec-WebSocket-Extensions: permessage-deflate",
                          b"Authorization: Basic Q1AwMDE6c2VjcmV0",
                          b"X-Custom:  spaced  ")
    p = HandshakeParser()
    req = p.feed(raw.replace(b"/ocpp/CP001", b"/ocpp/CP%2F01?x=1") + b"\x81\x85early")
    assert req is not None
    assert req.method == "GET"
    assert req.path == "/ocpp/CP%2F01?x=1"          # raw target, not decoded
    assert req.host == "localhost"
    assert req.subprotocols == ["ocpp2.0.1", "ocpp1.6", "ocpp2.1"]
    assert req.extensions == "permessage-deflate"
    assert req.authorization == "Basic Q1AwMDE6c2VjcmV0"
    assert ("x-custom", "spaced") in req.headers
    assert req.header("X-CUSTOM") == "spaced"
    assert p.leftover == b"\x81\x85early"


def test_byte_at_a_time() -> None:
    raw = upgrade_request(b"Sec-WebSocket-Protocol: ocpp1.6")
    p = HandshakeParser()
    results = [p.feed(raw[i:i + 1]) for i in range(len(raw))]
    assert all(r is None for r in results[:-1])
    req = results[-1]
    assert req is not None and req.subprotocols == ["ocpp1.6"] and p.leftover == b""


@pytest.mark.parametrize(("raw", "error", "status"), [
    (UPGRADE.replace(b"GET", b"POST") + b"Content-Length: 0\r\n\r\n", MethodNotAllowed, 405),
    (UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n", BadRequest, 400),
    (UPGRADE.replace(b"Host: localhost\r\n", b"") + b"\r\n", BadRequest, 400),
    (UPGRADE.replace(b"Upgrade: websocket\r\n", b"") + b"\r\n", UnsupportedVersion, 426),
    (UPGRADE.replace(b"Connection: Upgrade", b"Connection: keep-alive") + b"\r\n",
     UnsupportedVersion, 426),
    (UPGRADE.replace(b"Version: 13", b"Version: 8") + b"\r\n", UnsupportedVersion, 426),
    (UPGRADE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short") + b"\r\n", BadRequest, 400),
    (UPGRADE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"!!!!") + b"\r\n", BadRequest, 400),
    (UPGRADE + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", BadRequest, 400),
    (b"GARBAGE\r\n\r\n", BadRequest, 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", BadRequest, 400),
    (upgrade_request(b"X-Nul: a\0b"), BadRequest, 400),
])
def test_invalid_requests(raw: bytes, error: type[HandshakeError], status: int) -> None:
    with pytest.raises(error) as info:
        HandshakeParser().feed(raw)
    assert info.value.status == status


def test_header_count_limit() -> None:
    many = [b"X-H%d: v" % i for i in range(60)]
    with pytest.raises(HeadersTooLarge) as info:
        HandshakeParser(max_headers=64).feed(upgrade_request(*many))
    assert info.value.status == 431
    parse(upgrade_request(*many[:50]), max_headers=64)


def test_header_bytes_limit_while_incomplete() -> None:
    p = HandshakeParser(max_header_bytes=1024)
    assert p.feed(UPGRADE) is None
    with pytest.raises(HeadersTooLarge):
        for _ in range(20):
            p.feed(b"X-Padding: " + b"a" * 100 + b"\r\n")


def test_header_bytes_limit_when_complete_in_one_read() -> None:
    with pytest.raises(HeadersTooLarge):
        HandshakeParser(max_header_bytes=300).feed(upgrade_request(b"X-Pad: " + b"a" * 200))


def test_accept_key_rfc_example() -> None:
    # RFC 6455 §1.3.
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_accept_response() -> None:
    req = HandshakeParser().feed(upgrade_request(b"Sec-WebSocket-Protocol: ocpp1.6"))
    assert req is not None
    resp = accept_response(req, "ocpp1.6", "permessage-deflate; server_max_window_bits=12",
                           [("X-Node", "n1")])
    assert resp.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in resp
    assert b"\r\nSec-WebSocket-Protocol: ocpp1.6\r\n" in resp
    assert b"\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12\r\n" in resp
    assert resp.endswith(b"\r\nX-Node: n1\r\n\r\n")
    with pytest.raises(ValueError):
        accept_response(req, "ocpp2.0.1")
    with pytest.raises(ValueError):
        accept_response(req, None, None, [("X-Evil", "a\r\nSet-Cookie: x")])


def test_error_response() -> None:
    resp = error_response(503, [("Retry-After", "30")], b"draining")
    head, body = resp.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 30" in head and b"\r\nConnection: close" in head
    assert b"\r\nContent-Length: 8" in head
    assert body == b"draining"
    with pytest.raises(ValueError):
        error_response(200)
