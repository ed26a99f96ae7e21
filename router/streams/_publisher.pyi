"""Type stub of the compiled module ``router.streams._publisher``
(ext/router/streams/_publisher.pyx)."""

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from router.streams._resp import Arg
from router.streams.errors import StreamsError

ErrorCallback = Callable[[StreamsError], None]
DoneCallback = Callable[[bytes], None]

class PublisherCore:
    keys: Any
    maxlen: int | None
    timeout: float
    max_pending: int
    max_pending_bytes: int
    on_pause: Callable[[], None] | None
    on_resume: Callable[[], None] | None
    on_batch: Callable[[int, float], None] | None
    stats: Any
    wait_replicas: int
    wait_ms: int
    paused: bool
    pending: int
    _loop: asyncio.AbstractEventLoop | None
    _conn: Any
    _closed: bool
    _flushed_waiters: list[asyncio.Future[None]]
    _inbound: list[bytes]
    _held: Any
    def publish_inbound(self, cs: Arg, kind: Arg, proto: Arg, node: Arg, conn: Arg,
                        ts_ms: int, id: Arg | None = None, action: Arg | None = None,
                        payload: Arg | None = None, extra: Sequence[Arg] = (), *,
                        shard: int | None = None,
                        on_error: ErrorCallback | None = None,
                        on_done: DoneCallback | None = None) -> None: ...
    def xadd(self, key: bytes, fields: Sequence[Arg], maxlen: int | None,
             on_error: ErrorCallback | None = None,
             on_done: DoneCallback | None = None) -> None: ...
    def _flush(self) -> None: ...
    def _resend_held(self) -> None: ...
    def _expire_held(self) -> None: ...
    def _drop_held(self, error: StreamsError) -> None: ...
