"""The Redis side of the router: the Redis Streams contract v1 in code.

``KeySpace`` names the keys, ``Publisher`` writes inbound entries (one write
per event-loop iteration, RESP encoded by the compiled ``_resp`` module),
``OutboundReader`` follows a node's out stream, ``Registry`` keeps the
``<prefix>:cs:<identity>`` hashes. See docs/streams.md for the contract.
"""

from router.streams._resp import CommandBuffer
from router.streams.connection import RedisConnection, open_connection
from router.streams.errors import (
    ConnectionLostError,
    NotConnectedError,
    PublishOverloadError,
    RedisConnectionError,
    RedisProtocolError,
    RedisReplyError,
    RedisTimeoutError,
    StreamsError,
)
from router.streams.keys import KeySpace
from router.streams.publisher import Publisher, PublisherStats
from router.streams.reader import OutboundReader, ReaderStats
from router.streams.redis_url import RedisURL, RedisURLError, TLSSettings, parse_redis_url
from router.streams.registry import Holder, Registry

__all__ = [
    "CommandBuffer",
    "ConnectionLostError",
    "Holder",
    "KeySpace",
    "NotConnectedError",
    "OutboundReader",
    "PublishOverloadError",
    "Publisher",
    "PublisherStats",
    "ReaderStats",
    "RedisConnection",
    "RedisConnectionError",
    "RedisProtocolError",
    "RedisReplyError",
    "RedisTimeoutError",
    "RedisURL",
    "RedisURLError",
    "Registry",
    "StreamsError",
    "TLSSettings",
    "open_connection",
    "parse_redis_url",
]
