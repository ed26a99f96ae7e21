"""``ocpp-router auth set|rm <identity>``: charger passwords for HTTP Basic auth.

Used by security profiles 1 and 2 (OCPP 1.6 Security Whitepaper §2, OCPP
2.0.1 Part 2 A00). ``set`` stores a salted PBKDF2 hash (router/auth.py) at
``<prefix>:auth:<identity>``; the password itself is never stored or printed.
It is read from a prompt (asked twice) or, when stdin is not a terminal, from
the first line of stdin::

    printf '%s\\n' "$PASSWORD" | ocpp-router auth set CP-1
"""

from __future__ import annotations

import argparse
import getpass
import sys

from router.auth import hash_password
from router.backend.options import add_connection_arguments, redis_from_args
from router.cli.main import EXIT_USAGE, CLIError
from router.streams.keys import KeySpace

# OCPP 2.0.1 A00.FR.205 / 1.6 security whitepaper: 16 to 40 characters. The
# router does not enforce it, so chargers with older passwords keep working;
# `auth set` refuses more than a Basic auth header can sensibly carry.
MAX_PASSWORD = 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="auth_command", metavar="ACTION", required=True)
    p_set = sub.add_parser("set", help="set a charger's password (prompt or stdin)",
                           description="Set a charger's password (stored as a salted hash).")
    p_set.add_argument("identity", help="charger identity")
    add_connection_arguments(p_set, shards=False)
    p_rm = sub.add_parser("rm", help="remove a charger's password",
                          description="Remove a charger's password: it can no longer connect "
                                      "with --auth basic.")
    p_rm.add_argument("identity", help="charger identity")
    add_connection_arguments(p_rm, shards=False)


def read_password() -> str:
    """The new password, from a prompt (twice) or the first line of stdin.

    Raises:
        CLIError: empty, too long, or the two entries differ.
    """
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            raise CLIError("the passwords differ", EXIT_USAGE)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CLIError("empty password", EXIT_USAGE)
    if len(password) > MAX_PASSWORD:
        raise CLIError(f"password longer than {MAX_PASSWORD} characters", EXIT_USAGE)
    return password


async def run_async(args: argparse.Namespace) -> int:
    if not args.identity:
        raise CLIError("empty identity", EXIT_USAGE)
    password = read_password() if args.auth_command == "set" else ""
    try:
        redis = redis_from_args(args)
    except ValueError as exc:
        raise CLIError(f"--redis-url: {exc}", EXIT_USAGE) from None
    key = KeySpace(prefix=args.key_prefix).auth(args.identity)
    try:
        if args.auth_command == "set":
            await redis.set(key, hash_password(password))
            print(f"password set for {args.identity}")
        elif not await redis.delete(key):
            raise CLIError(f"no password set for {args.identity}")
        else:
            print(f"password removed for {args.identity}")
    finally:
        await redis.aclose()
    return 0
