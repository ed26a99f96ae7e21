"""The per-connection message-rate limit (issue 13, part 3): a flooding
charger is limited, a booting charger and its neighbours are not.

Real router processes, a real backend (bench's fast responder) and real
WebSocket chargers. The limiter's CPU cost: ``make bench-fleet``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import websockets

from router.embedded_redis import RedisServer
from tests.conftest import RouterNode, timeout
from tests.server.helpers import BOOT_16

STATUS = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}


async def _connect(node: RouterNode, identity: str) -> websockets.ClientConnection:
    return await websockets.connect(node.url(identity), subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                    open_timeout=timeout(5), max_queue=None)


async def _roundtrip(ws: websockets.ClientConnection, msg_id: str, action: str,
                     payload: dict[str, Any]) -> list[Any]:
    await ws.send(json.dumps([2, msg_id, action, payload]))
    answer = json.loads(await asyncio.wait_for(ws.recv(), timeout(10)))
    assert answer[1] == msg_id
    return answer  # type: ignore[no-any-return]


async def test_boot_and_a_burst_of_status_notifications_pass_the_defaults(
        router_factory: Callable[..., RouterNode], redis_server: RedisServer,
        key_prefix: str) -> None:
    from tests.fleet.helpers import responder

    node = router_factory()          # default --message-rate / --message-burst
    with responder(redis_server.url, key_prefix):
        ws = await _connect(node, "CP-BOOT")
        assert (await _roundtrip(ws, "b", "BootNotification", BOOT_16))[0] == 3
        # A charger with 60 connectors reporting each one as fast as answered.
        for i in range(60):
            answer = await _roundtrip(ws, f"s{i}", "StatusNotification",
                                      {**STATUS, "connectorId": i + 1})
            assert answer[0] == 3, answer
        await ws.close()
    assert node.metric("ocpp_router_rate_limited_messages_total") == 0


async def test_a_flooding_charger_is_limited_its_neighbours_are_not(
        router_factory: Callable[..., RouterNode]) -> None:
    # Heartbeats are answered at the edge: no backend needed, and CALLs may be
    # pipelined (each is answered at once), so one charger can send 1,500 in
    # about a second.
    node = router_factory("--message-rate", "50", "--message-burst", "100")
    flooder = await _connect(node, "CP-FLOOD")
    neighbours = [await _connect(node, f"CP-N{i}") for i in range(10)]

    async def flood() -> list[Any]:
        for i in range(1500):
            await flooder.send(json.dumps([2, f"f{i}", "Heartbeat", {}]))
            if i % 100 == 99:
                await asyncio.sleep(0.1)        # ~1,000 a second
        return [json.loads(await asyncio.wait_for(flooder.recv(), timeout(10)))
                for _ in range(1500)]

    async def neighbour(ws: websockets.ClientConnection) -> list[int]:
        kinds = []
        for i in range(15):
            kinds.append((await _roundtrip(ws, f"n{i}", "Heartbeat", {}))[0])
            await asyncio.sleep(0.1)            # 10 a second: a busy but normal charger
        return kinds

    answers, *others = await asyncio.gather(flood(), *(neighbour(ws) for ws in neighbours))
    limited = [a for a in answers if a[0] == 4]
    assert all(a[2] == "GenericError" and "rate limit" in a[3] for a in limited)
    # The burst passes, then about 50 a second: most of the flood is refused.
    assert 100 <= len(answers) - len(limited) <= 100 + 50 * timeout(10)
    assert len(limited) > 1000
    assert all(kinds == [3] * 15 for kinds in others)       # neighbours: every one answered
    assert node.metric("ocpp_router_rate_limited_messages_total",
                       action="callerror") == len(limited)
    for ws in (flooder, *neighbours):
        await ws.close()


async def test_message_limit_action_close_closes_with_1008(
        router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--message-rate", "1", "--message-burst", "5",
                          "--message-limit-action", "close")
    ws = await _connect(node, "CP-CLOSE")
    for i in range(5):
        assert (await _roundtrip(ws, f"h{i}", "Heartbeat", {}))[0] == 3
    await ws.send(json.dumps([2, "h5", "Heartbeat", {}]))
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), timeout(5))
    assert ws.close_code == 1008
    assert node.metric("ocpp_router_rate_limited_messages_total", action="close") == 1
