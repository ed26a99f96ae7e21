"""The handshake: URL and identity rules, subprotocols, auth, admission control."""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import websockets

from router.auth import hash_password
from tests.conftest import RouterNode, timeout
from tests.server.helpers import BOOT, Backend, Charger


def raw_request(node: RouterNode, path: str, *, protocols: str = "ocpp1.6",
                extra: str = "", read: int = 4096) -> bytes:
    req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           f"Sec-WebSocket-Version: 13\r\n"
           + (f"Sec-WebSocket-Protocol: {protocols}\r\n" if protocols else "")
           + extra + "\r\n")
    with socket.create_connection(("127.0.0.1", node.port), timeout=timeout(5)) as s:
        s.sendall(req.encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(read)
            if not chunk:
                break
            data += chunk
    # Only the HTTP head: a close frame may follow in the same read.
    return data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize(("path", "status"), [
    ("/ocpp/CP-1", 101),
    ("/ocpp/CP%2D1", 101),                # percent-decoded
    ("/ocpp/" + "A" * 48, 101),
    ("/ocpp/" + "A" * 49, 404),            # identity longer than 48
    ("/ocpp/CP:1", 404),                   # ':' is not allowed
    ("/ocpp/CP%201", 404),                 # space is not in identifierString
    ("/ocpp/", 404),
    ("/other/CP-1", 404),
    ("/ocpp/CP-1/extra", 404),
    ("/ocpp/CP%G1", 400),                  # malformed percent-encoding
    ("/ocpp/%FF%FE", 404),                 # not UTF-8
])
def test_url_rules(router_node: RouterNode, path: str, status: int) -> None:
    assert status_of(raw_request(router_node, path)) == status


@pytest.mark.parametrize("path", ["/ocpp//CP-SLASH", "/ocpp/CP-SLASH/"])
async def test_forgiving_urls_connect(router_node: RouterNode, path: str) -> None:
    """A server URL with a trailing slash (ocpp-rpc joins endpoint + "/" +
    identity) and a trailing slash after the identity both reach CP-SLASH."""
    backend = Backend(router_node)
    url = f"ws://127.0.0.1:{router_node.port}{path}"
    ws = await websockets.connect(url, subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                  open_timeout=timeout(5))
    try:
        charger = Charger(ws)
        msg_id = await charger.call("BootNotification", BOOT["ocpp1.6"])
        call = await backend.next("call", action="BootNotification")
        assert (call["cs"], call["id"]) == ("CP-SLASH", msg_id)
        assert (await backend.registry("CP-SLASH"))["conn"] == call["conn"]
    finally:
        await ws.close()
        await backend.close()


def test_path_prefix_is_configurable(router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--path-prefix", "/cs/v1")
    assert status_of(raw_request(node, "/cs/v1/CP-1")) == 101
    assert status_of(raw_request(node, "/ocpp/CP-1")) == 404


@pytest.mark.parametrize(("offered", "chosen"), [
    ("ocpp1.6", "ocpp1.6"),
    ("ocpp1.6, ocpp2.0.1", "ocpp2.0.1"),          # server preference decides
    ("ocpp2.0.1, ocpp2.1, ocpp1.6", "ocpp2.1"),
])
def test_subprotocol_choice(router_node: RouterNode, offered: str, chosen: str) -> None:
    response = raw_request(router_node, "/ocpp/CP-sp", protocols=offered).decode()
    assert f"Sec-WebSocket-Protocol: {chosen}".lower() in response.lower()


async def test_no_common_subprotocol_completes_then_closes(router_node: RouterNode) -> None:
    ws = await websockets.connect(router_node.url("CP-np"), subprotocols=["ocpp1.5"])  # type: ignore[list-item]
    assert ws.subprotocol is None
    await asyncio.wait_for(ws.wait_closed(), timeout(5))
    assert ws.close_code == 1002
    assert router_node.metric("ocpp_router_handshakes_total", outcome="no_subprotocol") == 1


def test_preference_order_is_configurable(router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--subprotocols", "ocpp1.6,ocpp2.0.1")
    response = raw_request(node, "/ocpp/CP-po", protocols="ocpp2.0.1, ocpp1.6").decode()
    assert "sec-websocket-protocol: ocpp1.6" in response.lower()
    response = raw_request(node, "/ocpp/CP-po", protocols="ocpp2.1").decode()
    assert "sec-websocket-protocol" not in response.lower()


def _basic(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Authorization: Basic {token}\r\n"


def test_basic_auth(router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--auth", "basic")
    r = redis.Redis.from_url(node.redis_url)
    r.set(f"{node.key_prefix}:auth:CP-a", hash_password("0123456789abcdef"))
    path = "/ocpp/CP-a"
    assert status_of(raw_request(node, path, extra=_basic("CP-a", "0123456789abcdef"))) == 101
    # cached verification gives the same answer
    assert status_of(raw_request(node, path, extra=_basic("CP-a", "0123456789abcdef"))) == 101
    wrong = raw_request(node, path, extra=_basic("CP-a", "wrong-password!!"))
    assert status_of(wrong) == 401 and b"WWW-Authenticate: Basic" in wrong
    assert status_of(raw_request(node, path)) == 401
    # the username must be the identity
    assert status_of(raw_request(node, path, extra=_basic("CP-b", "0123456789abcdef"))) == 401
    assert status_of(raw_request(node, "/ocpp/CP-unknown",
                                 extra=_basic("CP-unknown", "0123456789abcdef"))) == 401
    assert status_of(raw_request(node, path, extra="Authorization: Basic !!!\r\n")) == 401
    r.close()
    assert node.metric("ocpp_router_handshakes_total", outcome="unauthorized") == 5


def test_max_connections_gives_503_with_retry_after(
        router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--max-connections", "2", "--retry-after", "7", "--retry-after-jitter", "0")
    socks = []
    try:
        for i in range(2):
            s = socket.create_connection(("127.0.0.1", node.port))
            s.sendall((f"GET /ocpp/CP-{i} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
                       ).encode())
            assert s.recv(4096).startswith(b"HTTP/1.1 101")
            socks.append(s)
        response = raw_request(node, "/ocpp/CP-3")
        assert status_of(response) == 503 and b"Retry-After: 7" in response
    finally:
        for s in socks:
            s.close()


def test_max_handshakes_gives_503(router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--max-handshakes", "2", "--retry-after", "3", "--retry-after-jitter", "0")
    slow = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(2)]
    try:
        for s in slow:
            s.sendall(b"GET /ocpp/CP-slow HTTP/1.1\r\n")     # unfinished requests
        time.sleep(0.2)
        response = raw_request(node, "/ocpp/CP-next")
        assert status_of(response) == 503 and b"Retry-After: 3" in response
    finally:
        for s in slow:
            s.close()
    deadline = time.monotonic() + timeout(5)
    while status_of(raw_request(node, "/ocpp/CP-next")) != 101:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_handshake_timeout_closes_slow_clients(
        router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--handshake-timeout", "1")
    with socket.create_connection(("127.0.0.1", node.port)) as s:
        s.sendall(b"GET /ocpp/CP-slow HTTP/1.1\r\nHost: x\r\n")   # never finishes
        s.settimeout(timeout(10))
        data = s.recv(4096)
        while data and not data.endswith(b"\r\n\r\n") and len(data) < 4096:
            more = s.recv(4096)
            if not more:
                break
            data += more
        assert data == b"" or b" 408 " in data or b" 400 " in data
        assert s.recv(4096) == b""


@pytest.mark.parametrize("extra", [
    "X-Long: " + "a" * 20000 + "\r\n",                          # header bytes over the limit
    "".join(f"X-H{i}: v\r\n" for i in range(200)),              # too many headers
])
def test_oversized_requests_are_refused(router_node: RouterNode, extra: str) -> None:
    assert status_of(raw_request(router_node, "/ocpp/CP-big", extra=extra)) in (400, 431)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and client certificates."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=Test CA", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, subject, ext in (
            ("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1"),
            ("cp1", "/O=ACME/CN=CP-tls", "extendedKeyUsage=clientAuth"),
            ("cp2", "/O=ACME/CN=CP-other", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                 "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                 "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))
    return d


async def test_tls_profile_3_client_certificate_cn(router_factory: Callable[..., RouterNode],
                                                   pki: Path) -> None:
    import ssl

    node = router_factory("--tls-cert", str(pki / "server.pem"), "--tls-key",
                          str(pki / "server.key"), "--tls-client-ca", str(pki / "ca.pem"))

    def ctx(client: str | None) -> ssl.SSLContext:
        c = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        if client:
            c.load_cert_chain(str(pki / f"{client}.pem"), str(pki / f"{client}.key"))
        return c

    url = f"wss://127.0.0.1:{node.port}/ocpp/CP-tls"
    ws = await websockets.connect(url, subprotocols=["ocpp1.6"], ssl=ctx("cp1"))  # type: ignore[list-item]
    b = Backend(node)
    try:
        cp = Charger(ws)
        await cp.call("BootNotification", BOOT["ocpp1.6"])
        assert (await b.next("call", cs="CP-tls"))["action"] == "BootNotification"
        await cp.close()
    finally:
        await b.close()
    # certificate of another charger: 401
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(url, subprotocols=["ocpp1.6"], ssl=ctx("cp2"))  # type: ignore[list-item]
    assert info.value.response.status_code == 401
    # no client certificate: the TLS handshake itself fails
    with pytest.raises((ssl.SSLError, ConnectionError, websockets.InvalidMessage, EOFError,
                        OSError)):
        ws = await websockets.connect(url, subprotocols=["ocpp1.6"], ssl=ctx(None))  # type: ignore[list-item]
        await ws.recv()


def test_trusted_proxy_header(router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--trusted-proxy-header", "X-SSL-Client-S-DN",
                          "--trusted-proxy-networks", "127.0.0.0/8")
    ok = raw_request(node, "/ocpp/CP-px", extra="X-SSL-Client-S-DN: CN=CP-px,O=ACME\r\n")
    assert status_of(ok) == 101
    assert status_of(raw_request(node, "/ocpp/CP-px",
                                 extra="X-SSL-Client-S-DN: /O=ACME/CN=CP-px\r\n")) == 101
    assert status_of(raw_request(node, "/ocpp/CP-px",
                                 extra="X-SSL-Client-S-DN: CN=CP-other\r\n")) == 401
    assert status_of(raw_request(node, "/ocpp/CP-px")) == 401
    untrusted = router_factory("--trusted-proxy-header", "X-SSL-Client-S-DN",
                               "--trusted-proxy-networks", "10.0.0.0/8")
    assert status_of(raw_request(untrusted, "/ocpp/CP-px",
                                 extra="X-SSL-Client-S-DN: CN=CP-px\r\n")) == 401


async def test_tls_profile_2_basic_auth_over_tls(router_factory: Callable[..., RouterNode],
                                                 pki: Path) -> None:
    import ssl

    node = router_factory("--auth", "basic", "--tls-cert", str(pki / "server.pem"),
                          "--tls-key", str(pki / "server.key"))
    r = redis.Redis.from_url(node.redis_url)
    r.set(f"{node.key_prefix}:auth:CP-p2", hash_password("0123456789abcdef"))
    r.close()
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    url = f"wss://127.0.0.1:{node.port}/ocpp/CP-p2"
    header = {"Authorization": "Basic " + base64.b64encode(b"CP-p2:0123456789abcdef").decode()}
    ws = await websockets.connect(url, subprotocols=["ocpp1.6"], ssl=ctx,  # type: ignore[list-item]
                                  additional_headers=header)
    assert ws.subprotocol == "ocpp1.6"
    await ws.close()
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(url, subprotocols=["ocpp1.6"], ssl=ctx)  # type: ignore[list-item]
    assert info.value.response.status_code == 401
    # TLS below 1.2 is refused (security profiles 2 and 3).
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # TLS 1.1 is, on purpose
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(str(pki / "ca.pem"))
        try:
            old.minimum_version = ssl.TLSVersion.TLSv1_1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ValueError, ssl.SSLError):
            return       # this OpenSSL cannot even offer TLS 1.1
        with pytest.raises((ssl.SSLError, OSError)):
            await websockets.connect(url, subprotocols=["ocpp1.6"], ssl=old)  # type: ignore[list-item]
