"""``ocpp-router simulate`` against real router processes and a real CSMS.

The simulator's report must be what the router saw: the CALLs it sent, by
action, equal the router's /metrics counters; the CSMS's CALLs sent through
the router are answered by the simulated chargers; a charger that did not
boot makes the run fail (what the Helm chart's ``helm test`` relies on).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from router.backend.client import Client
from router.embedded_redis import RedisServer, free_port
from router.streams.keys import KeySpace
from tests.conftest import RouterNode, timeout

ENV = {k: v for k, v in os.environ.items() if not k.startswith("OCPP_ROUTER_")}


async def simulate(*args: str, wait: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli.main", "simulate", *args, env=ENV,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout(wait))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def reference_csms(redis_url: str, prefix: str) -> AsyncIterator[None]:
    """The reference CSMS as a real process (answers the chargers' boots)."""
    csms = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli.main", "reference-csms", "--redis-url", redis_url,
        "--key-prefix", prefix, env=ENV, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        # Its consumer group starts at "$": entries published before the
        # group exists are not its to answer (a boot would wait for the
        # router's call timeout). So wait for the group, as a deployment
        # starts backends before chargers.
        redis = aioredis.Redis.from_url(redis_url)
        stream = KeySpace(prefix=prefix).inbound(0)
        try:
            async with asyncio.timeout(timeout(30)):
                while True:
                    with contextlib.suppress(aioredis.ResponseError):   # no stream yet
                        if any(g["name"] == b"reference-csms"
                               for g in await redis.xinfo_groups(stream)):
                            break
                    await asyncio.sleep(0.05)
        finally:
            await redis.aclose()
        yield
    finally:
        csms.terminate()
        await csms.wait()


async def _csms_calls(redis_url: str, prefix: str) -> dict[str, object]:
    """Once the first chargers are up, the CSMS calls one of each version."""
    redis = aioredis.Redis.from_url(redis_url)
    answers: dict[str, object] = {}
    try:
        async with Client(redis, prefix=prefix) as client:
            async with asyncio.timeout(timeout(90)):
                while None in [await client.where(f"CP00000{i}") for i in range(3)]:
                    await asyncio.sleep(0.2)
            answers["Reset"] = await client.call("CP000000", "Reset", {"type": "Soft"})
            answers["ChangeConfiguration"] = await client.call(
                "CP000000", "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "60"})
            answers["RequestStartTransaction"] = await client.call(
                "CP000001", "RequestStartTransaction",
                {"idToken": {"idToken": "ABC", "type": "ISO14443"}, "remoteStartId": 1})
            answers["SetVariables"] = await client.call("CP000002", "SetVariables", {
                "setVariableData": [{"attributeValue": "60", "component": {"name": "OCPPCommCtrlr"},
                                     "variable": {"name": "HeartbeatInterval"}}]})
    finally:
        await redis.aclose()
    return answers


async def test_simulate_1000_mixed_chargers_matches_the_routers_metrics(
        router_factory: Callable[..., RouterNode], redis_server: RedisServer, key_prefix: str,
        tmp_path: Path) -> None:
    node = router_factory("--max-connections", "5000")
    async with reference_csms(redis_server.url, key_prefix):
        report = tmp_path / "run.json"
        calls = asyncio.create_task(_csms_calls(redis_server.url, key_prefix))
        rc, out, err = await simulate(
            f"ws://127.0.0.1:{node.port}/ocpp/", "--chargers", "1000", "--proto", "mix",
            "--duration", "4", "--rate", "300", "--quiet", "--json", str(report),
            "--connect-timeout", str(timeout(90)))
        assert rc == 0, out + err
        answers = await asyncio.wait_for(calls, timeout(60))
    assert answers == {
        "Reset": {"status": "Accepted"}, "ChangeConfiguration": {"status": "Accepted"},
        "RequestStartTransaction": {"status": "Accepted", "transactionId": "TX-0001"},
        "SetVariables": {"setVariableResult": [{
            "attributeStatus": "Accepted", "component": {"name": "OCPPCommCtrlr"},
            "variable": {"name": "HeartbeatInterval"}}]}}
    result = orjson.loads(report.read_bytes())
    c = result["counters"]
    assert (c["handshakes"], c["boot_accepted"], c["handshake_failures"]) == (1000, 1000, 0)
    assert c["backend_calls"] == 4 and c["call_errors"] == 0
    assert set(result["sent_by_action"]) == {"ocpp1.6", "ocpp2.0.1", "ocpp2.1"}
    assert "1000 chargers" in out and "Accepted 1000" in out

    # What the simulator says it sent is what the router counted.
    sent: Counter[str] = Counter()
    for table in result["sent_by_action"].values():
        sent.update(table)
    assert sent["BootNotification"] == 1000 and sent["MeterValues"] > 0
    for action, n in sent.items():
        if action == "Heartbeat":   # answered at the edge by default (--heartbeat edge)
            assert node.metric("ocpp_router_edge_answers_total", action=action) == n
        else:
            assert node.metric("ocpp_router_messages_total", direction="in", kind="call",
                               action=action) == n, action
    assert node.metric("ocpp_router_handshakes_total", outcome="accepted") == 1000
    assert node.metric("ocpp_router_messages_total", direction="in", kind="result") == 4


async def test_one_charger_that_cannot_boot_fails_the_run(
        router_factory: Callable[..., RouterNode]) -> None:
    """No backend behind the router: the BootNotification gets InternalError
    after --reply-timeout, and the run exits 1 saying so (helm test)."""
    node = router_factory("--reply-timeout", "3")
    rc, out, err = await simulate(f"ws://127.0.0.1:{node.port}/ocpp/", "--chargers", "1",
                                  "--duration", "1", "--quiet", "--connect-timeout", "20")
    assert rc == 1, out + err
    assert "Traceback" not in err
    assert "1 of 1 chargers did not boot" in err and "answered but not Accepted" in err


async def test_unreachable_url_fails_with_one_line() -> None:
    rc, _out, err = await simulate(f"ws://127.0.0.1:{free_port()}/ocpp/", "--chargers", "1",
                                   "--duration", "1", "--quiet", "--connect-timeout", "2")
    assert rc == 1
    assert "Traceback" not in err
    assert "did not boot" in err and "never connected" in err


async def test_usage_errors() -> None:
    rc, _out, err = await simulate("http://x/ocpp/", "--duration", "1")
    assert rc == 2 and "ws://" in err and "Traceback" not in err
    rc, _out, err = await simulate("ws://x/ocpp/", "--chargers", "0")
    assert rc == 2 and "Traceback" not in err


async def test_a_missing_extra_is_named() -> None:
    """Without picows (the 'sim' extra) the command says which extra to install."""
    code = ("import sys; sys.modules['picows'] = None; "
            "from router.cli.main import main; "
            "sys.exit(main(['simulate', 'ws://127.0.0.1:1/ocpp/', '--duration', '1']))")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=ENV, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout(60))
    text = err.decode()
    assert (proc.returncode, out) == (1, b""), text
    assert "needs the 'sim' extra" in text and "picows" in text and "pip install" in text
    assert len(text.strip().splitlines()) == 1


async def test_tls_and_basic_auth(router_factory: Callable[..., RouterNode],
                                  redis_server: RedisServer, key_prefix: str,
                                  pki: Path) -> None:
    """Security profile 2: wss:// verified against the CA, Basic auth with the
    identity as user name; a wrong password fails the run."""
    from router.auth import hash_password

    node = router_factory("--auth", "basic", "--tls-cert", str(pki / "server.pem"),
                          "--tls-key", str(pki / "server.key"))
    redis = aioredis.Redis.from_url(redis_server.url)
    for identity in ("CP000000", "CP000001"):
        await redis.set(f"{key_prefix}:auth:{identity}", hash_password("0123456789abcdef"))
    await redis.aclose()
    url = f"wss://127.0.0.1:{node.port}/ocpp/"
    async with reference_csms(redis_server.url, key_prefix):
        rc, out, err = await simulate(url, "--chargers", "2", "--duration", "1", "--quiet",
                                      "--password", "0123456789abcdef",
                                      "--tls-ca", str(pki / "ca.pem"))
        assert rc == 0, out + err
        assert "Accepted 2" in out
        rc, out, err = await simulate(url, "--chargers", "2", "--duration", "1", "--quiet",
                                      "--password", "wrong-password-x", "--tls-ca",
                                      str(pki / "ca.pem"), "--connect-timeout", "3")
        assert rc == 1 and "2 never connected" in err, out + err
    assert node.metric("ocpp_router_handshakes_total", outcome="unauthorized") >= 2


async def test_idle_chargers_send_heartbeats(router_factory: Callable[..., RouterNode],
                                            redis_server: RedisServer, key_prefix: str,
                                            tmp_path: Path) -> None:
    node = router_factory()
    report = tmp_path / "idle.json"
    async with reference_csms(redis_server.url, key_prefix):
        rc, out, err = await simulate(f"ws://127.0.0.1:{node.port}/ocpp/", "--chargers", "6",
                                      "--idle", "--heartbeat", "0.5", "--duration", "3",
                                      "--quiet", "--json", str(report))
    assert rc == 0, out + err
    sent = orjson.loads(report.read_bytes())["sent_by_action"]
    beats = sum(table.get("Heartbeat", 0) for table in sent.values())
    assert beats >= 6      # at least one each: 3 s at one per 0.5 s
    assert node.metric("ocpp_router_edge_answers_total", action="Heartbeat") == beats
    rc, _out, err = await simulate("ws://127.0.0.1:1/ocpp/", "--heartbeat", "5")
    assert rc == 2 and "--heartbeat goes with --idle" in err
