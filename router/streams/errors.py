"""Errors of the Redis layer (``router.streams``).

One base, :class:`StreamsError`; every failure the publisher, reader, registry
or connection reports is one of its subclasses, so the router maps the whole
layer to one answer in one place (a charger CALL whose publish failed gets
CALLERROR ``InternalError``, OCPP-J 1.6 §4.2.3 / 2.0.1 §4.3, and keeps the
message to retry it). ``code`` is a short stable label for metrics and logs;
none of these messages is meant for a peer.
"""

from __future__ import annotations


class StreamsError(Exception):
    """Base of every error of the Redis layer."""

    code = "redis_error"


class RedisConnectionError(StreamsError, ConnectionError):
    """Could not connect to Redis (refused, unreachable, AUTH/SELECT rejected)."""

    code = "connect_failed"


class NotConnectedError(RedisConnectionError):
    """No Redis connection at the moment (down, reconnecting, or closed)."""

    code = "not_connected"


class ConnectionLostError(RedisConnectionError):
    """The connection broke before Redis answered; the command may or may not have run."""

    code = "connection_lost"


class RedisProtocolError(ConnectionLostError):
    """Redis sent bytes that are not RESP; the connection was dropped."""

    code = "protocol_error"


class RedisTimeoutError(StreamsError, TimeoutError):
    """Redis did not answer in time; the connection was dropped (FIFO replies
    cannot be matched once one is skipped), the command may or may not have run."""

    code = "timeout"


class RedisReplyError(StreamsError):
    """Redis answered this command with an error reply (``-WRONGTYPE ...``)."""

    code = "reply_error"


class ReplicationTimeoutError(StreamsError):
    """``--durability replicated``: no replica confirmed the batch in time
    (``WAIT``); the entries are on the master only and do not count as published."""

    code = "not_replicated"


class PublishOverloadError(StreamsError):
    """The publish buffer is at its hard limit; the entry was not queued."""

    code = "overloaded"
