"""``websockets`` echo server (memory anchor of the codec benchmark).

    python -m bench.anchors.websockets_echo --port 9003
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import websockets

from bench.anchors._common import announce, parser, raise_nofile


async def echo(websocket: Any) -> None:
    try:
        async for message in websocket:
            await websocket.send(message)
    except websockets.exceptions.ConnectionClosed:
        pass


async def serve(host: str, port: int, backlog: int) -> None:
    # compression=None: the generator does not negotiate permessage-deflate,
    # and the other servers do not offer it.
    server = await websockets.serve(echo, host, port, backlog=backlog, compression=None,
                                    open_timeout=30)
    announce("websockets echo", host, port)
    await server.wait_closed()


def main() -> int:
    args = parser("websockets echo server (anchor).").parse_args()
    raise_nofile()
    asyncio.run(serve(args.host, args.port, args.backlog))
    return 0


if __name__ == "__main__":
    sys.exit(main())
