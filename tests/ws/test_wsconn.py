"""The asyncio glue (router.server.wsconn) in process, on asyncio and uvloop:
handshake, rejection, timeouts, close handshake, error → close code mapping,
keepalive, backpressure, hooks called exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from router.server.wsconn import ConnectionState, WebSocketProtocol, active_connections, stats
from router.ws import InvalidState, UpgradeRequest, WSSettings
from tests.conftest import timeout
from tests.ws.helpers import client_frame, close_payload, upgrade_request

FAST = WSSettings(handshake_timeout=5.0, close_timeout=2.0, timer_resolution=0.05)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Callable[[], Awaitable[Any]]], Any]:
    """Run a coroutine function on a fresh loop of the parametrised kind."""
    def runner(main: Callable[[], Awaitable[Any]]) -> Any:
        loop = uvloop.new_event_loop() if request.param == "uvloop" else asyncio.new_event_loop()
        try:
            return loop.run_until_complete(asyncio.wait_for(main(), timeout(30)))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
    return runner


class Recorder(WebSocketProtocol):
    """Records every hook call; behaviour configurable per test."""

    def __init__(self, settings: WSSettings, log: list[tuple[Any, ...]],
                 done: asyncio.Future[None], **behaviour: Any) -> None:
        super().__init__(settings)
        self.log = log
        self.done = done
        self.behaviour = behaviour

    def on_request(self, request: UpgradeRequest) -> None:
        self.log.append(("request", request.path, tuple(request.subprotocols)))
        action = self.behaviour.get("on_request")
        if action is not None:
            action(self, request)
        else:
            self.accept(request.subprotocols[0] if request.subprotocols else None)

    def on_open(self) -> None:
        self.log.append(("open",))
        action = self.behaviour.get("on_open")
        if action is not None:
            action(self)

    def on_text(self, data: bytes) -> None:
        self.log.append(("text", data))
        if data == b"raise":
            raise RuntimeError("application bug")
        action = self.behaviour.get("on_text")
        if action is not None:
            action(self, data)
        else:
            self.send_text(data)

    def on_binary(self, data: bytes) -> None:
        self.log.append(("binary", data))
        self.send_binary(data)

    def on_closed(self, code: int, reason: str) -> None:
        self.log.append(("closed", code, reason))
        if not self.done.done():
            self.done.set_result(None)

    def on_rejected(self) -> None:
        self.log.append(("rejected",))
        if not self.done.done():
            self.done.set_result(None)


async def serve(settings: WSSettings = FAST, **behaviour: Any
                ) -> tuple[asyncio.Server, int, list[tuple[Any, ...]], asyncio.Future[None],
                           list[Recorder]]:
    loop = asyncio.get_running_loop()
    log: list[tuple[Any, ...]] = []
    done: asyncio.Future[None] = loop.create_future()
    protos: list[Recorder] = []

    def factory() -> Recorder:
        proto = Recorder(settings, log, done, **behaviour)
        protos.append(proto)
        return proto

    server = await loop.create_server(factory, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], log, done, protos


async def raw_open(port: int, request: bytes | None = None
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request if request is not None else upgrade_request())
    head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, head


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    assert not b1 & 0x80
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await reader.readexactly(n)


def closes(log: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [e for e in log if e[0] in ("closed", "rejected")]


# ----------------------------------------------------------------- happy path


def test_echo_and_client_close(run: Callable[..., Any]) -> None:
    async def main() -> None:
        before = stats()
        server, port, log, done, protos = await serve()
        async with websockets.connect(f"ws://127.0.0.1:{port}/ocpp/CP1",
                                      subprotocols=["ocpp1.6"]) as ws:   # type: ignore[list-item]
            assert ws.subprotocol == "ocpp1.6"
            assert protos[0].state == ConnectionState.OPEN
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"
            await ws.close(4001, "bye")
        await done
        server.close()
        assert log[:2] == [("request", "/ocpp/CP1", ("ocpp1.6",)), ("open",)]
        assert closes(log) == [("closed", 4001, "bye")]
        assert protos[0].state == ConnectionState.CLOSED
        after = stats()
        assert after["messages_out"] - before["messages_out"] >= 2
        assert after["bytes_in"] > before["bytes_in"]
        assert active_connections() == 0
    run(main)


def test_async_accept_pauses_reading_and_keeps_early_frames(run: Callable[..., Any]) -> None:
    reading: list[bool] = []

    def later(proto: Recorder, request: UpgradeRequest) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: reading.append(proto.transport.is_reading()))  # type: ignore[union-attr]
        loop.call_later(0.05, proto.accept, None, [("X-Node", "n1")])

    async def main() -> None:
        server, port, log, done, _ = await serve(on_request=later)
        # The client sends a frame right behind its request, before the 101.
        reader, writer, head = await raw_open(
            port, upgrade_request() + client_frame(1, b"early"))
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"\r\nX-Node: n1\r\n" in head
        assert await read_frame(reader) == (1, b"early")
        writer.write(client_frame(8, close_payload(1000)))
        assert await read_frame(reader) == (8, close_payload(1000))
        assert await reader.read() == b""           # the server closes TCP first
        await done
        writer.close()
        server.close()
        assert reading == [False]
        assert ("text", b"early") in log
    run(main)


# ----------------------------------------------------------------- rejection


@pytest.mark.parametrize(("status", "headers"), [(401, []), (503, [("Retry-After", "30")])])
def test_reject(run: Callable[..., Any], status: int, headers: list[tuple[str, str]]) -> None:
    async def main() -> None:
        server, port, log, done, _ = await serve(
            on_request=lambda p, r: p.reject(status, headers, b"no"))
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(f"ws://127.0.0.1:{port}/x"):
                pass
        await done
        server.close()
        assert info.value.response.status_code == status
        for name, value in headers:
            assert info.value.response.headers[name] == value
        assert closes(log) == [("rejected",)]
    run(main)


@pytest.mark.parametrize(("request_bytes", "status"), [
    (upgrade_request().replace(b"Version: 13", b"Version: 8"), b"426"),
    (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
    (upgrade_request(b"X-Big: " + b"a" * 9000), b"431"),
])
def test_bad_requests_get_an_http_error(run: Callable[..., Any], request_bytes: bytes,
                                        status: bytes) -> None:
    async def main() -> None:
        server, port, log, done, _ = await serve()
        reader, writer, head = await raw_open(port, request_bytes)
        assert head.split(b" ")[1] == status
        if status == b"426":
            assert b"\r\nSec-WebSocket-Version: 13\r\n" in head
        assert await reader.read() == b""
        await done
        writer.close()
        server.close()
        assert closes(log) == [("rejected",)]
    run(main)


def test_handshake_timeout_drops_slowloris(run: Callable[..., Any]) -> None:
    settings = WSSettings(handshake_timeout=0.2, timer_resolution=0.05)

    async def main() -> None:
        before = stats()["handshake_timeouts"]
        server, port, log, done, _ = await serve(settings)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")      # ...and never the rest
        try:
            assert await reader.read() == b""
        except ConnectionResetError:
            pass
        await done
        writer.close()
        server.close()
        assert closes(log) == [("rejected",)]
        assert stats()["handshake_timeouts"] == before + 1
    run(main)


def test_handshake_timeout_covers_a_slow_on_request(run: Callable[..., Any]) -> None:
    settings = WSSettings(handshake_timeout=0.2, timer_resolution=0.05)

    async def main() -> None:
        server, port, log, done, protos = await serve(settings, on_request=lambda p, r: None)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade_request())
        try:
            assert await reader.read() == b""
        except ConnectionResetError:
            pass
        await done
        # The decision arriving late (e.g. after an auth lookup) is harmless.
        protos[0].accept(None)
        protos[0].reject(401)
        writer.close()
        server.close()
        assert closes(log) == [("rejected",)]
    run(main)


def test_second_answer_is_invalid(run: Callable[..., Any]) -> None:
    errors: list[BaseException] = []

    def on_request(proto: Recorder, request: UpgradeRequest) -> None:
        proto.accept(None)
        try:
            proto.reject(503)
        except InvalidState as exc:
            errors.append(exc)
        proto.close(1000)

    async def main() -> None:
        server, port, log, done, _ = await serve(on_request=on_request)
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        await done
        server.close()
        assert len(errors) == 1
        assert closes(log) == [("closed", 1000, "")]
    run(main)


# ----------------------------------------------------------------- failures → close codes


@pytest.mark.parametrize(("frame", "code", "reason"), [
    (client_frame(1, b"x", masked=False), 1002, b"protocol error"),
    (client_frame(1, b"x", rsv=0b010), 1002, b"protocol error"),
    (client_frame(1, b"\xff\xfe"), 1007, b"invalid payload data"),
    (client_frame(2, b"x" * 2000), 1009, b"message too big"),
    (client_frame(1, b"raise"), 1011, b"internal error"),
], ids=["unmasked", "rsv2", "bad-utf8", "too-big", "hook-raises"])
def test_failures_map_to_close_codes(run: Callable[..., Any], frame: bytes, code: int,
                                     reason: bytes) -> None:
    settings = WSSettings(max_message_size=1000, close_timeout=2.0, timer_resolution=0.05)

    async def main() -> None:
        before = stats()["errors_by_close_code"][code]
        server, port, log, done, _ = await serve(settings)
        reader, writer, _ = await raw_open(port)
        writer.write(frame)
        op, payload = await read_frame(reader)
        assert (op, payload) == (8, struct.pack("!H", code) + reason)
        writer.write(client_frame(8, payload))      # we answer the close
        assert await reader.read() == b""            # then the server's FIN
        writer.close()                               # and end TCP ourselves
        await done
        server.close()
        assert closes(log) == [("closed", code, reason.decode())]
        assert stats()["errors_by_close_code"][code] == before + 1
    run(main)


def test_peer_disconnect_is_1006(run: Callable[..., Any]) -> None:
    async def main() -> None:
        server, port, log, done, _ = await serve()
        _, writer, _ = await raw_open(port)
        writer.close()
        await done
        server.close()
        assert closes(log) == [("closed", 1006, "")]
    run(main)


def test_abort_is_1006(run: Callable[..., Any]) -> None:
    async def main() -> None:
        server, port, log, done, _ = await serve(on_open=lambda p: p.abort())
        reader, writer, _ = await raw_open(port)
        try:
            assert await reader.read() == b""
        except ConnectionResetError:
            pass
        await done
        writer.close()
        server.close()
        assert closes(log) == [("closed", 1006, "")]
    run(main)


# ----------------------------------------------------------------- close handshake


def test_server_close_handshake(run: Callable[..., Any]) -> None:
    async def main() -> None:
        server, port, log, done, _ = await serve(on_open=lambda p: p.close(1001, "restart"))
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
        await done
        server.close()
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1001, "restart")
        assert closes(log) == [("closed", 1001, "restart")]
    run(main)


def test_close_timeout_when_the_peer_never_answers(run: Callable[..., Any]) -> None:
    settings = WSSettings(close_timeout=0.2, timer_resolution=0.05)

    async def main() -> None:
        server, port, log, done, _ = await serve(settings, on_open=lambda p: p.close(1000))
        reader, writer, _ = await raw_open(port)
        assert await read_frame(reader) == (8, close_payload(1000))
        try:
            assert await reader.read() == b""
        except ConnectionResetError:
            pass
        await done
        writer.close()
        server.close()
        # No close frame was received: 1006 (RFC 6455 §7.1.5).
        assert closes(log) == [("closed", 1006, "")]
    run(main)


def test_ping_gets_pong_and_close_without_code(run: Callable[..., Any]) -> None:
    async def main() -> None:
        server, port, log, done, _ = await serve()
        reader, writer, _ = await raw_open(port)
        writer.write(client_frame(1, b"frag", fin=False) + client_frame(9, b"are you there")
                     + client_frame(0, b"ment"))
        assert await read_frame(reader) == (10, b"are you there")
        assert await read_frame(reader) == (1, b"fragment")
        writer.write(client_frame(8))
        assert await read_frame(reader) == (8, b"")
        await done
        writer.close()
        server.close()
        assert closes(log) == [("closed", 1005, "")]
    run(main)


# ----------------------------------------------------------------- keepalive


def test_keepalive_pings_then_aborts_a_silent_peer(run: Callable[..., Any]) -> None:
    settings = WSSettings(ping_interval=0.1, ping_timeout=0.2, timer_resolution=0.05)

    async def main() -> None:
        before = stats()["ping_timeouts"]
        server, port, log, done, _ = await serve(settings)
        reader, writer, _ = await raw_open(port)
        for _ in range(3):                          # an answering peer stays connected
            assert await read_frame(reader) == (9, b"")
            writer.write(client_frame(10))
        assert await read_frame(reader) == (9, b"")  # this one stays unanswered
        await done
        writer.close()
        server.close()
        assert closes(log) == [("closed", 1006, "")]
        assert stats()["ping_timeouts"] == before + 1
    run(main)


# ----------------------------------------------------------------- flow control and misuse


def test_pause_and_resume_reading(run: Callable[..., Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        paused: asyncio.Future[Recorder] = loop.create_future()

        def on_text(proto: Recorder, data: bytes) -> None:
            if data == b"pause":
                proto.pause_reading()
                paused.set_result(proto)
            else:
                proto.send_text(data)

        server, port, log, done, _ = await serve(on_text=on_text)
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send("pause")
            proto = await paused
            assert proto.transport is not None and not proto.transport.is_reading()
            await ws.send("after")
            await asyncio.sleep(0.05)
            assert ("text", b"after") not in log
            proto.resume_reading()
            assert await ws.recv() == "after"
            # The transport's own backpressure pauses reading too.
            proto.pause_writing()
            assert not proto.transport.is_reading()
            proto.resume_writing()
            assert proto.transport.is_reading()
        await done
        server.close()
    run(main)


def test_slow_peer_gets_every_frame_in_order(run: Callable[..., Any]) -> None:
    """Frames go straight to the socket while the transport holds nothing
    (plain TCP on uvloop). With small socket buffers and a peer that reads
    slower than the server writes, the kernel fills and drains many times:
    what it does not take (partial sends included) queues in the transport,
    later frames wait behind it, the write backpressure pauses reading, and
    the peer gets every frame, in order. Small and large frames (the large
    ones leave through writelines) interleave."""
    sizes = [100, 3000, 15_000, 700, 9000, 8, 12_000, 40_000]
    count = 1500

    async def flood(proto: Recorder) -> None:
        for i in range(count):
            head = b"%06d:" % i
            proto.send_binary(head + b"x" * (sizes[i % len(sizes)] - len(head)))
            proto.log.append(("queued", proto.write_buffer_size()))
            if i % 7 == 0:
                await asyncio.sleep(0)      # let the transport's writes and the reader run

    tasks: list[asyncio.Task[None]] = []

    def on_text(proto: Recorder, data: bytes) -> None:
        if data == b"flood":
            sock = proto.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            # Outside the read batch: every frame is its own write.
            tasks.append(asyncio.create_task(flood(proto)))

    async def main() -> None:
        server, port, log, done, protos = await serve(on_text=on_text)
        # A small receive window before connecting: the server's sends then
        # span several segments and the kernel takes some frames in part.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(upgrade_request())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        writer.write(client_frame(1, b"flood"))
        paused_seen = False
        try:
            for i in range(count):
                # A lost or garbled frame fails here, not at the test's timeout.
                opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
                assert (opcode, payload[:7], len(payload)) == (2, b"%06d:" % i,
                                                              sizes[i % len(sizes)])
                paused_seen = paused_seen or not protos[0].transport.is_reading()
                if i % 50 == 0:
                    await asyncio.sleep(0.002)  # slower than the server writes
        except BaseException:
            # Leave nothing blocked behind a failure (a write nobody reads).
            writer.transport.abort()
            protos[0].abort()
            server.close()
            raise
        await tasks[0]
        assert max(e[1] for e in log if e[0] == "queued") > 0   # the transport had to queue
        assert paused_seen                  # pause_writing took effect
        writer.write(client_frame(8, struct.pack("!H", 1000)))
        assert (await read_frame(reader))[0] == 8
        writer.close()
        await done
        server.close()
    run(main)


def test_send_before_open_is_invalid_and_after_close_dropped(run: Callable[..., Any]) -> None:
    errors: list[BaseException] = []

    def on_request(proto: Recorder, request: UpgradeRequest) -> None:
        try:
            proto.send_text(b"too early")
        except InvalidState as exc:
            errors.append(exc)
        proto.accept(None)

    def on_open(proto: Recorder) -> None:
        proto.close(1000)
        proto.send_text(b"too late")

    async def main() -> None:
        before = stats()["messages_dropped"]
        server, port, log, done, _ = await serve(on_request=on_request, on_open=on_open)
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        await done
        server.close()
        assert len(errors) == 1
        assert stats()["messages_dropped"] == before + 1
        assert closes(log) == [("closed", 1000, "")]
    run(main)


def test_accept_offered_subprotocols_only(run: Callable[..., Any]) -> None:
    errors: list[BaseException] = []

    def on_request(proto: Recorder, request: UpgradeRequest) -> None:
        try:
            proto.accept("ocpp2.0.1")
        except ValueError as exc:
            errors.append(exc)
            proto.reject(400)

    async def main() -> None:
        server, port, log, done, _ = await serve(on_request=on_request)
        with pytest.raises(InvalidStatus):
            async with websockets.connect(f"ws://127.0.0.1:{port}/",
                                          subprotocols=["ocpp1.6"]):   # type: ignore[list-item]
                pass
        await done
        server.close()
        assert len(errors) == 1
        assert closes(log) == [("rejected",)]
    run(main)


def test_idle_protocol_object_is_small() -> None:
    # The per-connection object is one C struct (plus the transport, measured
    # in bench/); a Python subclass adds only its dict pointer.
    assert sys.getsizeof(WebSocketProtocol()) <= 320


@pytest.mark.parametrize("context", [True, False], ids=["context-takeover", "no-context"])
def test_permessage_deflate_through_the_glue(run: Callable[..., Any], context: bool) -> None:
    settings = WSSettings(server_no_context_takeover=not context,
                          client_no_context_takeover=not context,
                          server_max_window_bits=11, client_max_window_bits=10,
                          compression_threshold=16, timer_resolution=0.05)

    async def main() -> None:
        server, port, log, done, _ = await serve(settings)
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            sent_before = stats()["bytes_out"]
            ext = ws.response.headers["Sec-WebSocket-Extensions"]
            assert "server_max_window_bits=11" in ext and "client_max_window_bits=10" in ext
            assert ("no_context_takeover" in ext) == (not context)
            for i in range(20):
                msg = f'[2,"{i}","MeterValues",{{"evseId":1,"meterValue":[]}}]'
                await ws.send(msg)
                assert await ws.recv() == msg
            if context:
                # With the window kept, repeats compress to a few bytes each.
                assert stats()["bytes_out"] - sent_before < 20 * 30
            await ws.send("tiny")
            assert await ws.recv() == "tiny"
        await done
        server.close()
        assert closes(log) == [("closed", 1000, "")]
    run(main)


def test_bytes_after_a_rejection_are_not_parsed_as_frames(run: Callable[..., Any]) -> None:
    async def main() -> None:
        server, port, log, done, _ = await serve(on_request=lambda p, r: p.reject(404))
        # A pipelining client: a second request right behind the first.
        reader, writer, head = await raw_open(port, upgrade_request() * 2)
        assert head.startswith(b"HTTP/1.1 404 ")
        # Nothing follows the error response: no close frame, no second answer.
        assert await reader.read() == b""
        await done
        writer.close()
        server.close()
        assert closes(log) == [("rejected",)]
    run(main)


def test_frames_split_across_many_reads(run: Callable[..., Any]) -> None:
    # Real TCP segments cut at arbitrary points (headers, masks, control
    # frames, UTF-8 sequences): the shared receive buffer path must keep the
    # partial state per connection.
    rnd = random.Random(6455)
    text = "zażółć gęślą jaźń ✓".encode() * 50

    async def main() -> None:
        server, port, log, done, _ = await serve()
        reader, writer, _ = await raw_open(port)
        stream = (client_frame(1, text[:7], fin=False) + client_frame(9, b"mid")
                  + client_frame(0, text[7:]) + client_frame(2, os.urandom(70_000))
                  + client_frame(8, close_payload(1000, b"done")))
        pos = 0
        while pos < len(stream):
            step = rnd.choice([1, 2, 3, 7, 50, 1000, 3000])
            writer.write(stream[pos:pos + step])
            await writer.drain()
            await asyncio.sleep(0)
            pos += step
        assert await read_frame(reader) == (10, b"mid")
        assert await read_frame(reader) == (1, text)
        op, payload = await read_frame(reader)
        assert op == 2 and len(payload) == 70_000
        assert await read_frame(reader) == (8, close_payload(1000, b"done"))
        await done
        writer.close()
        server.close()
        assert closes(log) == [("closed", 1000, "done")]
    run(main)


def test_on_open_raising_closes_1011(run: Callable[..., Any]) -> None:
    def on_open(proto: Recorder) -> None:
        raise RuntimeError("application bug")

    async def main() -> None:
        server, port, log, done, _ = await serve(on_open=on_open)
        reader, writer, head = await raw_open(port)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert await read_frame(reader) == (8, struct.pack("!H", 1011) + b"internal error")
        writer.close()
        await done
        server.close()
        assert closes(log) == [("closed", 1011, "internal error")]
    run(main)
