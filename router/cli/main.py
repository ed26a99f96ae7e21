"""The ``ocpp-router`` command.

Each sub-command lives in its own module of this package with two functions,
``add_arguments(parser)`` and ``run(args) -> int`` (sync) or ``async def
run_async(args) -> int``. Errors a user can cause end as one line on stderr and
a non-zero exit status, never a traceback (:class:`CLIError`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
from collections.abc import Sequence


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if os.getpid() == 1:
    # In a container the command is PID 1, and the kernel drops signals PID 1 has
    # no handler for: a SIGTERM during start-up would be lost and the pod killed
    # only when its grace period ends. Until a command installs its own handler
    # (the router's drain), SIGTERM ends it as it would end any other process.
    # Set before the heavier imports below, to keep that window short.
    signal.signal(signal.SIGTERM, _terminated)

import re  # noqa: E402

from redis.exceptions import RedisClusterException, RedisError  # noqa: E402

from router.streams.errors import StreamsError  # noqa: E402

# name -> (module, one-line help). Modules are imported only when used, so
# `ocpp-router call` does not pay for the server's imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("router.cli.serve", "run the router service"),
    "dev": ("router.cli.dev", "embedded Redis + router + reference CSMS for development"),
    "call": ("router.cli.call", "send a CALL to a charger and print its answer"),
    "chargers": ("router.cli.chargers", "list connected chargers from the registry"),
    "tail": ("router.cli.tail", "follow the inbound streams live"),
    "auth": ("router.cli.auth", "manage charger passwords (security profiles 1 and 2)"),
    "reference-csms": ("router.cli.reference_csms", "run the reference CSMS backend"),
    "simulate": ("router.cli.simulate", "simulated chargers against a deployment (load test)"),
}

# Exit statuses shared by all sub-commands.
EXIT_OK = 0
EXIT_ERROR = 1          # generic failure (Redis unreachable, bad config, …)
EXIT_USAGE = 2          # argparse's own status for bad arguments


class CLIError(Exception):
    """An error to show the user as one line; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocpp-router",
        description="OCPP-J front tier: charger WebSockets in, Redis Streams out.",
    )
    from router import __version__

    parser.add_argument("--version", action="version", version=f"ocpp-router {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    argv = sys.argv[1:]
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Import only the module of the command being run (and all of them for --help).
        if name in argv or not argv or "-h" in argv[:1] or "--help" in argv[:1]:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is not None:
        sys.argv[1:] = list(argv)
    parser = build_parser()
    args = parser.parse_args()
    module = getattr(args, "_module", None)
    if module is None:
        print(f"ocpp-router: {args.command}: not available in this build", file=sys.stderr)
        return EXIT_ERROR
    try:
        if hasattr(module, "run_async"):
            try:
                import uvloop

                return int(uvloop.run(module.run_async(args)))
            except ImportError:  # pragma: no cover - uvloop is a dependency
                return int(asyncio.run(module.run_async(args)))
        return int(module.run(args))
    except CLIError as exc:
        print(f"ocpp-router {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except (RedisError, RedisClusterException, StreamsError) as exc:
        # Unreachable or refusing Redis is a user-facing condition, not a bug
        # (RedisClusterException: no seed of a redis+cluster:// URL answers;
        # StreamsError: the CLI's own compiled connections, as `tail` uses).
        print(f"ocpp-router {args.command}: Redis: {redis_error_text(exc)}", file=sys.stderr)
        return EXIT_ERROR


def redis_error_text(exc: BaseException) -> str:
    """One line for a Redis client error: whitespace collapsed and redis-py's
    object reprs (``<redis.asyncio.client.Redis(<…ConnectionPool…>)>``, as
    Sentinel's "No master found" carries) left out."""
    text = " ".join(str(exc).split())
    text = re.sub(r"\s*<redis\..*\)>\s*", " ", text)
    text = re.sub(r"\s+:\s+-\s+", ": ", text).strip()
    return text or type(exc).__name__


if __name__ == "__main__":
    # Under `python -m router.cli.main` this file is `__main__`; run the
    # `router.cli.main` module's main() so that the CLIError the sub-commands
    # import is the class caught above, not a twin.
    from router.cli.main import main as _main

    sys.exit(_main())
