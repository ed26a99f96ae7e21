"""Commands that follow the charger (issue 13, part 4): ``client.call(…, wait=…)``.

Real router processes, a real redis-server, real haproxy where a node dies,
real WebSocket chargers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
import websockets

from bench.services import HAProxy
from router.backend import Client
from router.backend.errors import CallFailed, DeliveryFailed
from tests.conftest import RouterNode, timeout
from tests.server.helpers import BOOT_16


@pytest.fixture
async def client(router_node: RouterNode) -> AsyncIterator[Client]:
    redis = aioredis.from_url(router_node.redis_url)
    async with Client(redis, prefix=router_node.key_prefix) as c:
        yield c
    await redis.aclose()


async def _connect(url: str, identity: str) -> websockets.ClientConnection:
    return await websockets.connect(f"{url}/ocpp/{identity}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                    open_timeout=timeout(5))


async def _recv_call(ws: websockets.ClientConnection, wait: float = 10) -> list[Any]:
    """The next CALL from the router (answers to our own CALLs skipped)."""
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout(wait)))
        if msg[0] == 2:
            return msg  # type: ignore[no-any-return]


async def _wait_for(pred: Callable[[], bool], seconds: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout(seconds)
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_queued_calls_reach_a_charger_that_connects_later_in_order(
        router_node: RouterNode, client: Client) -> None:
    first = asyncio.create_task(client.call("CP-LATE", "Reset", {"type": "Soft"},
                                            wait=timeout(30), timeout=10))
    await asyncio.sleep(0.2)
    second = asyncio.create_task(client.call("CP-LATE", "ClearCache", {},
                                             wait=timeout(30), timeout=10))
    await asyncio.sleep(0.5)
    assert not first.done() and not second.done()      # offline: waiting, not failed
    ws = await _connect(f"ws://127.0.0.1:{router_node.port}", "CP-LATE")
    got = []
    for _ in range(2):
        call = await _recv_call(ws)
        got.append(call[2])
        await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
    assert got == ["Reset", "ClearCache"]
    assert await first == {"status": "Accepted"}
    assert await second == {"status": "Accepted"}
    # Exactly once: nothing else arrives.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 1.0)
    await ws.close()
    assert router_node.metric("ocpp_router_queued_commands_total", outcome="sent") == 2


async def test_queued_call_to_a_connected_charger_is_delivered_at_once(
        router_node: RouterNode, client: Client) -> None:
    ws = await _connect(f"ws://127.0.0.1:{router_node.port}", "CP-ON")
    await ws.send(json.dumps([2, "b1", "BootNotification", BOOT_16]))
    task = asyncio.create_task(client.call("CP-ON", "Reset", {"type": "Hard"}, wait=60,
                                           timeout=10))
    call = await _recv_call(ws)
    assert call[2:] == ["Reset", {"type": "Hard"}]
    await ws.send(json.dumps([4, call[1], "NotSupported", "no", {}]))
    with pytest.raises(CallFailed) as err:
        await task
    assert err.value.code == "NotSupported"
    await ws.close()


async def test_a_queued_call_that_waits_too_long_ends_as_failed_expired(
        router_node: RouterNode, client: Client) -> None:
    redis = aioredis.from_url(router_node.redis_url)
    try:
        with pytest.raises(DeliveryFailed) as err:
            await client.call("CP-NEVER", "Reset", {"type": "Soft"}, wait=1, timeout=1)
        assert err.value.code == "Expired"
        # The router's own failed entry on the inbound stream: backends see it too.
        entries = await redis.xrange(f"{router_node.key_prefix}:in:{{0}}")
        failed = [f for _, f in entries if f.get(b"kind") == b"failed"]
        assert [(f[b"cs"], f[b"code"]) for f in failed] == [(b"CP-NEVER", b"Expired")]
        assert await redis.xlen(f"{router_node.key_prefix}:cmd:{{CP-NEVER}}") == 0
    finally:
        await redis.aclose()
    assert router_node.metric("ocpp_router_queued_commands_total", outcome="expired") == 1


async def test_a_command_held_by_a_node_that_is_killed_reaches_the_charger_on_the_other(
        router_factory: Callable[..., RouterNode]) -> None:
    nodes = [router_factory(), router_factory()]
    redis = aioredis.from_url(nodes[0].redis_url)
    identity = f"CP-K{uuid.uuid4().hex[:6]}"
    with HAProxy([("127.0.0.1", n.port) for n in nodes]) as lb:
        url = f"ws://127.0.0.1:{lb.listen_port}"
        async with Client(redis, prefix=nodes[0].key_prefix) as client:
            ws = await _connect(url, identity)
            where = None
            for _ in range(100):
                where = await client.where(identity)
                if where is not None:
                    break
                await asyncio.sleep(0.05)
            assert where is not None
            holder = next(n for n in nodes if n.node_id == where.node)
            # A direct CALL the charger leaves unanswered keeps the
            # connection busy, so the queued one is held by the node, unsent.
            direct = asyncio.create_task(client.call(identity, "ClearCache", {}, timeout=60))
            try:
                await _kill_holder_then_deliver(client, holder, ws, url, identity)
            finally:
                direct.cancel()
                with contextlib.suppress(asyncio.CancelledError, CallFailed):
                    await direct
    await redis.aclose()


async def _kill_holder_then_deliver(client: Client, holder: RouterNode,
                                    ws: websockets.ClientConnection, url: str,
                                    identity: str) -> None:
    first = await _recv_call(ws)
    assert first[2] == "ClearCache"
    queued = asyncio.create_task(client.call(identity, "Reset", {"type": "Soft"},
                                             wait=timeout(60), timeout=10))
    try:
        await _wait_for(lambda: holder.metric("ocpp_router_backend_calls_queued") == 2, 10)
        holder.stop(signal.SIGKILL)
        # The charger sees its socket die and reconnects through haproxy.
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), timeout(10))
        ws2 = None
        for _ in range(200):
            try:
                ws2 = await _connect(url, identity)
                break
            except (OSError, websockets.InvalidHandshake, TimeoutError):
                await asyncio.sleep(0.1)
        assert ws2 is not None
        call = await _recv_call(ws2, wait=20)
        assert call[2:] == ["Reset", {"type": "Soft"}]
        await ws2.send(json.dumps([3, call[1], {"status": "Accepted"}]))
        assert await queued == {"status": "Accepted"}
        with pytest.raises(TimeoutError):       # exactly once
            await asyncio.wait_for(ws2.recv(), 1.0)
        await ws2.close()
    finally:
        if not queued.done():
            queued.cancel()
        with contextlib.suppress(asyncio.CancelledError, CallFailed):
            await queued


async def test_cli_call_wait_delivers_or_expires(router_node: RouterNode) -> None:
    from tests.backend.test_cli import cli, one_line_error

    conn = ("--redis-url", router_node.redis_url, "--key-prefix", router_node.key_prefix)
    # Expired: nobody connects within --wait; one line, exit status 7.
    code, out, err = await cli("call", "CP-CLI0", "Reset", '{"type":"Soft"}', "--wait", "1",
                               "--timeout", "1", *conn)
    assert code == 7 and out == ""
    one_line_error(err, "Expired")
    code, _, err = await cli("call", "CP-CLI0", "Reset", "{}", "--wait", "-3", *conn)
    assert code == 2
    one_line_error(err, "--wait")
    # Delivered once the charger connects.
    task = asyncio.create_task(cli("call", "CP-CLI1", "Reset", '{"type":"Hard"}',
                                   "--wait", "60", *conn))
    await asyncio.sleep(1.0)
    ws = await _connect(f"ws://127.0.0.1:{router_node.port}", "CP-CLI1")
    call = await _recv_call(ws, wait=20)
    await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
    code, out, err = await task
    assert (code, json.loads(out)) == (0, {"status": "Accepted"}), err
    await ws.close()
