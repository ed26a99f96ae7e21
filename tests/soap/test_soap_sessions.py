"""SOAP charger sessions: expiry, takeover across nodes, Basic auth, drain."""

from __future__ import annotations

import asyncio
import base64
import signal
import time
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from router.auth import hash_password
from router.backend.client import Client
from router.embedded_redis import RedisServer
from tests.conftest import RouterNode, start_router, timeout
from tests.server.helpers import Backend, entry_dict
from tests.soap.chargepoint import SoapChargePoint
from tests.streams.proxy import TCPProxy

NOW = "2026-12-04T10:00:00Z"


async def test_session_expires_and_is_taken_over(router_factory: Callable[..., RouterNode]
                                                 ) -> None:
    a = router_factory("--soap-session-timeout", "2", "--heartbeat", "edge")
    b = router_factory()
    backend = Backend(a)
    try:
        async with SoapChargePoint(a.port, "SESS-1") as cp:
            await cp.call("Heartbeat", {})
            first = await backend.next("connected", cs="SESS-1")
            assert first["node"] == a.node_id
            # The same charger's next request lands on node b: b takes it over and
            # a's session ends (its disconnected entry), as for WebSockets.
            cp.url = f"http://127.0.0.1:{b.port}/ocpp/"
            await cp.call("Heartbeat", {})
            second = await backend.next("connected", cs="SESS-1")
            assert second["node"] == b.node_id and second["conn"] != first["conn"]
            gone = await backend.next("disconnected", cs="SESS-1", conn=first["conn"])
            assert gone["transport"] == "soap"
            reg = await backend.registry("SESS-1")
            assert reg["node"] == b.node_id and reg["conn"] == second["conn"]
            # Back on a, then silent: expired after --soap-session-timeout.
            cp.url = f"http://127.0.0.1:{a.port}/ocpp/"
            await cp.call("Heartbeat", {})
            third = await backend.next("connected", cs="SESS-1", node=a.node_id)
            gone = await backend.next("disconnected", cs="SESS-1", conn=third["conn"], wait=15)
            assert gone["code"] == "1000" and "no request" in gone["description"]
            for _ in range(100):
                if not await backend.registry("SESS-1"):
                    break
                await asyncio.sleep(0.05)
            assert await backend.registry("SESS-1") == {}
    finally:
        await backend.close()


async def test_basic_auth_and_drain(router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--auth", "basic")
    r = aioredis.from_url(node.redis_url)
    await r.set(f"{node.key_prefix}:auth:AUTH-1", hash_password("0123456789abcdef"))
    backend = Backend(node)
    try:
        async with SoapChargePoint(node.port, "AUTH-1") as cp:
            body = cp.request("Heartbeat", {})
            status, data = await cp.post(body)
            assert status == 401 and b"SecurityError" in data
            bad = base64.b64encode(b"AUTH-1:wrong-password!!").decode()
            status, _ = await cp.post(body, {"Authorization": f"Basic {bad}"})
            assert status == 401
            good = base64.b64encode(b"AUTH-1:0123456789abcdef").decode()
            status, data = await cp.post(body, {"Authorization": f"Basic {good}"})
            assert status == 200 and b"heartbeatResponse" in data
            connected = await backend.next("connected", cs="AUTH-1")
            # SIGTERM: the session ends with 1001 like a drained WebSocket.
            node.proc.send_signal(signal.SIGTERM)
            gone = await backend.next("disconnected", cs="AUTH-1", wait=15)
            assert gone["conn"] == connected["conn"] and gone["code"] == "1001"
    finally:
        await backend.close()
        await r.aclose()


async def test_https_with_client_certificate(router_factory: Callable[..., RouterNode],
                                             pki: Path) -> None:
    # Security profile 3 over SOAP: the hand-over works on the TLS transport,
    # and the certificate's CN must be chargeBoxIdentity.
    import ssl

    import aiohttp

    node = router_factory("--tls-cert", str(pki / "server.pem"), "--tls-key",
                          str(pki / "server.key"), "--tls-client-ca", str(pki / "ca.pem"))
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / "cp1.pem"), str(pki / "cp1.key"))
    url = f"https://127.0.0.1:{node.port}/ocpp/"
    backend = Backend(node)
    async with aiohttp.ClientSession() as session:
        for identity, status, marker in (("CP-tls", 200, b"heartbeatResponse"),
                                         ("CP-other", 400, b"IdentityMismatch")):
            body = SoapChargePoint(node.port, identity).request("Heartbeat", {})
            async with session.post(url, data=body, ssl=ctx, headers={
                    "Content-Type": "application/soap+xml"}) as resp:
                assert resp.status == status
                assert marker in await resp.read()
    connected = await backend.next("connected")
    assert connected["cs"] == "CP-tls" and connected["transport"] == "soap"
    await backend.close()


