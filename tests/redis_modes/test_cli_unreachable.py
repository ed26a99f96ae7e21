"""The CLI against a cluster or a Sentinel deployment it cannot reach, or a
malformed cluster/sentinel URL: one line on stderr and a non-zero exit from
every command, never a traceback."""

from __future__ import annotations

import pytest

from router.embedded_redis import free_port
from tests.redis_modes.run_cli import cli

COMMANDS = [("chargers",), ("call", "CP-1", "Reset", '{"type":"Soft"}'),
            ("tail", "--count", "1"), ("auth", "set", "CP-1")]


def _urls() -> list[str]:
    dead = free_port()      # nothing listens there
    return [f"redis+cluster://127.0.0.1:{dead}",
            f"rediss+cluster://127.0.0.1:{dead},127.0.0.1:{free_port()}",
            f"redis+sentinel://127.0.0.1:{dead}/mymaster",
            f"redis+cluster://u:hunter2-secret@127.0.0.1:{dead}/3",    # no db on a cluster
            "redis+sentinel://127.0.0.1:26379"]                      # no master name


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
async def test_unreachable_or_malformed_is_one_line(command: tuple[str, ...]) -> None:
    for url in _urls():
        rc, out, err = await cli(*command, "--redis-url", url, stdin=b"s3cret-passw0rd-16\n")
        lines = err.decode().strip().splitlines()
        assert rc != 0 and out == b"", (url, err)
        assert len(lines) == 1 and lines[0].startswith(f"ocpp-router {command[0]}: "), \
            (url, err)
        assert "hunter2" not in lines[0]
