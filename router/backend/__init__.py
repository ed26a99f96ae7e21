"""The backend SDK: consume charger traffic from Redis Streams, answer it, call chargers.

Quick start (docs/backend.md)::

    import redis.asyncio as redis
    from router.backend import BackendApp, Message

    app = BackendApp(redis.Redis.from_url("redis://localhost:6379/0"), group="csms")

    @app.on_call("Heartbeat")
    async def heartbeat(msg: Message) -> dict[str, str]:
        return {"currentTime": "2026-11-21T12:00:00Z"}

    await app.run()

Everything here implements the contract in docs/streams.md.
"""

from router.backend.app import BackendApp, Handler
from router.backend.client import Client, Registration
from router.backend.dedup import Deduplicator
from router.backend.errors import (
    ActionNotImplemented,
    ActionNotSupported,
    BackendError,
    CallFailed,
    CallTimeout,
    ChargerError,
    DeliveryFailed,
    FormatViolation,
    GenericError,
    InternalError,
    InvalidPayload,
    NotConnected,
    OccurrenceConstraintViolation,
    OCPPError,
    PropertyConstraintViolation,
    ProtocolError,
    SecurityError,
    TypeConstraintViolation,
)
from router.backend.message import MalformedEntry, Message

__all__ = [
    "ActionNotImplemented",
    "ActionNotSupported",
    "BackendApp",
    "BackendError",
    "CallFailed",
    "CallTimeout",
    "ChargerError",
    "Client",
    "Deduplicator",
    "DeliveryFailed",
    "FormatViolation",
    "GenericError",
    "Handler",
    "InternalError",
    "InvalidPayload",
    "MalformedEntry",
    "Message",
    "NotConnected",
    "OCPPError",
    "OccurrenceConstraintViolation",
    "PropertyConstraintViolation",
    "ProtocolError",
    "Registration",
    "SecurityError",
    "TypeConstraintViolation",
]
