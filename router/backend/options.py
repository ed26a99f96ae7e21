"""Connection options shared by backend services and the backend-side commands.

``--redis-url``, ``--key-prefix`` and ``--shards`` mean what they mean for
``ocpp-router serve`` and read the same environment variables
(``OCPP_ROUTER_REDIS_URL``, ``OCPP_ROUTER_KEY_PREFIX``, ``OCPP_ROUTER_SHARDS``),
so one environment configures the router and its tools alike.
"""

from __future__ import annotations

import argparse
import os

import redis.asyncio as aioredis

from router.streams.redis_url import parse_redis_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ENV_PREFIX = "OCPP_ROUTER_"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_connection_arguments(parser: argparse.ArgumentParser, *, shards: bool = True) -> None:
    """Add ``--redis-url``, ``--key-prefix`` and (optionally) ``--shards``.

    Defaults come from the environment, then from the router's defaults.

    Args:
        parser: the sub-command's parser.
        shards: the command reads the inbound streams and needs ``--shards``.
    """
    env = os.environ
    group = parser.add_argument_group("redis")
    group.add_argument("--redis-url", metavar="URL",
                       default=env.get(ENV_PREFIX + "REDIS_URL", DEFAULT_REDIS_URL),
                       help=f"Redis URL (default: {DEFAULT_REDIS_URL}; "
                            f"env {ENV_PREFIX}REDIS_URL)")
    group.add_argument("--key-prefix", metavar="PREFIX",
                       default=env.get(ENV_PREFIX + "KEY_PREFIX", "ocpp"),
                       help=f"prefix of every Redis key (default: ocpp; env {ENV_PREFIX}KEY_PREFIX)")
    if shards:
        default = env.get(ENV_PREFIX + "SHARDS", "1")
        group.add_argument("--shards", metavar="N", type=_positive, default=default,
                           help="number of inbound streams, as the routers use "
                                f"(default: 1; env {ENV_PREFIX}SHARDS)")


def redis_from_args(args: argparse.Namespace) -> aioredis.Redis:
    """A Redis client for ``--redis-url`` (bytes responses, as the SDK expects):
    standalone, TLS, the Sentinel master or a cluster, as the URL says
    (:mod:`router.streams.redis_url`).

    Raises:
        ValueError: the URL is not a usable Redis URL (one line, no secret).
    """
    return parse_redis_url(args.redis_url).redis_py()
