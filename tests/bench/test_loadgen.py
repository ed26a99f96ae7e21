"""Smoke tests of the load generator against the real anchor servers.

Each runs a few seconds with a handful of chargers and checks the JSON result
and the counters; no figure is asserted (performance is measured in bench/,
never in tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from bench.services import Service, python_module
from router.embedded_redis import free_port
from router.sim import messages
from router.sim.loadgen import LoadConfig, LoadgenError, percentiles, run_load
from tests.conftest import timeout

from .test_messages import check


def _anchor(module: str) -> Iterator[Service]:
    port = free_port()
    with Service(module.rsplit(".", 1)[-1], python_module(module, "--port", str(port)),
                 port, ready_timeout=timeout(30)) as svc:
        yield svc


@pytest.fixture
def responder() -> Iterator[Service]:
    yield from _anchor("bench.anchors.picows_responder")


@pytest.fixture
def ocpp_csms() -> Iterator[Service]:
    yield from _anchor("bench.anchors.ocpp_csms")


@pytest.fixture
def picows_echo() -> Iterator[Service]:
    yield from _anchor("bench.anchors.picows_echo")


@pytest.fixture
def websockets_echo() -> Iterator[Service]:
    yield from _anchor("bench.anchors.websockets_echo")


def url(svc: Service) -> str:
    return f"ws://127.0.0.1:{svc.port}/ocpp"


def _assert_clean(result: dict[str, Any], chargers: int) -> None:
    c = result["counters"]
    assert c["booted"] == chargers
    assert c["handshake_failures"] == 0
    assert c["disconnects"] == 0
    assert c["unexpected"] == 0
    assert c["call_errors"] == 0
    assert c["proto_mismatch"] == 0


async def test_closed_loop_against_picows_responder(responder: Service) -> None:
    cfg = LoadConfig(url=url(responder), chargers=20, duration=2, warmup=0.5,
                     watch={"server": responder.pid}, progress=False)
    result = await run_load(cfg)
    _assert_clean(result, 20)
    assert result["counters"]["boot_accepted"] == 20
    assert result["messages"] > 0
    assert result["msgs_per_s"] == pytest.approx(result["messages"] / result["window_s"], rel=0.01)
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "p99.9", "max", "mean"}
    lat = result["latency_ms"]
    assert 0 <= lat["p50"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert sum(c for _, c in result["latency_hist_us"]) == result["messages"]
    for part in ("server", "loadgen"):
        assert result["cpu"][part]["us_per_msg"] > 0
    assert result["handshake_rate_per_s"] > 0
    busy = result["machine_cores_busy"]
    assert busy["all"] >= busy["measured_processes"] > 0
    assert set(result["connect_cpu_us_per_conn"]) == {"server", "loadgen"}
    orjson.dumps(result)  # the whole result is JSON


@pytest.mark.parametrize("proto", ["ocpp2.0.1", "ocpp2.1", "mix"])
async def test_versions_against_picows_responder(responder: Service, proto: str) -> None:
    cfg = LoadConfig(url=url(responder), chargers=12, duration=1, warmup=0.3, proto=proto,
                     progress=False)
    result = await run_load(cfg)
    _assert_clean(result, 12)
    assert result["messages"] > 0


async def test_closed_loop_against_ocpp_library_csms(ocpp_csms: Service) -> None:
    # The library validates every payload: any schema error in the mix would
    # come back as a CALLERROR and fail _assert_clean.
    for proto in ("ocpp1.6", "ocpp2.0.1"):
        cfg = LoadConfig(url=url(ocpp_csms), chargers=10, duration=1.5, warmup=0.3, proto=proto,
                         watch={"server": ocpp_csms.pid}, progress=False)
        result = await run_load(cfg)
        _assert_clean(result, 10)
        assert result["messages"] >= 10 * 12  # every charger went through the cycle once


async def test_open_loop_rate(responder: Service) -> None:
    cfg = LoadConfig(url=url(responder), chargers=20, mode="open", rate=400, duration=2,
                     warmup=0.5, progress=False)
    result = await run_load(cfg)
    _assert_clean(result, 20)
    # The generator paces itself: about the target rate, not as fast as it can.
    assert 0.25 * 400 <= result["msgs_per_s"] <= 1.5 * 400


async def test_idle_memory_and_storm(responder: Service) -> None:
    cfg = LoadConfig(url=url(responder), chargers=30, mode="idle", hold=0.5, storm=True,
                     storm_timeout=timeout(30), procs=2, watch={"server": responder.pid},
                     progress=False)
    result = await run_load(cfg)
    assert result["procs"] == 2
    assert result["source_addrs"] == ["127.0.0.10", "127.0.0.11"]
    mem = result["memory"]["server"]
    assert mem["connections"] == 30 and mem["rss_kib"] > 0 and "rss_per_conn_kib" in mem
    storm = result["storm"]
    assert storm["completed"] and storm["dropped"] == 30 and storm["rebooted"] == 30
    assert storm["handshake_failures"] == 0
    assert storm["seconds_to_all_booted"] > 0
    assert set(storm["cpu_s"]) == {"server", "loadgen"}
    assert storm["cpu_bound_estimate_s"] >= 0
    # The drops are the storm's own, not counted as unexpected disconnects.
    assert result["counters"]["disconnects"] == 0


@pytest.mark.parametrize("server", ["picows_echo", "websockets_echo"])
async def test_echo_mode(server: str, request: pytest.FixtureRequest) -> None:
    svc: Service = request.getfixturevalue(server)
    cfg = LoadConfig(url=url(svc), chargers=10, mode="echo", duration=1, warmup=0.3,
                     watch={"server": svc.pid}, progress=False)
    result = await run_load(cfg)
    assert result["counters"]["connected"] == 10
    assert result["counters"]["handshake_failures"] == 0
    assert result["messages"] > 0 and result["cpu"]["server"]["us_per_msg"] > 0


async def test_chargers_answer_backend_calls() -> None:
    """A server that sends backend CALLs after the boot gets schema-valid answers."""
    calls = [("GetConfiguration", {"key": ["HeartbeatInterval"]}),
             ("RemoteStartTransaction", {"idTag": "X"}),
             ("NoSuchAction", {})]
    answers: list[Any] = []

    class Csms(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is not WSMsgType.TEXT:
                return
            msg = orjson.loads(frame.get_payload_as_bytes())
            if msg[0] == 2:  # BootNotification: accept, then send our CALLs one by one
                transport.send(WSMsgType.TEXT, messages.callresult(
                    msg[1].encode(), messages.CSMS_RESPONSES["ocpp1.6"]["BootNotification"]))
            else:
                answers.append(msg)
            if len(answers) < len(calls) and (msg[0] == 2 or msg[0] in (3, 4)):
                action, payload = calls[len(answers)]
                transport.send(WSMsgType.TEXT, orjson.dumps([2, f"srv{len(answers)}", action,
                                                             payload]))

    def factory(_req: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(
            extra_headers={"Sec-WebSocket-Protocol": "ocpp1.6"}), Csms())

    port = free_port()
    server = await ws_create_server(factory, "127.0.0.1", port)
    async with server:
        cfg = LoadConfig(url=f"ws://127.0.0.1:{port}/ocpp", chargers=1, mode="idle", hold=1.0,
                         progress=False)
        result = await run_load(cfg)
    assert result["counters"]["backend_calls"] == 3
    assert [a[1] for a in answers] == ["srv0", "srv1", "srv2"]
    for (action, _), answer in zip(calls[:2], answers, strict=False):
        assert answer[0] == 3
        check("ocpp1.6", action, answer[2], response=True)
    assert answers[2][0] == 4 and answers[2][2] == "NotImplemented"


async def test_unreachable_server_counts_failures() -> None:
    cfg = LoadConfig(url=f"ws://127.0.0.1:{free_port()}/ocpp", chargers=3, mode="idle",
                     hold=0.1, connect_timeout=0.5, progress=False)
    result = await run_load(cfg)
    assert result["counters"]["booted"] == 0
    assert result["counters"]["handshake_failures"] >= 3
    assert "ConnectionRefusedError" in result["counters"]["failure_kinds"]


def test_bad_config_is_refused() -> None:
    with pytest.raises(LoadgenError):
        LoadConfig(url="ws://x", mode="open", rate=0).validate()
    with pytest.raises(LoadgenError):
        LoadConfig(url="ws://x", mode="closed", storm=True).validate()


def test_percentiles_from_histogram() -> None:
    hist = [[100, 50], [200, 40], [1024, 9], [4096, 1]]
    p = percentiles(hist, 4100)
    assert p["p50"] == 0.1 and p["p90"] == 0.2 and p["p99"] == 1.024 and p["max"] == 4.1
