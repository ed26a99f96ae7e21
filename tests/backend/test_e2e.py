"""End to end: real router processes, real Redis, ``ocpp`` library chargers over
``websockets``, the reference CSMS and the SDK client."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import websockets
from ocpp.exceptions import NotSupportedError
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201

from router.backend import CallTimeout, ChargerError, Client, NotConnected
from router.backend.reference_csms import ReferenceCSMS
from router.embedded_redis import RedisServer, free_port
from tests.conftest import RouterNode, timeout

ENV = {k: v for k, v in os.environ.items() if not k.startswith("OCPP_ROUTER_")}


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Charger16(ChargePoint16):
    """A 1.6 charger that accepts Reset, refuses UnlockConnector and never answers GetConfiguration."""

    @on("Reset")
    async def on_reset(self, type: str) -> result16.Reset:  # "type": the OCPP field name
        return result16.Reset(status="Accepted")

    @on("UnlockConnector")
    async def on_unlock(self, connector_id: int) -> result16.UnlockConnector:
        raise NotSupportedError("no locks on this model")

    @on("GetConfiguration")
    async def on_get_configuration(self, **_: Any) -> result16.GetConfiguration:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def connected(url: str, proto: str, factory: Callable[[str, Any], Any]) -> AsyncIterator[Any]:
    """Connect an ``ocpp`` ChargePoint and run its receive loop for the block."""
    identity = url.rsplit("/", 1)[1]
    async with websockets.connect(url, subprotocols=[proto]) as ws:  # type: ignore[list-item]
        cp = factory(identity, ws)
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            await ws.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await task


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def csms(redis: aioredis.Redis, key_prefix: str) -> AsyncIterator[ReferenceCSMS]:
    service = ReferenceCSMS(redis, prefix=key_prefix, allow={"04A2B3"}, block=0.5)
    task = asyncio.create_task(service.run())
    await asyncio.wait_for(service.app.wait_ready(), timeout(10))
    yield service
    service.stop()
    await asyncio.wait_for(task, timeout(20))


async def wait_registered(client: Client, identity: str) -> None:
    async with asyncio.timeout(timeout(10)):
        while await client.where(identity) is None:
            await asyncio.sleep(0.02)


async def test_ocpp16_session_answered_by_the_reference_csms(
        router_node: RouterNode, csms: ReferenceCSMS, redis: aioredis.Redis,
        key_prefix: str) -> None:
    async with connected(router_node.url("CP-16"), "ocpp1.6", ChargePoint16) as cp:
        boot = await cp.call(call16.BootNotification(charge_point_vendor="ACME",
                                                     charge_point_model="X1"))
        assert (boot.status, boot.interval) == ("Accepted", 300)
        auth = await cp.call(call16.Authorize(id_tag="04A2B3"))
        assert auth.id_tag_info["status"] == "Accepted"
        refused = await cp.call(call16.Authorize(id_tag="STOLEN"))
        assert refused.id_tag_info["status"] == "Invalid"
        status = await cp.call(call16.StatusNotification(
            connector_id=1, error_code="NoError", status="Charging"))
        assert status is not None
        start = await cp.call(call16.StartTransaction(
            connector_id=1, id_tag="04A2B3", meter_start=100, timestamp=now()))
        assert start.id_tag_info["status"] == "Accepted"
        tx = start.transaction_id
        meter = await cp.call(call16.MeterValues(connector_id=1, transaction_id=tx, meter_value=[
            {"timestamp": now(), "sampledValue": [{"value": "1234.5"}]}]))
        assert meter is not None
        stop = await cp.call(call16.StopTransaction(meter_stop=5100, timestamp=now(),
                                                    transaction_id=tx, id_tag="04A2B3"))
        assert stop.id_tag_info["status"] == "Accepted"
    stored = await redis.hgetall(f"{key_prefix}:csms:tx:CP-16:{tx}")
    assert (stored[b"state"], stored[b"meterStop"]) == (b"ended", b"5100")
    assert orjson.loads((await redis.hgetall(f"{key_prefix}:csms:status:CP-16"))[b"1"])[
        "status"] == "Charging"


async def test_ocpp201_session_answered_by_the_reference_csms(
        router_node: RouterNode, csms: ReferenceCSMS, redis: aioredis.Redis,
        key_prefix: str) -> None:
    async with connected(router_node.url("CS-201"), "ocpp2.0.1", ChargePoint201) as cp:
        boot = await cp.call(call201.BootNotification(
            charging_station={"model": "X2", "vendor_name": "ACME"}, reason="PowerUp"))
        assert boot.status == "Accepted"
        token = {"id_token": "04A2B3", "type": "ISO14443"}
        auth = await cp.call(call201.Authorize(id_token=token))
        assert auth.id_token_info["status"] == "Accepted"
        await cp.call(call201.StatusNotification(timestamp=now(), connector_status="Occupied",
                                                 evse_id=1, connector_id=1))
        started = await cp.call(call201.TransactionEvent(
            event_type="Started", timestamp=now(), trigger_reason="Authorized", seq_no=0,
            transaction_info={"transaction_id": "tx-1"}, id_token=token,
            evse={"id": 1, "connector_id": 1}))
        assert started.id_token_info["status"] == "Accepted"
        await cp.call(call201.MeterValues(evse_id=1, meter_value=[
            {"timestamp": now(), "sampled_value": [{"value": 1234.5}]}]))
        ended = await cp.call(call201.TransactionEvent(
            event_type="Ended", timestamp=now(), trigger_reason="EVCommunicationLost", seq_no=1,
            transaction_info={"transaction_id": "tx-1", "stopped_reason": "EVDisconnected"}))
        assert ended.id_token_info is None
    stored = await redis.hgetall(f"{key_prefix}:csms:tx:CS-201:tx-1")
    assert (stored[b"state"], stored[b"reason"]) == (b"ended", b"EVDisconnected")


async def test_client_call_to_a_charger_on_another_node(
        router_factory: Callable[..., RouterNode], redis: aioredis.Redis,
        key_prefix: str) -> None:
    node_a = router_factory(node_id="node-a")
    node_b = router_factory(node_id="node-b")
    async with connected(node_b.url("CP-B"), "ocpp1.6", Charger16), \
            Client(redis, prefix=key_prefix) as client:
        await wait_registered(client, "CP-B")
        where = await client.where("CP-B")
        assert where is not None and where.node == "node-b" and where.proto == "ocpp1.6"
        assert await client.call("CP-B", "Reset", {"type": "Soft"}, timeout=timeout(10)) == {
            "status": "Accepted"}
        with pytest.raises(ChargerError) as refused:
            await client.call("CP-B", "UnlockConnector", {"connectorId": 1})
        assert refused.value.code == "NotSupported"
        with pytest.raises(CallTimeout):
            await client.call("CP-B", "GetConfiguration", {}, timeout=1)
    assert node_a.node_id != node_b.node_id
    async with Client(redis, prefix=key_prefix) as client:
        async with asyncio.timeout(timeout(10)):
            while await client.where("CP-B") is not None:  # the router deregisters on close
                await asyncio.sleep(0.02)
        with pytest.raises(NotConnected):
            await client.call("CP-B", "Reset", {"type": "Soft"})


async def test_cli_call_and_chargers_with_a_real_router(
        router_node: RouterNode, redis_server: RedisServer, redis: aioredis.Redis,
        key_prefix: str) -> None:
    conn = ["--redis-url", redis_server.url, "--key-prefix", key_prefix]

    async def cli(*args: str) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router.cli.main", *args, *conn, env=ENV,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout(60))
        assert proc.returncode is not None
        return proc.returncode, out, err

    async with connected(router_node.url("CP-CLI"), "ocpp1.6", Charger16), \
            Client(redis, prefix=key_prefix) as client:
        await wait_registered(client, "CP-CLI")
        rc, out, err = await cli("chargers", "--json")
        assert rc == 0, err
        [row] = orjson.loads(out)
        assert (row["identity"], row["node"]) == ("CP-CLI", router_node.node_id)
        rc, out, err = await cli("call", "CP-CLI", "Reset", '{"type":"Hard"}')
        assert (rc, orjson.loads(out)) == (0, {"status": "Accepted"}), err
        rc, out, err = await cli("call", "CP-CLI", "UnlockConnector", '{"connectorId":1}')
        assert rc == 4 and b"NotSupported" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_dev_mode_accepts_a_charger_and_stops_cleanly(sig: signal.Signals) -> None:
    port, admin_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli.main", "dev", "--port", str(port),
        "--admin-port", str(admin_port), "--status-interval", "0.2", env=ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        url = ""
        banner: list[str] = []
        async with asyncio.timeout(timeout(60)):
            while not url:
                line = (await proc.stdout.readline()).decode()
                assert line, f"dev exited: {banner} {(await proc.communicate())[1]!r}"
                banner.append(line)
                found = re.search(r"ws://\S+/ocpp/<identity>", line)
                if found:
                    url = found.group(0).replace("<identity>", "DEV-1")
        assert url == f"ws://localhost:{port}/ocpp/DEV-1"
        redis_url = re.search(r"Redis (redis://\S+)", banner[0])
        assert redis_url is not None
        async with connected(url, "ocpp1.6", ChargePoint16) as cp:
            boot = await cp.call(call16.BootNotification(charge_point_vendor="ACME",
                                                         charge_point_model="X1"))
            assert boot.status == "Accepted"
            async with asyncio.timeout(timeout(30)):
                while "1 charger connected" not in (await proc.stdout.readline()).decode():
                    pass
        proc.send_signal(sig)
        _out, err = await asyncio.wait_for(proc.communicate(), timeout(60))
        assert proc.returncode == 0, err
        assert err == b""
        # the temporary Redis is gone
        with pytest.raises(OSError):
            _r, w = await asyncio.open_connection(*redis_url.group(1)[8:].split("/")[0].split(":"))
            w.close()
    finally:
        if proc.returncode is None:
            # SIGTERM first: dev stops its router and Redis (a SIGKILL would
            # orphan them, they live in their own sessions).
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout(30))
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_dev_mode_port_in_use_is_one_line_and_cleans_up() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router.cli.main", "dev", "--port", str(port),
            "--admin-port", str(free_port()), env=ENV,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout(60))
    assert proc.returncode == 1
    assert out == b""
    text = err.decode()
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1
    assert "the router exited at start" in text and str(port) in text
    # The router's log is kept for the user, named in the message.
    log = re.search(r"\(log: (\S+)/router\.log\)", text)
    assert log is not None
    shutil.rmtree(log.group(1))
