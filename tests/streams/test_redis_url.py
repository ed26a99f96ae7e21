"""parse_redis_url: every form --redis-url accepts, and one clear line for the rest."""

from __future__ import annotations

import ssl
import subprocess
import sys

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from router.streams.redis_url import RedisURL, RedisURLError, TLSSettings, parse_redis_url


def test_standalone() -> None:
    u = parse_redis_url("redis://app:p%40ss%3Aw@redis.example:6380/4")
    assert u == RedisURL(mode="standalone", addresses=(("redis.example", 6380),), db=4,
                         username="app", password="p@ss:w")
    assert parse_redis_url("redis://h").addresses == (("h", 6379),)
    assert parse_redis_url("redis://").addresses == (("localhost", 6379),)
    assert parse_redis_url("redis://h?db=3").db == 3
    # A password alone, Redis' requirepass convention, both spellings.
    assert parse_redis_url("redis://:secret@h").password == "secret"
    assert parse_redis_url("redis://secret@h").password == "secret"
    assert parse_redis_url("redis://secret@h").username is None
    assert parse_redis_url("redis://[::1]:7000/0").addresses == (("::1", 7000),)
    assert parse_redis_url("REDIS://h").mode == "standalone"


def test_unix() -> None:
    u = parse_redis_url("unix://:pw@/run/redis/redis.sock?db=2")
    assert (u.unix_path, u.db, u.password, u.addresses) == ("/run/redis/redis.sock", 2, "pw", ())


def test_tls_parameters() -> None:
    u = parse_redis_url("rediss://app:pw@10.0.0.5:6380/1?ssl_ca_certs=/etc/ca.pem"
                        "&ssl_certfile=/etc/c.pem&ssl_keyfile=/etc/k.pem"
                        "&ssl_server_name=redis.internal")
    assert u.tls == TLSSettings(ca_file="/etc/ca.pem", cert_file="/etc/c.pem",
                                key_file="/etc/k.pem", server_name="redis.internal")
    assert u.server_hostname("10.0.0.5") == "redis.internal"
    assert parse_redis_url("rediss://h").server_hostname("h") == "h"
    assert parse_redis_url("redis://h").server_hostname("h") is None
    none = parse_redis_url("rediss://h?ssl_cert_reqs=none").tls
    assert none is not None and none.verify == "none"
    ctx = none.context()
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    strict = parse_redis_url("rediss://h").ssl_context()
    assert strict is not None and strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    loose = parse_redis_url("rediss://h?ssl_check_hostname=false").ssl_context()
    assert loose is not None and not loose.check_hostname
    assert loose.verify_mode == ssl.CERT_REQUIRED


def test_sentinel() -> None:
    u = parse_redis_url("redis+sentinel://app:pw@s1:26379,s2,[fd00::3]:26380/mymaster/2"
                        "?sentinel_password=spw")
    assert u.mode == "sentinel"
    assert u.addresses == (("s1", 26379), ("s2", 26379), ("fd00::3", 26380))
    assert (u.master_name, u.db, u.username, u.password) == ("mymaster", 2, "app", "pw")
    assert (u.sentinel_username, u.sentinel_password) == (None, "spw")
    assert parse_redis_url("redis+sentinel://s1/m").db == 0
    assert parse_redis_url("rediss+sentinel://s1/m").tls == TLSSettings()
    # The master found through it: the data servers' credentials and db.
    master = u.server("10.1.1.1", 6379)
    assert (master.mode, master.addresses, master.username, master.db) == (
        "standalone", (("10.1.1.1", 6379),), "app", 2)
    # A sentinel: its own credentials, no db.
    sentinel = u.sentinel("s1", 26379)
    assert (sentinel.username, sentinel.password, sentinel.db) == (None, "spw", 0)


def test_cluster() -> None:
    u = parse_redis_url("rediss+cluster://app:pw@n1:7000,n2:7001?ssl_ca_certs=/ca.pem")
    assert u.mode == "cluster"
    assert u.addresses == (("n1", 7000), ("n2", 7001))
    assert u.tls is not None and u.tls.ca_file == "/ca.pem"
    assert parse_redis_url("redis+cluster://n1").addresses == (("n1", 6379),)
    node = u.server("n3", 7005)
    assert (node.mode, node.addresses, node.password) == ("standalone", (("n3", 7005),), "pw")


