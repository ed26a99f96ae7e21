from collections import deque
from collections.abc import Callable
from typing import Any

from router.ocppj import Dialect, Message
from router.server._wsconn import WebSocketProtocol
from router.streams._resp import StreamEntries

class ChargerCore(WebSocketProtocol):
    node: Any
    identity: str | None
    proto: str
    dialect: Dialect
    conn_id: str
    conn_b: bytes
    addr: str
    since_ms: int
    shard: int
    opened: bool
    call_id: str | None
    call_action: str
    call_started: float
    call_deadline: float
    inflight: Any
    queue: deque[Any] | None
    profile: tuple[Any, ...] | None
    boot_info: tuple[str | None, str | None] | None
    watch_boot: bool
    def bind(self, node: Any) -> None: ...
    def relaxed_call(self, msg: Message, extra: tuple[bytes, ...]) -> None: ...
    def on_text(self, data: bytes) -> None: ...
    def backend_result(self, msg_id: str, payload: bytes, ref: bytes) -> None: ...

def dispatch_out_entries(
    entries: StreamEntries,
    by_identity: dict[str, Any],
    slow: Callable[[bytes, dict[bytes, bytes]], None],
    failed: Callable[[bytes, dict[bytes, bytes], BaseException], None],
) -> None: ...
