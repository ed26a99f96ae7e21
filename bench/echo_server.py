"""WebSocket echo server on uvloop, built from exactly the codec and asyncio
glue the router uses (``router.server.wsconn.WebSocketProtocol``).

It serves the Autobahn compliance runs (``make compliance``), the interop
tests and the codec benchmarks (compared against a picows echo server): the
per-message path is the compiled glue plus one Python hook call.

    python bench/echo_server.py --host 127.0.0.1 --port 9001

Prints ``listening on HOST:PORT`` on stdout when ready; exits on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script from a checkout: make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop

from router.server.wsconn import WebSocketProtocol
from router.ws import UpgradeRequest, WSSettings


class EchoProtocol(WebSocketProtocol):
    """Accepts every upgrade (first offered subprotocol) and echoes messages."""

    __slots__ = ()

    def on_request(self, request: UpgradeRequest) -> None:
        self.accept(request.subprotocols[0] if request.subprotocols else None)

    def on_text(self, data: bytes) -> None:
        self.send_text(data)

    def on_binary(self, data: bytes) -> None:
        self.send_binary(data)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--max-message-size", type=int, default=64 * 1024 * 1024,
                        help="bytes; Autobahn group 9 sends 16 MiB messages")
    parser.add_argument("--no-deflate", action="store_true",
                        help="do not negotiate permessage-deflate")
    parser.add_argument("--context-takeover", action="store_true",
                        help="do not ask for *_no_context_takeover")
    parser.add_argument("--window-bits", type=int, default=12,
                        help="server/client max window bits limit")
    parser.add_argument("--ping-interval", type=float, default=0.0)
    parser.add_argument("--compression-threshold", type=int, default=0,
                        help="send shorter messages uncompressed (the router uses 128); "
                        "0 compresses every message when permessage-deflate is on, "
                        "which the Autobahn 12/13 cases expect")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    settings = WSSettings(
        max_message_size=args.max_message_size,
        permessage_deflate=not args.no_deflate,
        server_no_context_takeover=not args.context_takeover,
        client_no_context_takeover=not args.context_takeover,
        server_max_window_bits=max(9, args.window_bits),
        client_max_window_bits=args.window_bits,
        ping_interval=args.ping_interval,
        compression_threshold=args.compression_threshold,
        # Autobahn sends multi-MiB messages to a peer that echoes them.
        write_high_water=64 * 1024 * 1024,
        write_low_water=16 * 1024 * 1024,
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: EchoProtocol(settings), args.host, args.port,
                                      backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    uvloop.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
