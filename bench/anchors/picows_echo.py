"""picows echo server (anchor of the codec benchmark): every text or binary
message is sent back unchanged.

    python -m bench.anchors.picows_echo --port 9002
"""

from __future__ import annotations

import sys

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from bench.anchors._common import announce, parser, raise_nofile

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        mt = frame.msg_type
        if mt is _TEXT or mt is _BINARY or mt is _CONTINUATION:
            # The frame's memoryview is valid only during this callback; send()
            # copies it into the write buffer before returning.
            transport.send(mt, frame.get_payload_as_memoryview(), frame.fin)
        elif mt is _CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


def _listener_factory(_request: WSUpgradeRequest) -> WSListener:
    return Echo()


async def serve(host: str, port: int, backlog: int) -> None:
    server = await ws_create_server(_listener_factory, host, port, backlog=backlog,
                                    websocket_handshake_timeout=30)
    announce("picows echo", host, port)
    # Runs until SIGTERM (default action: exit); nothing to flush or persist.
    async with server:
        await server.serve_forever()


def main() -> int:
    args = parser("picows echo server (anchor).").parse_args()
    raise_nofile()
    uvloop.run(serve(args.host, args.port, args.backlog))
    return 0


if __name__ == "__main__":
    sys.exit(main())
