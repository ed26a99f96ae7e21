"""Test-side stand-ins for a charger and a backend, speaking the real protocols.

The charger is a real WebSocket client (``websockets``); the backend speaks the
stream contract (docs/streams.md) to the real Redis with redis-py, so these
tests check the contract exactly as a third-party backend would see it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import redis.asyncio as aioredis
import websockets

from tests.conftest import RouterNode, timeout


def entry_dict(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in fields.items()}


class Backend:
    """Reads the inbound stream(s) from the start, answers through out streams."""

    def __init__(self, node: RouterNode, shards: int = 1) -> None:
        self.redis = aioredis.from_url(node.redis_url)
        self.prefix = node.key_prefix
        self.streams = {f"{self.prefix}:in:{{{n}}}".encode(): b"0" for n in range(shards)}

    async def close(self) -> None:
        await self.redis.aclose()

    async def next(self, kind: str | None = None, wait: float = 5.0,
                   **match: str) -> dict[str, str]:
        """The next inbound entry (of ``kind``, with fields equal to ``match``)."""
        deadline = asyncio.get_running_loop().time() + timeout(wait)
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"no inbound {kind or 'entry'} {match or ''}")
            res = await self.redis.xread(self.streams, count=1, block=max(1, int(left * 1000)))
            for stream, entries in res or []:
                for entry_id, fields in entries:
                    self.streams[stream] = entry_id
                    e = entry_dict(fields)
                    e["_id"] = entry_id.decode()
                    if (kind is None or e["kind"] == kind) and all(
                            e.get(k) == v for k, v in match.items()):
                        return e

    async def nothing(self, wait: float = 0.5, kinds: tuple[str, ...] = ("call",)) -> None:
        """Assert no inbound entry of ``kinds`` arrives within ``wait`` seconds."""
        try:
            e = await self.next(wait=wait)
        except TimeoutError:
            return
        assert e["kind"] not in kinds, e

    async def out(self, node_id: str, **fields: Any) -> bytes:
        data = {k: (json.dumps(v, separators=(",", ":")) if isinstance(v, dict) else str(v))
                for k, v in fields.items()}
        return bytes(await self.redis.xadd(f"{self.prefix}:out:{node_id}", data))

    async def reply(self, call: dict[str, str], payload: dict[str, Any]) -> None:
        await self.out(call["node"], kind="result", cs=call["cs"], conn=call["conn"],
                       id=call["id"], payload=payload)

    async def registry(self, identity: str) -> dict[str, str]:
        raw = await self.redis.hgetall(f"{self.prefix}:cs:{identity}")
        return entry_dict(raw)


class Charger:
    """A real WebSocket client speaking OCPP-J by hand (raw frames on purpose)."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, node: RouterNode, identity: str, proto: str = "ocpp1.6",
                      **kw: Any) -> Charger:
        ws = await websockets.connect(node.url(identity), subprotocols=[proto],  # type: ignore[list-item]
                                      open_timeout=timeout(5), **kw)
        return cls(ws)

    async def send(self, message: list[Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def call(self, action: str, payload: dict[str, Any], msg_id: str | None = None) -> str:
        msg_id = msg_id or uuid.uuid4().hex[:20]
        await self.send([2, msg_id, action, payload])
        return msg_id

    async def recv(self, wait: float = 5.0) -> list[Any]:
        data = await asyncio.wait_for(self.ws.recv(), timeout(wait))
        return json.loads(data)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.ws.close()


BOOT_16 = {"chargePointVendor": "ACME", "chargePointModel": "X1"}
BOOT_201 = {"reason": "PowerUp", "chargingStation": {"vendorName": "ACME", "model": "X1"}}
BOOT = {"ocpp1.6": BOOT_16, "ocpp2.0.1": BOOT_201, "ocpp2.1": BOOT_201}
BOOT_REPLY_16 = {"status": "Accepted", "currentTime": "2026-11-21T12:00:00Z", "interval": 300}
BOOT_REPLY = {"ocpp1.6": BOOT_REPLY_16, "ocpp2.0.1": BOOT_REPLY_16, "ocpp2.1": BOOT_REPLY_16}
