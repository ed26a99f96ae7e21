"""Bad frames against the real router: each gets its close code, and the other
connections' traffic is unaffected. Keepalive and publish backpressure."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
from collections.abc import AsyncIterator, Callable

import pytest

from tests.conftest import RouterNode, timeout
from tests.server.helpers import BOOT, BOOT_REPLY, Backend, Charger

UPGRADE = ("GET /ocpp/{identity} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n")


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
          rsv: int = 0) -> bytes:
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def open_raw(node: RouterNode, identity: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", node.port), timeout=timeout(10))
    s.sendall(UPGRADE.format(identity=identity).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    assert data.startswith(b"HTTP/1.1 101"), data
    return s


def close_code(s: socket.socket) -> int | None:
    """Read frames until the server's close frame; its status code."""
    buf = b""
    while True:
        while len(buf) < 2:
            chunk = s.recv(65536)
            if not chunk:
                return None
            buf += chunk
        opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
        off = 2
        if n == 126:
            n, off = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            n, off = struct.unpack("!Q", buf[2:10])[0], 10
        while len(buf) < off + n:
            chunk = s.recv(65536)
            if not chunk:
                return None
            buf += chunk
        payload, buf = buf[off:off + n], buf[off + n:]
        if opcode == 8:
            return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005


@pytest.fixture
def small_router(router_factory: Callable[..., RouterNode]) -> RouterNode:
    return router_factory("--max-message-size", "4096")


@pytest.fixture
async def backend(small_router: RouterNode) -> AsyncIterator[Backend]:
    b = Backend(small_router)
    yield b
    await b.close()


BAD_FRAMES = {
    "unmasked": (frame(1, b"[]", mask=False), 1002),
    "reserved bit": (frame(1, b"[]", rsv=0b100), 1002),
    "unknown opcode": (frame(3, b"x"), 1002),
    "invalid utf-8": (frame(1, b"[2,\"\xff\"]"), 1007),
    "too big": (frame(1, b"[" + b" " * 5000 + b"]"), 1009),
    "fragmented ping": (frame(9, b"x", fin=False), 1002),
    "ping too long": (frame(9, b"x" * 126), 1002),
    "continuation first": (frame(0, b"x"), 1002),
    "bad close code": (frame(8, struct.pack("!H", 1005)), 1002),
    "binary": (frame(2, b"[]"), 1003),
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
async def test_bad_frame_closes_only_that_connection(small_router: RouterNode,
                                                     backend: Backend, name: str) -> None:
    good = await Charger.connect(small_router, "CP-good")
    data, code = BAD_FRAMES[name]
    bad = await asyncio.to_thread(open_raw, small_router, "CP-bad")
    try:
        bad.sendall(data)
        assert await asyncio.to_thread(close_code, bad) == code
    finally:
        bad.close()
    msg_id = await good.call("BootNotification", BOOT["ocpp1.6"])
    call = await backend.next("call", cs="CP-good")
    await backend.reply(call, BOOT_REPLY["ocpp1.6"])
    assert await good.recv() == [3, msg_id, BOOT_REPLY["ocpp1.6"]]
    await good.close()


async def test_fragmented_call_is_reassembled(small_router: RouterNode,
                                              backend: Backend) -> None:
    s = await asyncio.to_thread(open_raw, small_router, "CP-frag")
    text = b'[2,"f1","BootNotification",{"chargePointVendor":"A","chargePointModel":"B"}]'
    s.sendall(frame(1, text[:10], fin=False) + frame(9, b"ping!") + frame(0, text[10:30],
              fin=False) + frame(0, text[30:]))
    call = await backend.next("call", cs="CP-frag")
    assert call["id"] == "f1"
    s.close()


async def test_keepalive_closes_silent_connections(
        router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--ping-interval", "0.5", "--ping-timeout", "0.5")
    s = await asyncio.to_thread(open_raw, node, "CP-silent")   # never answers pings
    try:
        s.settimeout(timeout(10))
        code = await asyncio.to_thread(close_code, s)
        assert code in (1011, 1006, None)
    finally:
        s.close()
    assert node.metric("ocpp_router_ws_ping_timeouts_total") >= 1
    # A client that answers pings stays connected.
    cp = await Charger.connect(node, "CP-alive")
    await asyncio.sleep(timeout(2.0))
    assert cp.ws.close_code is None
    await cp.close()


async def test_keepalive_can_be_switched_off(router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--ping-interval", "0")
    s = await asyncio.to_thread(open_raw, node, "CP-quiet")
    s.settimeout(1.5)
    with pytest.raises(TimeoutError):
        s.recv(10)           # no ping, no close
    s.close()


async def test_publish_backpressure_pauses_reading(
        router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--max-pending-publishes", "4", "--publish-timeout", "30",
                          "--reply-timeout", "60")
    redis_pid = int(await _redis_pid(node))
    chargers = []
    try:
        os.kill(redis_pid, signal.SIGSTOP)          # Redis stops answering
        for i in range(6):                          # 6 connected + 6 call entries > 4
            cp = await Charger.connect(node, f"CP-bp{i}")
            await cp.call("BootNotification", BOOT["ocpp1.6"])
            chargers.append(cp)
        await asyncio.sleep(timeout(0.5))
        assert node.metric("ocpp_router_reading_paused") == 1
        assert node.metric("ocpp_router_publish_pending") >= 4
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    for _ in range(100):
        if node.metric("ocpp_router_reading_paused") == 0:
            break
        await asyncio.sleep(0.05)
    assert node.metric("ocpp_router_reading_paused") == 0
    for cp in chargers:
        await cp.close()


async def _redis_pid(node: RouterNode) -> str:
    import redis.asyncio as aioredis

    r = aioredis.from_url(node.redis_url)
    info = await r.info("server")
    await r.aclose()
    return str(info["process_id"])
