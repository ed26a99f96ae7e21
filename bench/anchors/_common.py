"""Shared command-line plumbing of the anchor servers."""

from __future__ import annotations

import argparse
import resource
import sys


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    # The listen backlog: a reconnect storm sends thousands of SYNs at once; the
    # asyncio default (100) would make the kernel drop them (listen(2)).
    p.add_argument("--backlog", type=int, default=4096)
    return p


def raise_nofile() -> None:
    """Raise the soft fd limit to the hard one (getrlimit(2))."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def announce(name: str, host: str, port: int) -> None:
    # The runner waits for the port; this line is for humans.
    print(f"{name} listening on {host}:{port}", file=sys.stderr, flush=True)

