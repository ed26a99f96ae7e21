"""A TCP proxy between the code under test and a real redis-server, for fault
injection (in the manner of asyncpg's ``_testbase/fuzzer.py``): forward, forward
the server's bytes one at a time, or swallow everything (a frozen network);
``delay`` holds every chunk the client sends for that many seconds (a slow
path to Redis for one client among several)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["pass", "bytewise", "blackhole"]


class TCPProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.mode: Mode = "pass"
        self.delay = 0.0        # seconds each client -> server chunk is held
        self.port = 0
        self.accepted = 0       # client connections accepted
        self.open_clients = 0   # client connections not yet closed by the client
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> TCPProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        self.accepted += 1
        self.open_clients += 1
        for src, dst, downstream in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pump(src, dst, downstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    downstream: bool) -> None:
        try:
            while data := await src.read(65536):
                if self.mode == "blackhole":
                    continue
                if self.mode == "bytewise" and downstream:
                    for i in range(len(data)):
                        dst.write(data[i:i + 1])
                        await dst.drain()
                        await asyncio.sleep(0)
                else:
                    if self.delay and not downstream:
                        await asyncio.sleep(self.delay)
                    dst.write(data)
                    await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not downstream:
                self.open_clients -= 1  # the client side ended (EOF or reset)
            dst.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for w in list(self._writers):
            w.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for w in list(self._writers):
            with contextlib.suppress(ConnectionError, OSError):
                await w.wait_closed()
