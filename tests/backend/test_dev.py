"""Newcomer paper cuts of ``ocpp-router dev`` and ``serve``, with real processes.

- every CLI command finds the dev Redis without flags (the state file);
- SIGKILL of ``dev`` leaves neither its Redis nor its router running;
- a port that cannot be bound is named (admin port vs charger port).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import orjson
import pytest

from router.cli import devstate
from router.embedded_redis import free_port
from tests.backend.test_cli import ENV, cli, one_line_error
from tests.conftest import timeout


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc; Linux)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _start_dev(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli.main", "dev", "--port", str(free_port()),
        "--admin-port", str(free_port()), "--status-interval", "0.5", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    banner: list[str] = []
    async with asyncio.timeout(timeout(60)):
        while not any("Ctrl-C" in line for line in banner):
            line = (await proc.stdout.readline()).decode()
            assert line, f"dev exited: {banner} {(await proc.communicate())[1]!r}"
            banner.append(line)
    return proc, banner


async def test_cli_finds_the_dev_redis_and_sigkill_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**ENV, "XDG_RUNTIME_DIR": str(tmp_path)}
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("OCPP_ROUTER_REDIS_URL", raising=False)
    proc, banner = await _start_dev(env)
    try:
        text = "".join(banner)
        # The banner gives the exact next commands.
        assert "ocpp-router chargers" in text and "ocpp-router call CP000000 Reset" in text
        state = devstate.read_state()
        assert state is not None and state["pid"] == proc.pid
        assert f"Redis {state['redis_url']}" in text
        assert devstate.default_redis_url() == state["redis_url"]
        # No flags: the command finds the dev Redis (not 127.0.0.1:6379).
        rc, out, err = await cli("chargers", "--json", env=env)
        assert (rc, orjson.loads(out or "null")) == (0, []), err
        rc, _out, err = await cli("call", "NOPE-1", "Reset", '{"type": "Soft"}', env=env)
        assert rc == 5, err          # not connected: it did reach the dev Redis

        children = _children(proc.pid)
        assert len(children) >= 2, children    # redis-server and the router
        proc.kill()
        await proc.wait()
        deadline = time.monotonic() + timeout(60)
        while {p for p in children if _alive(p)} and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not {p for p in children if _alive(p)}
        # The file a killed dev leaves is ignored: its pid is gone.
        assert devstate.read_state() is None
        assert devstate.default_redis_url() == devstate.DEFAULT_REDIS_URL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_dev_removes_its_state_file_on_exit(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**ENV, "XDG_RUNTIME_DIR": str(tmp_path)}
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    proc, _banner = await _start_dev(env)
    assert devstate.state_path().exists()
    proc.send_signal(signal.SIGTERM)
    _out, err = await asyncio.wait_for(proc.communicate(), timeout(60))
    assert proc.returncode == 0, err
    assert not devstate.state_path().exists()


def test_the_environment_wins_over_the_dev_state(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("OCPP_ROUTER_REDIS_URL", "redis://example:1/0")
    devstate.write_state("redis://127.0.0.1:5/0", "ocpp", 1)
    assert devstate.default_redis_url() == "redis://example:1/0"
    monkeypatch.delenv("OCPP_ROUTER_REDIS_URL")
    assert devstate.default_redis_url() == "redis://127.0.0.1:5/0"
    devstate.remove_state()
    assert devstate.default_redis_url() == devstate.DEFAULT_REDIS_URL


@pytest.mark.parametrize("busy_one", ["admin port", "charger port"])
async def test_bind_error_names_the_port_that_failed(busy_one: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        free = free_port()
        port, admin = (free, taken) if busy_one == "admin port" else (taken, free)
        # No Redis is needed to fail at bind time: the listen comes first.
        rc, out, err = await cli("serve", "--host", "127.0.0.1", "--admin-host", "127.0.0.1",
                                 "--port", str(port), "--admin-port", str(admin),
                                 "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert (rc, out) == (1, "")
    one_line_error(err, f"the {busy_one} 127.0.0.1:{taken}")
    other = re.sub(r"\D", "", str(free))
    assert other not in err