@pytest.mark.parametrize(("url", "message"), [
    ("localhost:6379", "not a URL"),
    ("http://h", "unsupported scheme 'http://'"),
    ("redis://h/x", "bad database number 'x'"),
    ("redis://h/-1", "bad database number"),
    ("redis://h/1?db=2", "given twice"),
    ("redis://h:0", "out of range"),
    ("redis://h:99999", "out of range"),
    ("redis://h:port", "bad port 'port'"),
    ("redis://a,b", "several hosts need"),
    ("redis://h?ssl_ca_certs=/ca.pem", "need rediss://"),
    ("rediss://h?ssl_ca_cert=/ca.pem", "unknown URL parameter 'ssl_ca_cert'"),
    ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs must be"),
    ("rediss://h?ssl_check_hostname=perhaps", "ssl_check_hostname must be"),
    ("rediss://h?ssl_keyfile=/k.pem", "ssl_keyfile needs ssl_certfile"),
    ("rediss://h?ssl_ca_certs=", "ssl_ca_certs is empty"),
    ("redis://h?db=1&db=2", "given twice"),
    ("unix://", "no socket path"),
    ("unix://h/x.sock", "no host"),
    ("redis+sentinel:///m", "no sentinel address"),
    ("redis+sentinel://s1", "no master name"),
    ("redis+sentinel://s1/", "no master name"),
    ("redis+sentinel://s1/m/1/2", "too many path segments"),
    ("redis+sentinel://s1,,s2/m", "empty address"),
    ("redis+sentinel://s1/m/x", "bad database number"),
    ("redis+cluster://", "no cluster node"),
    ("redis+cluster://n1/1", "only database 0"),
    ("redis+cluster://n1?db=1", "only database 0"),
    ("redis://h?sentinel_password=x", "for redis+sentinel://"),
    ("redis://h#frag", "no #fragment"),
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(RedisURLError, match=None) as info:
        parse_redis_url(url)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_secrets_stay_out_of_messages() -> None:
    u = parse_redis_url("redis+sentinel://app:hunter2@s1/m?sentinel_password=hunter3")
    assert "hunter" not in str(u) and "hunter" not in repr(u)
    assert str(u) == "redis+sentinel://app:***@s1:26379/m/0"
    with pytest.raises(RedisURLError) as info:
        parse_redis_url("localhost:hunter2@x")
    assert "hunter2" not in str(info.value)


def test_client_certificate_errors_are_one_line(tmp_path: object) -> None:
    tls = parse_redis_url("rediss://h?ssl_certfile=/nonexistent/c.pem").tls
    assert tls is not None
    with pytest.raises(RedisURLError, match="cannot load the client certificate"):
        tls.context()


async def test_redis_py_clients() -> None:
    # Built without connecting: the kind of client and where it points.
    plain = parse_redis_url("redis://app:pw@h:6380/3").redis_py()
    assert isinstance(plain, Redis)
    kw = plain.connection_pool.connection_kwargs
    assert (kw["host"], kw["port"], kw["db"], kw["username"], kw["password"]) == (
        "h", 6380, 3, "app", "pw")
    await plain.aclose()
    tls = parse_redis_url("rediss://h?ssl_ca_certs=/ca.pem&ssl_cert_reqs=optional").redis_py()
    kw = tls.connection_pool.connection_kwargs
    assert (kw["ssl_ca_certs"], kw["ssl_cert_reqs"]) == ("/ca.pem", "optional")
    await tls.aclose()
    master = parse_redis_url("redis+sentinel://s1:1,s2:2/mymaster/1").redis_py()
    assert isinstance(master.connection_pool, SentinelConnectionPool)
    assert master.connection_pool.service_name == "mymaster"
    await master.aclose()
    cluster = parse_redis_url("redis+cluster://n1:7000,n2:7001").redis_py()
    assert isinstance(cluster, RedisCluster)
    await cluster.aclose()
    unix = parse_redis_url("unix:///tmp/r.sock?db=1").redis_py()
    assert unix.connection_pool.connection_kwargs["path"] == "/tmp/r.sock"
    await unix.aclose()


def test_serve_rejects_a_bad_url_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "router.cli.main", "serve", "--redis-url", "redis+sentinel://s1"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "no master name" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [["chargers"], ["tail"], ["call", "cs1", "Reset", "{}"],
                                     ["auth", "rm", "cs1"]])
def test_cli_rejects_a_bad_url_in_one_line(command: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "router.cli.main", *command, "--redis-url", "rediss://h?ssl_ca_cert=x"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout
    assert "unknown URL parameter 'ssl_ca_cert'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
