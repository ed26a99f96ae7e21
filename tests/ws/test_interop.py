"""Interop of the echo server (bench/echo_server.py: the router's codec and
glue on uvloop) with independent clients: websockets, aiohttp, picows."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
import picows
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import timeout

MESSAGES: list[str | bytes] = [
    "", "a", "héllo wörld 🐢", '[2,"19223201","BootNotification",{"reason":"PowerUp"}]' * 30,
    b"", b"\x00\xff" * 10, os.urandom(70_000), "x" * 1_000_000,
]


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_websockets_client(echo_port: int, compression: str | None) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{echo_port}/ocpp/CP1", compression=compression,
                                  subprotocols=["ocpp2.0.1"],   # type: ignore[list-item]
                                  max_size=None) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions")
        assert (ext is not None) == (compression == "deflate")
        assert ws.subprotocol == "ocpp2.0.1"
        for msg in MESSAGES:
            await ws.send(msg)
            assert await asyncio.wait_for(ws.recv(), timeout(10)) == msg
        # Fragmented messages (RFC 6455 §5.4), compressed or not.
        await ws.send(["frag", "men", "ted ✓"])
        assert await ws.recv() == "fragmented ✓"
        await ws.send([b"\x01" * 1000, b"\x02" * 70_000])
        assert await ws.recv() == b"\x01" * 1000 + b"\x02" * 70_000
        pong = await ws.ping(b"ping data")
        await asyncio.wait_for(pong, timeout(10))
        await ws.close(4000, "done")
    assert ws.close_code == 4000
    assert ws.close_reason == "done"


async def test_websockets_too_big_closes_1009(echo_port: int) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{echo_port}/", max_size=None) as ws:
        await ws.send(b"x" * (4 * 1024 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


@pytest.mark.parametrize("compress", [15, 0])
async def test_aiohttp_client(echo_port: int, compress: int) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(
        f"http://127.0.0.1:{echo_port}/ocpp/CP2", protocols=("ocpp1.6",), compress=compress,
        max_msg_size=0, autoping=True,
    ) as ws:
        assert ws.protocol == "ocpp1.6"
        assert (ws.compress != 0) == bool(compress)
        for msg in MESSAGES:
            if isinstance(msg, str):
                await ws.send_str(msg)
                reply = await ws.receive(timeout(10))
                assert reply.type is aiohttp.WSMsgType.TEXT and reply.data == msg
            else:
                await ws.send_bytes(msg)
                reply = await ws.receive(timeout(10))
                assert reply.type is aiohttp.WSMsgType.BINARY and reply.data == msg
        await ws.close(code=1001, message=b"going away")
        assert ws.close_code == 1001


class PicowsClient(picows.WSListener):
    def __init__(self) -> None:
        self.frames: asyncio.Queue[tuple[Any, bytes, int | None]] = asyncio.Queue()

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        code = frame.get_close_code().value if frame.msg_type == picows.WSMsgType.CLOSE else None
        self.frames.put_nowait((frame.msg_type, frame.get_payload_as_bytes(), code))


async def test_picows_client(echo_port: int) -> None:
    transport, client = await picows.ws_connect(PicowsClient, f"ws://127.0.0.1:{echo_port}/ocpp/CP3",
                                                enable_auto_pong=False)
    assert isinstance(client, PicowsClient)
    try:
        async def expect(kind: Any, payload: bytes) -> None:
            got = await asyncio.wait_for(client.frames.get(), timeout(10))
            assert got[:2] == (kind, payload)

        transport.send(picows.WSMsgType.TEXT, b"hello")
        await expect(picows.WSMsgType.TEXT, b"hello")
        transport.send(picows.WSMsgType.BINARY, b"\x00" * 100_000)
        await expect(picows.WSMsgType.BINARY, b"\x00" * 100_000)
        # Fragments with a ping in between (RFC 6455 §5.4, §5.5).
        transport.send(picows.WSMsgType.TEXT, "żó".encode()[:3], fin=False)
        transport.send_ping(b"p")
        transport.send(picows.WSMsgType.CONTINUATION, "żó".encode()[3:], fin=True)
        await expect(picows.WSMsgType.PONG, b"p")
        await expect(picows.WSMsgType.TEXT, "żó".encode())
        transport.send_close(picows.WSCloseCode.GOING_AWAY, b"bye")
        kind, _, code = await asyncio.wait_for(client.frames.get(), timeout(10))
        assert (kind, code) == (picows.WSMsgType.CLOSE, 1001)
        await asyncio.wait_for(transport.wait_disconnected(), timeout(10))
    finally:
        transport.disconnect()


async def test_picows_protocol_error_gets_1002(echo_port: int) -> None:
    transport, client = await picows.ws_connect(PicowsClient, f"ws://127.0.0.1:{echo_port}/")
    assert isinstance(client, PicowsClient)
    try:
        transport.send(picows.WSMsgType.TEXT, b"x", rsv2=True)
        kind, _, code = await asyncio.wait_for(client.frames.get(), timeout(10))
        assert (kind, code) == (picows.WSMsgType.CLOSE, 1002)
        await asyncio.wait_for(transport.wait_disconnected(), timeout(10))
    finally:
        transport.disconnect()