async def test_websocket_connection_replaces_the_soap_session(
        router_node: RouterNode) -> None:
    from tests.server.helpers import Charger

    backend = Backend(router_node)
    async with SoapChargePoint(router_node.port, "MOVE-1") as cp:
        await cp.call("Heartbeat", {})
        soap = await backend.next("connected", cs="MOVE-1")
        ws = await Charger.connect(router_node, "MOVE-1")
        gone = await backend.next("disconnected", cs="MOVE-1", conn=soap["conn"])
        assert gone["transport"] == "soap" and "WebSocket" in gone["description"]
        connected = await backend.next("connected", cs="MOVE-1")
        assert "transport" not in connected
        await ws.close()
    await backend.close()


async def test_registry_entry_is_back_after_redis_restarts_empty(key_prefix: str) -> None:
    """A SOAP charger's registry entry, with its transport and endpoint, is
    written back within seconds when Redis restarts without persistence (the
    node's registry round, as for WebSocket chargers; not at the next TTL
    refresh), and a backend CALL routed through it reaches the charger."""
    server = RedisServer().start()
    node = start_router(server.url, key_prefix)
    r = aioredis.from_url(server.url)
    try:
        async with SoapChargePoint(node.port, "SOAP-RS") as cp:
            await cp.call("Heartbeat", {})
            backend = Backend(node)
            reg = await backend.registry("SOAP-RS")
            await backend.close()
            assert reg["transport"] == "soap" and reg["endpoint"] == cp.address
            await r.aclose()
            server.stop()
            server = RedisServer(port=server.port).start()       # empty
            r = aioredis.from_url(server.url)
            key = f"{key_prefix}:cs:SOAP-RS"
            deadline = time.monotonic() + timeout(5)
            while not await r.exists(key):
                assert time.monotonic() < deadline, "the entry was not written back"
                await asyncio.sleep(0.05)
            assert entry_dict(await r.hgetall(key)) == reg
            assert await r.ttl(key) > 100                  # the full --registry-ttl
            while node.metric("ocpp_router_registry_restored_total") != 1:
                assert time.monotonic() < deadline, "restored_total stayed 0"
                await asyncio.sleep(0.05)
            cp.handlers["Reset"] = lambda payload: {"status": "Accepted"}
            async with Client(r, prefix=key_prefix) as client:
                assert await client.call("SOAP-RS", "Reset", {"type": "Soft"}) == {
                    "status": "Accepted"}
    finally:
        await r.aclose()
        node.stop()
        server.stop()


async def test_registry_follows_requests_that_alternate_between_nodes(
        redis_server: RedisServer, key_prefix: str,
        router_factory: Callable[..., RouterNode]) -> None:
    """Behind a load balancer without affinity a SOAP charger's consecutive
    requests reach different nodes. A node answers a session's first request
    only once its registry entry is written, so the next node's takeover comes
    after it, however slow the first node's path to Redis: right after the
    second answer the registry names the second node. (Node a reaches Redis
    through a proxy that holds its commands for 0.3 s; before the fix a's
    late write overwrote b's takeover.)"""
    proxy = await TCPProxy("127.0.0.1", redis_server.port).start()
    a = await asyncio.to_thread(start_router, proxy.url, key_prefix)
    b = router_factory()
    backend = Backend(b)
    proxy.delay = 0.3

    async def hop(i: int) -> str:
        async with SoapChargePoint(a.port, f"HOP-{i}") as cp:
            await cp.call("Heartbeat", {})
            cp.url = f"http://127.0.0.1:{b.port}/ocpp/"
            await cp.call("Heartbeat", {})
            return (await backend.registry(f"HOP-{i}")).get("node", "")

    async def holders() -> list[str]:
        return [(await backend.registry(f"HOP-{i}")).get("node", "") for i in range(5)]

    try:
        assert await asyncio.gather(*(hop(i) for i in range(5))) == [b.node_id] * 5
        # Longer than a's commands are held: no late write of a lands on b's.
        await asyncio.sleep(4 * proxy.delay)
        assert await holders() == [b.node_id] * 5
    finally:
        await backend.close()
        a.stop()
        await proxy.stop()
