"""The asyncio WebSocket connection the router serves chargers with.

Re-exports the compiled ``router.server._wsconn``. Subclass
:class:`WebSocketProtocol`, override the hooks (``on_request``, ``on_open``,
``on_text``, ``on_binary``, ``on_closed``, ``on_rejected``) and pass the class
to ``loop.create_server(lambda: MyProtocol(settings), ...)``.

Timers: there is no timer per connection. The first connection on an event
loop starts that loop's sweep (every ``WSSettings.timer_resolution`` seconds;
:func:`start_timers` picks another resolution up front), and the sweep stops
by itself when the loop has no connection left. Nothing to start or stop.

Counters for /metrics: :func:`stats`.
"""

from __future__ import annotations

import asyncio

from router.server._wsconn import WebSocketProtocol as _WebSocketProtocol
from router.server._wsconn import active_connections, start_timers, stats
from router.ws.types import ConnectionState


class WebSocketProtocol(_WebSocketProtocol, asyncio.BufferedProtocol):
    """A server-side WebSocket connection (see ``router.server._wsconn``).

    The compiled class does the work; this subclass only makes it an
    ``asyncio.BufferedProtocol`` for ``isinstance`` checks (uvloop and asyncio
    find ``get_buffer`` either way). ``__slots__ = ()`` keeps it dict-free.
    """

    __slots__ = ()


__all__ = ["ConnectionState", "WebSocketProtocol", "active_connections", "start_timers", "stats"]
