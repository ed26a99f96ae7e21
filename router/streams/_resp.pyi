"""Type stub of the compiled module ``router.streams._resp`` (ext/router/streams/_resp.pyx)."""

from collections.abc import Sequence
from typing import Any

from typing_extensions import Buffer

Arg = bytes | str | int | Buffer

class CommandBuffer:
    def __init__(self, initial: int = 16384) -> None: ...
    def append_command(self, *args: Arg) -> None: ...
    def append_xadd(self, key: Arg, maxlen: int | None, fields: Sequence[Arg]) -> None: ...
    def append_inbound(
        self,
        key: Arg,
        maxlen: int | None,
        kind: Arg,
        cs: Arg,
        proto: Arg,
        node: Arg,
        conn: Arg,
        ts_ms: int,
        id: Arg | None = None,
        action: Arg | None = None,
        payload: Arg | None = None,
        extra: Sequence[Arg] = (),
    ) -> None: ...
    def take(self) -> bytes: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def capacity(self) -> int: ...

def xread_entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]: ...
