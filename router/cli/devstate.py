"""Where ``ocpp-router dev`` tells the other commands its Redis is.

``ocpp-router dev`` starts Redis on a free port, so the default
``redis://127.0.0.1:6379/0`` would miss it. While it runs, it writes a small
JSON state file (its pid, Redis URL, key prefix and shard count) and removes it
on exit; :func:`default_redis_url` is the single place every command asks for
the URL to use when no ``--redis-url`` is given:

1. ``OCPP_ROUTER_REDIS_URL`` when set;
2. the running dev instance's Redis (the file exists and its pid is alive: a
   file left behind by a ``dev`` killed with SIGKILL is ignored);
3. ``redis://127.0.0.1:6379/0``.

The file is ``$XDG_RUNTIME_DIR/ocpp-router/dev.json`` (per user, on tmpfs),
else ``<tmpdir>/ocpp-router-<uid>/dev.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from router.backend.options import DEFAULT_REDIS_URL, ENV_PREFIX

ENV_REDIS_URL = ENV_PREFIX + "REDIS_URL"


def state_path() -> Path:
    """The dev state file of the current user."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "ocpp-router" / "dev.json"
    return Path(tempfile.gettempdir()) / f"ocpp-router-{os.getuid()}" / "dev.json"


def write_state(redis_url: str, key_prefix: str, shards: int) -> Path:
    """Record this process as the running dev instance (atomically, mode 0600)."""
    path = state_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "redis_url": redis_url, "key_prefix": key_prefix,
                   "shards": shards}, f)
    os.replace(tmp, path)
    return path


def remove_state() -> None:
    """Remove the state file if this process wrote it."""
    state = read_state()
    if state is not None and state.get("pid") == os.getpid():
        with contextlib.suppress(OSError):
            state_path().unlink()


def read_state() -> dict[str, Any] | None:
    """The running dev instance's state, or None (no file, unreadable, or its
    process is gone)."""
    try:
        state = json.loads(state_path().read_text())
        pid = int(state["pid"])
        os.kill(pid, 0)
    except PermissionError:   # alive, owned by someone else: not ours to use
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if isinstance(state.get("redis_url"), str) else None


def default_redis_url() -> str:
    """The Redis URL of a command run without ``--redis-url`` (module docstring)."""
    env = os.environ.get(ENV_REDIS_URL)
    if env:
        return env
    state = read_state()
    if state is not None:
        return str(state["redis_url"])
    return DEFAULT_REDIS_URL
