"""Run an ``ocpp-router`` CLI command as a real subprocess (no OCPP_ROUTER_*
variables from the caller's environment)."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.conftest import timeout

ENV = {k: v for k, v in os.environ.items() if not k.startswith("OCPP_ROUTER_")}


async def cli(*args: str, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    """Exit status, stdout and stderr of ``ocpp-router <args>``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli.main", *args, env=ENV, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout(60))
    assert proc.returncode is not None
    return proc.returncode, out, err
