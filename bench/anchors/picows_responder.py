"""The bare picows responder: reads the OCPP-J envelope and answers.

The practical ceiling of a Python WebSocket server for OCPP: picows (Cython
frame codec) on uvloop, ``orjson`` to read the envelope, a constant
CALLRESULT per action. No schema validation, no broker, no state.

    python -m bench.anchors.picows_responder --port 9001
"""

from __future__ import annotations

import sys

import orjson
import uvloop
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from bench.anchors._common import announce, parser, raise_nofile
from router.sim import messages

_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE
_EMPTY = b"{}"


class Responder(WSListener):
    """One connection: answer each CALL with the action's constant payload."""

    def __init__(self, responses: dict[str, bytes]) -> None:
        self.responses = responses

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        mt = frame.msg_type
        if mt is not _TEXT:
            if mt is _CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        try:
            msg = orjson.loads(frame.get_payload_as_bytes())
            if msg[0] != 2:
                return  # a CALLRESULT/CALLERROR to nothing we sent: ignore
            mid = msg[1].encode()
            payload = self.responses.get(msg[2], _EMPTY)
        except (orjson.JSONDecodeError, IndexError, TypeError, AttributeError):
            transport.send_close(WSCloseCode.UNSUPPORTED_DATA)
            transport.disconnect()
            return
        transport.send(_TEXT, b'[3,"' + mid + b'",' + payload + b"]")


def _listener_factory(request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    proto = next((p for p in offered if p in messages.PROTOCOLS), None)
    headers = {"Sec-WebSocket-Protocol": proto} if proto else {}
    return WSUpgradeResponseWithListener(
        WSUpgradeResponse.create_101_response(extra_headers=headers),
        Responder(messages.CSMS_RESPONSES[proto or "ocpp1.6"]))


async def serve(host: str, port: int, backlog: int) -> None:
    server = await ws_create_server(_listener_factory, host, port, backlog=backlog,
                                    websocket_handshake_timeout=30)
    announce("picows responder", host, port)
    # Runs until SIGTERM (default action: exit); nothing to flush or persist.
    async with server:
        await server.serve_forever()


def main() -> int:
    args = parser("Bare picows OCPP-J responder (anchor).").parse_args()
    raise_nofile()
    uvloop.run(serve(args.host, args.port, args.backlog))
    return 0


if __name__ == "__main__":
    sys.exit(main())
