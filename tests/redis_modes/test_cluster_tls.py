"""``rediss+cluster://``: a TLS-only Redis Cluster (three masters; client
certificates required; the bus and replication over TLS too) whose only users
are the ACL users docs/deployment.md prescribes, with the rules its "Redis
Cluster" section adds. A real router, the reference CSMS on the SDK and the
CLI, each logged in as its documented user."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_modes.cluster import RedisCluster
from tests.redis_modes.tls import (
    BACKEND_PASSWORD,
    ROUTER_PASSWORD,
    TestCA,
    documented_acl,
    documented_users_end_to_end,
)

SHARDS = 8


@pytest.fixture
def tls_cluster(key_prefix: str) -> Iterator[RedisCluster]:
    with tempfile.TemporaryDirectory(prefix="ocpp-cluster-ca-") as d:
        ca = TestCA(Path(d))
        acl = [documented_acl(user, key_prefix, cluster=True)
               for user in ("ocpp-router", "ocpp-backend")]
        with RedisCluster(masters=3, replicas=0, tls=ca, acl=acl) as cluster:
            yield cluster


async def test_router_sdk_and_cli_on_a_tls_cluster_with_the_documented_acls(
        tls_cluster: RedisCluster, key_prefix: str) -> None:
    await documented_users_end_to_end(
        tls_cluster.url_for("ocpp-router", ROUTER_PASSWORD),
        tls_cluster.url_for("ocpp-backend", BACKEND_PASSWORD, seeds=2), key_prefix,
        shards=SHARDS)
