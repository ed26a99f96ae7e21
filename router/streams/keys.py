"""Key names of the Redis Streams contract v1 (docs/streams.md, "Keys")."""

from __future__ import annotations

import zlib


class KeySpace:
    """All keys of one deployment: a prefix and the number of inbound shards.

    Args:
        prefix: key prefix (``--key-prefix``), default ``ocpp``.
        shards: number of inbound streams ``S`` (``--shards``); all routers and
            backends of one deployment must use the same value.

    Raises:
        ValueError: an empty prefix or fewer than one shard.
    """

    __slots__ = ("_cs", "_inbound", "_pre", "prefix", "shards")

    def __init__(self, prefix: str = "ocpp", shards: int = 1) -> None:
        if not prefix:
            raise ValueError("the key prefix must not be empty")
        if shards < 1:
            raise ValueError("shards must be at least 1")
        self.prefix = prefix
        self.shards = shards
        self._pre = prefix.encode()
        # The braces are literal: a Redis Cluster hash tag, so each shard's
        # stream maps to one slot (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags).
        self._inbound = [b"%s:in:{%d}" % (self._pre, n) for n in range(shards)]
        self._cs = self._pre + b":cs:"

    def shard_of(self, identity: str) -> int:
        """The inbound shard of a charger: ``crc32(identity as UTF-8) % S``.

        zlib's CRC-32, as the contract says, so backends in any language agree.
        """
        return zlib.crc32(identity.encode()) % self.shards

    def inbound(self, shard: int) -> bytes:
        """``<prefix>:in:{<shard>}``.

        Raises:
            IndexError: shard outside ``0 … S-1``.
        """
        if shard < 0:
            raise IndexError(f"shard {shard} out of range")
        return self._inbound[shard]

    def inbound_for(self, identity: str) -> bytes:
        """The inbound stream of a charger."""
        return self._inbound[zlib.crc32(identity.encode()) % self.shards]

    def all_inbound(self) -> list[bytes]:
        """Every inbound stream, shard 0 first."""
        return list(self._inbound)

    def out(self, node: str) -> bytes:
        """``<prefix>:out:<node>``: the out stream of a router node."""
        return b"%s:out:%s" % (self._pre, node.encode())

    def registry(self, identity: str) -> bytes:
        """``<prefix>:cs:<identity>``: the registry hash of a charger."""
        return self._cs + identity.encode()

    def auth(self, identity: str) -> bytes:
        """``<prefix>:auth:<identity>``: a charger's salted password hash."""
        return b"%s:auth:%s" % (self._pre, identity.encode())

    def node(self, node: str) -> bytes:
        """``<prefix>:node:<node>``: the liveness key of a router node."""
        return b"%s:node:%s" % (self._pre, node.encode())

    def __repr__(self) -> str:
        return f"KeySpace(prefix={self.prefix!r}, shards={self.shards})"
