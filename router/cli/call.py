"""``ocpp-router call <identity> <Action> '<json>'``: one CALL to a charger.

Prints the charger's CALLRESULT payload as JSON on stdout. Every failure is one
line on stderr and an exit status of its own, so scripts can tell them apart:

====  ==============================================================
0     the charger answered with a CALLRESULT (printed)
1     Redis unreachable or another general error
2     bad usage (arguments, the payload is not a JSON object)
3     the payload or action is invalid for the charger's OCPP version
4     the charger answered with a CALLERROR (code and description shown)
5     the charger is not connected
6     no answer within ``--timeout``
7     the router could not deliver the CALL (queue full, connection closed,
      ``Expired``: not connected within ``--wait`` …)
====  ==============================================================
"""

from __future__ import annotations

import argparse
import sys

import orjson

from router.backend.client import MAX_WAIT, Client
from router.backend.errors import (
    CallFailed,
    CallTimeout,
    ChargerError,
    InvalidPayload,
    NotConnected,
)
from router.backend.options import add_connection_arguments, redis_from_args
from router.cli.main import EXIT_USAGE, CLIError

EXIT_INVALID = 3
EXIT_CALLERROR = 4
EXIT_NOT_CONNECTED = 5
EXIT_TIMEOUT = 6
EXIT_UNDELIVERED = 7


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Send a CALL to a charger, wherever it is connected, and print its answer."
    parser.epilog = ("exit status: 0 answered, 1 error (e.g. Redis), 2 usage, 3 invalid payload, "
                     "4 CALLERROR from the charger, 5 not connected, 6 timeout, 7 not delivered")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("identity", help="charger identity")
    parser.add_argument("action", help="OCPP action, e.g. Reset or RequestStartTransaction")
    parser.add_argument("payload", nargs="?", default="{}",
                        help="JSON object (default: {}); '-' reads it from stdin")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="seconds the charger has to answer (default: 30)")
    parser.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                        help="queue the CALL for up to SECONDS until the charger is connected "
                             "(delivered by whichever node holds it, exactly once); without it "
                             "a charger that is not connected fails at once")
    parser.add_argument("--no-validate", action="store_true",
                        help="send without checking the payload first (the router still checks)")
    add_connection_arguments(parser, shards=False)


def _payload(text: str) -> bytes:
    raw = sys.stdin.buffer.read() if text == "-" else text.encode()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CLIError(f"the payload is not JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(value, dict):
        raise CLIError("the payload must be a JSON object", EXIT_USAGE)
    return raw


async def run_async(args: argparse.Namespace) -> int:
    payload = _payload(args.payload)
    if args.timeout <= 0:
        raise CLIError("--timeout must be positive", EXIT_USAGE)
    if args.wait is not None and not 0 < args.wait <= MAX_WAIT:
        raise CLIError(f"--wait must be seconds between 0 and {MAX_WAIT:g}", EXIT_USAGE)
    try:
        redis = redis_from_args(args)
    except ValueError as exc:
        raise CLIError(f"--redis-url: {exc}", EXIT_USAGE) from None
    try:
        async with Client(redis, prefix=args.key_prefix, validate=not args.no_validate) as client:
            answer = await client.call(args.identity, args.action, payload, timeout=args.timeout,
                                       wait=args.wait)
    except InvalidPayload as exc:
        raise CLIError(f"invalid {args.action}: {exc.description or exc.code}",
                       EXIT_INVALID) from None
    except ChargerError as exc:
        text = f"{exc.code}: {exc.description}" if exc.description else exc.code
        raise CLIError(f"{args.identity} answered with CALLERROR {text}", EXIT_CALLERROR) from None
    except NotConnected:
        raise CLIError(f"{args.identity} is not connected", EXIT_NOT_CONNECTED) from None
    except CallTimeout:
        raise CLIError(f"{args.identity} did not answer within {args.timeout:g}s",
                       EXIT_TIMEOUT) from None
    except CallFailed as exc:
        raise CLIError(f"not delivered to {args.identity}: {exc}", EXIT_UNDELIVERED) from None
    finally:
        await redis.aclose()
    sys.stdout.buffer.write(orjson.dumps(answer) + b"\n")
    sys.stdout.flush()
    return 0
