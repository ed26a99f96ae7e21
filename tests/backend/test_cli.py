"""The backend-side CLI commands, run as real subprocesses against a real Redis."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from router.auth import verify_password
from router.embedded_redis import RedisServer, free_port
from router.streams.keys import KeySpace
from tests.backend.helpers import FakeRouter, publish, read_out
from tests.conftest import timeout

ENV = {k: v for k, v in os.environ.items() if not k.startswith("OCPP_ROUTER_")}


async def cli(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None,
              wait: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli.main", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env or ENV)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout(wait))
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO) ")


def one_line_error(err: str, *words: str) -> None:
    """The error is one line; the router's own INFO/DEBUG log lines (e.g. the
    file-descriptor limit at start) may stand beside it."""
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not _LOG_LINE.match(line)]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0]


@pytest.fixture
def conn(redis_session: RedisServer, key_prefix: str) -> list[str]:
    return ["--redis-url", redis_session.url, "--key-prefix", key_prefix]


@pytest.fixture
def keys(key_prefix: str) -> KeySpace:
    return KeySpace(prefix=key_prefix)


@pytest.mark.parametrize("command", [
    [], ["call"], ["chargers"], ["tail"], ["auth"], ["auth", "set"], ["reference-csms"], ["dev"]])
async def test_help(command: list[str]) -> None:
    rc, out, err = await cli(*command, "--help")
    assert (rc, err) == (0, "")
    assert "--help" in out


# ---------------------------------------------------------------- call

def answer_with(reply: dict[str, Any] | None) -> Any:
    return lambda fields: reply


async def test_call_prints_the_answer(redis: aioredis.Redis, keys: KeySpace,
                                      conn: list[str]) -> None:
    reply = {"kind": "result", "payload": b'{"status":"Accepted"}'}
    async with FakeRouter(redis, keys, "node-a", answer_with(reply)) as node:
        await node.register("CP-1")
        rc, out, err = await cli("call", "CP-1", "Reset", '{"type":"Soft"}', *conn)
    assert (rc, err) == (0, "")
    assert orjson.loads(out) == {"status": "Accepted"}
    assert orjson.loads(node.seen[0][b"payload"]) == {"type": "Soft"}


async def test_call_reads_the_payload_from_stdin(redis: aioredis.Redis, keys: KeySpace,
                                                 conn: list[str]) -> None:
    reply = {"kind": "result", "payload": b'{"status":"Accepted"}'}
    async with FakeRouter(redis, keys, "node-a", answer_with(reply)) as node:
        await node.register("CP-1")
        rc, _out, _err = await cli("call", "CP-1", "Reset", "-", *conn, stdin=b'{"type":"Hard"}')
    assert rc == 0
    assert orjson.loads(node.seen[0][b"payload"]) == {"type": "Hard"}


@pytest.mark.parametrize(("reply", "status", "words"), [
    ({"kind": "error", "code": "NotSupported", "description": "not here"}, 4,
     ["CALLERROR", "NotSupported", "not here"]),
    ({"kind": "failed", "code": "NotConnected", "description": "gone"}, 5, ["not connected"]),
    ({"kind": "failed", "code": "QueueFull", "description": "too many"}, 7,
     ["not delivered", "QueueFull"]),
    ({"kind": "failed", "code": "InvalidPayload", "description": "$.type"}, 3, ["invalid"]),
    (None, 6, ["did not answer within 0.2s"]),
])
async def test_call_failures_have_their_exit_status(
        redis: aioredis.Redis, keys: KeySpace, conn: list[str], reply: dict[str, Any] | None,
        status: int, words: list[str]) -> None:
    async with FakeRouter(redis, keys, "node-a", answer_with(reply)) as node:
        await node.register("CP-1")
        rc, out, err = await cli("call", "CP-1", "Reset", '{"type":"Soft"}', "--timeout", "0.2",
                                 "--no-validate", *conn)
    assert (rc, out) == (status, "")
    one_line_error(err, "ocpp-router call:", *words)


@pytest.mark.parametrize(("args", "status", "words"), [
    (["CP-1", "Reset", '{"type": "Sideways"}'], 3, ["invalid Reset", "$.type"]),
    (["CP-1", "Teleport", "{}"], 3, ["invalid Teleport"]),
    (["CP-1", "Reset", '{"type":'], 2, ["not JSON"]),
    (["CP-1", "Reset", "[1]"], 2, ["JSON object"]),
    (["CP-9", "Reset", '{"type":"Soft"}'], 5, ["CP-9 is not connected"]),
])
async def test_call_refuses_before_sending(redis: aioredis.Redis, keys: KeySpace,
                                           conn: list[str], args: list[str], status: int,
                                           words: list[str]) -> None:
    async with FakeRouter(redis, keys, "node-a", answer_with(None)) as node:
        await node.register("CP-1")
        rc, out, err = await cli("call", *args, *conn)
    assert (rc, out) == (status, "")
    one_line_error(err, *words)
    assert node.seen == []


async def test_unreachable_redis_is_one_line() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    for args in (["call", "CP-1", "Heartbeat", "{}"], ["chargers"], ["tail"],
                 ["reference-csms"]):
        rc, out, err = await cli(*args, "--redis-url", url)
        assert (rc, out) == (1, "")
        one_line_error(err, "Redis")


async def test_bad_redis_url_is_a_usage_error() -> None:
    rc, _out, err = await cli("chargers", "--redis-url", "http://example.com")
    assert rc == 2
    one_line_error(err, "--redis-url")


async def test_redis_url_from_the_environment(redis: aioredis.Redis, keys: KeySpace,
                                              redis_session: RedisServer,
                                              key_prefix: str) -> None:
    await FakeRouter(redis, keys, "node-a", None).register("CP-ENV")
    env = {**ENV, "OCPP_ROUTER_REDIS_URL": redis_session.url,
           "OCPP_ROUTER_KEY_PREFIX": key_prefix}
    rc, out, _err = await cli("chargers", "--json", env=env)
    assert rc == 0
    assert [c["identity"] for c in orjson.loads(out)] == ["CP-ENV"]


# ---------------------------------------------------------------- chargers

async def test_chargers_table_and_json(redis: aioredis.Redis, keys: KeySpace,
                                       conn: list[str]) -> None:
    node = FakeRouter(redis, keys, "router-a-0", None)
    await node.register("CP-2", proto="ocpp2.0.1")
    await node.register("CP-1")
    await node.register("CP-S", proto="ocpp1.5")
    # An OCPP-S charger's entry, as router/server/soap.py writes it.
    await redis.hset(keys.registry("CP-S"), mapping={
        "transport": "soap", "endpoint": "http://10.0.0.9:8080/ocpp"})
    rc, out, err = await cli("chargers", *conn)
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["IDENTITY", "PROTOCOL", "TRANSPORT", "NODE", "SINCE", "ADDRESS"]
    assert lines[1].split()[:4] == ["CP-1", "ocpp1.6", "websocket", "router-a-0"]
    assert lines[2].split()[:4] == ["CP-2", "ocpp2.0.1", "websocket", "router-a-0"]
    assert lines[3].split()[:4] == ["CP-S", "ocpp1.5", "soap", "router-a-0"]
    assert lines[3].endswith("127.0.0.1:5555 http://10.0.0.9:8080/ocpp")
    assert lines[-1] == "3 chargers connected"
    rc, out, _err = await cli("chargers", "--json", *conn)
    listed = orjson.loads(out)
    assert [(c["identity"], c["proto"], c["transport"], c["node"], c["conn"], c["endpoint"])
            for c in listed] == [
        ("CP-1", "ocpp1.6", "websocket", "router-a-0", node.conn, ""),
        ("CP-2", "ocpp2.0.1", "websocket", "router-a-0", node.conn, ""),
        ("CP-S", "ocpp1.5", "soap", "router-a-0", node.conn, "http://10.0.0.9:8080/ocpp")]


async def test_chargers_when_none(conn: list[str]) -> None:
    rc, out, _err = await cli("chargers", *conn)
    assert rc == 0 and out.strip().endswith("0 chargers connected")


# ---------------------------------------------------------------- tail

async def test_tail_filters_by_identity_action_and_kind(redis: aioredis.Redis, keys: KeySpace,
                                                        conn: list[str]) -> None:
    await publish(redis, keys, "connected", "CP-1", addr="10.0.0.1:1")
    await publish(redis, keys, "call", "CP-1", id="a1", action="Heartbeat", payload={})
    await publish(redis, keys, "call", "XX-1", id="a2", action="BootNotification",
                  payload={"chargePointVendor": "V", "chargePointModel": "M"})
    await publish(redis, keys, "call", "CP-2", id="a3", action="BootNotification",
                  payload={"chargePointVendor": "V", "chargePointModel": "M"})
    rc, out, err = await cli("tail", "--from-start", "-i", "CP-*", "-k", "call",
                             "-a", "BootNotification", "--count", "1", *conn)
    assert (rc, err) == (0, "")
    [line] = out.splitlines()
    assert " CP-2 call BootNotification #a3 " in line
    assert line.endswith('{"chargePointVendor":"V","chargePointModel":"M"}')
    rc, out, _err = await cli("tail", "--from-start", "--count", "4", "--json", *conn)
    rows = [orjson.loads(x) for x in out.splitlines()]
    assert [r["kind"] for r in rows] == ["connected", "call", "call", "call"]
    assert rows[1]["payload"] == {}


async def test_tail_follows_live_without_a_consumer_group(
        redis: aioredis.Redis, keys: KeySpace, conn: list[str]) -> None:
    await publish(redis, keys, "call", "OLD", action="Heartbeat", payload={})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli.main", "tail", "--count", "1", "-i", "NEW", *conn,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV)
    # tail starts after the entries that exist; publish until it has seen one.
    async with asyncio.timeout(timeout(30)):
        while proc.returncode is None:
            await publish(redis, keys, "call", "NEW", action="Heartbeat", payload={})
            try:
                await asyncio.wait_for(proc.wait(), 0.2)
            except TimeoutError:
                pass
    out, err = await proc.communicate()
    assert (proc.returncode, err) == (0, b"")
    [line] = out.decode().splitlines()
    assert " NEW call Heartbeat " in line
    assert await redis.xinfo_groups(keys.inbound(0)) == []


# ---------------------------------------------------------------- auth

async def test_auth_set_and_rm(redis: aioredis.Redis, keys: KeySpace, conn: list[str]) -> None:
    rc, out, err = await cli("auth", "set", "CP-1", *conn, stdin=b"s3cret-passw0rd-16\n")
    assert (rc, err) == (0, "")
    assert "CP-1" in out
    stored = await redis.get(keys.auth("CP-1"))
    assert stored is not None and b"s3cret" not in stored
    assert verify_password("s3cret-passw0rd-16", stored)
    rc, _out, err = await cli("auth", "rm", "CP-1", *conn)
    assert (rc, err) == (0, "")
    assert await redis.exists(keys.auth("CP-1")) == 0
    rc, _out, err = await cli("auth", "rm", "CP-1", *conn)
    assert rc == 1
    one_line_error(err, "no password set for CP-1")


async def test_auth_set_refuses_an_empty_password(conn: list[str]) -> None:
    rc, _out, err = await cli("auth", "set", "CP-1", *conn, stdin=b"\n")
    assert rc == 2
    one_line_error(err, "empty password")


async def test_auth_needs_an_action() -> None:
    rc, _out, err = await cli("auth")
    assert rc == 2
    assert "Traceback" not in err


# ---------------------------------------------------------------- reference-csms

async def test_reference_csms_serves_and_stops_on_sigterm(
        redis: aioredis.Redis, keys: KeySpace, conn: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli.main", "reference-csms", "--allow", "A,B", *conn,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV)
    try:
        async with asyncio.timeout(timeout(30)):
            while not await redis.exists(keys.inbound(0)) or not await redis.xinfo_groups(
                    keys.inbound(0)):
                await asyncio.sleep(0.05)
        await publish(redis, keys, "call", "CP-1", id="z1", action="Authorize",
                      payload={"idTag": "C"})
        [out] = await read_out(redis, keys, timeout=timeout(20))
        assert orjson.loads(out[b"payload"]) == {"idTagInfo": {"status": "Invalid"}}
        proc.send_signal(signal.SIGTERM)
        _stdout, err = await asyncio.wait_for(proc.communicate(), timeout(30))
        assert proc.returncode == 0, err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
