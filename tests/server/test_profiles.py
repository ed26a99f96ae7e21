"""Validation profiles through a real router process, real Redis, real clients.

Each relaxation accepts its broken message and only that one: the same
charger's other breakage is still rejected, and the same broken message from
a charger the rule does not match gets its CALLERROR. Profiles are reloaded
under load (SIGHUP and POST /profiles/reload) and never apply to what the
router sends to chargers.
"""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RouterNode, timeout
from tests.server.helpers import BOOT, BOOT_REPLY, Backend, Charger

TS = "2026-11-21T12:00:00Z"
STATUS = {"timestamp": TS, "connectorStatus": "Available", "evseId": 1, "connectorId": 1}
SIGNED = {"signedMeterData": "A" * 3000, "signingMethod": "ECDSA", "encodingMethod": "OCMF",
          "publicKey": "K"}


def _meter(measurand: str = "Energy.Active.Import.Register",
           signed: dict[str, str] | None = None) -> dict[str, Any]:
    sampled: dict[str, Any] = {"value": 1.0, "measurand": measurand}
    if signed:
        sampled["signedMeterValue"] = signed
    return {"evseId": 1, "meterValue": [{"timestamp": TS, "sampledValue": [sampled]}]}


# check -> (action, the broken payload it lets through, another breakage it does not)
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "string_length": ("MeterValues", _meter(signed=SIGNED),
                      _meter(measurand="energy.active.import.register")),
    "enum_case": ("StatusNotification", {**STATUS, "connectorStatus": "available"},
                  {**STATUS, "vendorExtra": 1}),
    "additional_properties": ("StatusNotification", {**STATUS, "vendorExtra": 1},
                              {**STATUS, "connectorStatus": "AVAILABLE"}),
    "datetime_offset": ("StatusNotification", {**STATUS, "timestamp": "2026-11-21T12:00:00"},
                        {**STATUS, "timestamp": "yesterday"}),
    "number_as_string": ("StatusNotification", {**STATUS, "evseId": "1"},
                         {**STATUS, "evseId": "one"}),
    "skip": ("DataTransfer", {"vendorId": "V" * 300, "extra": True},
             {"vendorId": "V", "data": "x"}),   # valid; "other" is a CALL to another action
}

PROFILES = """
[[validation_profile]]
name = "signed-meter"
identity = "R-string_length"
actions = ["MeterValues"]
paths = ["$.meterValue[*].sampledValue[*].signedMeterValue.signedMeterData"]
relax = ["string_length"]

[[validation_profile]]
name = "lower-enums"
identity = "R-enum_case"
relax = ["enum_case"]

[[validation_profile]]
name = "extras"
identity = "R-additional_properties"
relax = ["additional_properties"]

[[validation_profile]]
name = "local-time"
identity = "R-datetime_offset"
relax = ["datetime_offset"]

[[validation_profile]]
name = "stringly"
identity = "R-number_as_string"
relax = ["number_as_string"]

[[validation_profile]]
name = "no-datatransfer"
identity = "R-skip"
skip = ["DataTransfer"]

[[validation_profile]]
name = "acme-ac22"
vendor = "ACME"
model = "AC22*"
relax = ["enum_case"]
"""


def write_profiles(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@pytest.fixture
def profiles_file(tmp_path: Path) -> Path:
    path = tmp_path / "profiles.toml"
    write_profiles(path, PROFILES)
    return path


@pytest.fixture
def node(router_factory: Callable[..., RouterNode], profiles_file: Path) -> RouterNode:
    return router_factory("--validation-profiles", str(profiles_file), "--strict-datetime")


@pytest.fixture
async def backend(node: RouterNode) -> AsyncIterator[Backend]:
    b = Backend(node)
    yield b
    await b.close()


def post(node: RouterNode, path: str) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{node.admin_port}{path}", data=b"",
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout(10)) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def _published(cp: Charger, backend: Backend, identity: str, action: str,
                     payload: dict[str, Any]) -> dict[str, str]:
    msg_id = await cp.call(action, payload)
    call = await backend.next("call", cs=identity, id=msg_id)
    await backend.reply(call, {"status": "Accepted"} if action == "DataTransfer" else {})
    assert await cp.recv() == [3, msg_id, {"status": "Accepted"} if action == "DataTransfer"
                               else {}]
    return call


async def _rejected(cp: Charger, action: str, payload: dict[str, Any]) -> str:
    msg_id = await cp.call(action, payload)
    answer = await cp.recv()
    assert answer[:2] == [4, msg_id], answer
    return str(answer[2])


@pytest.mark.parametrize("check", list(CASES))
async def test_each_relaxation_accepts_its_message_and_only_that(
        node: RouterNode, backend: Backend, check: str) -> None:
    action, broken, other = CASES[check]
    proto = "ocpp1.6" if check == "skip" else "ocpp2.0.1"
    relaxed = await Charger.connect(node, f"R-{check}", proto)
    strict = await Charger.connect(node, f"S-{check}", proto)
    try:
        call = await _published(relaxed, backend, f"R-{check}", action, broken)
        assert json.loads(call["payload"]) == broken          # published as received
        rule = {"string_length": "signed-meter", "enum_case": "lower-enums",
                "additional_properties": "extras", "datetime_offset": "local-time",
                "number_as_string": "stringly", "skip": "no-datatransfer"}[check]
        assert call["relaxed"] == f"{rule}:{check}"
        # strict stays the default: the same message from another charger
        await _rejected(strict, action, broken)
        if check == "skip":
            # the skipped action only: StatusNotification is still checked
            await _rejected(relaxed, "StatusNotification", {"connectorId": "x"})
            valid = await _published(relaxed, backend, f"R-{check}", action, other)
            assert "relaxed" not in valid
        else:
            await _rejected(relaxed, action, other)
            # a valid message of the relaxed charger carries no relaxed field
            valid = await _published(relaxed, backend, f"R-{check}", "StatusNotification",
                                     STATUS)
            assert "relaxed" not in valid
        assert node.metric("ocpp_router_relaxed_messages_total", rule=rule, check=check,
                           action=action) == 1
    finally:
        await relaxed.close()
        await strict.close()


async def test_vendor_model_rule_applies_from_the_boot_notification(
        node: RouterNode, backend: Backend) -> None:
    cp = await Charger.connect(node, "ACME-7", "ocpp2.0.1")
    try:
        broken = {**STATUS, "connectorStatus": "available"}
        # unknown model until it boots: strict
        await _rejected(cp, "StatusNotification", broken)
        # the BootNotification itself breaks the schema (reason in the wrong
        # case) and names the model: relaxed, and remembered for the connection
        boot = {"reason": "powerUp", "chargingStation": {"vendorName": "ACME", "model": "AC22-S"}}
        msg_id = await cp.call("BootNotification", boot)
        call = await backend.next("call", cs="ACME-7", id=msg_id)
        assert call["relaxed"] == "acme-ac22:enum_case"
        await backend.reply(call, BOOT_REPLY["ocpp2.0.1"])
        assert (await cp.recv())[0] == 3
        call = await _published(cp, backend, "ACME-7", "StatusNotification", broken)
        assert call["relaxed"] == "acme-ac22:enum_case"
    finally:
        await cp.close()
    other = await Charger.connect(node, "OTHER-7", "ocpp2.0.1")
    try:
        boot = {"reason": "PowerUp", "chargingStation": {"vendorName": "ACME", "model": "AC11"}}
        msg_id = await other.call("BootNotification", boot)
        call = await backend.next("call", cs="OTHER-7", id=msg_id)
        await backend.reply(call, BOOT_REPLY["ocpp2.0.1"])
        await other.recv()
        await _rejected(other, "StatusNotification", {**STATUS, "connectorStatus": "available"})
    finally:
        await other.close()


async def test_relaxed_callresult_and_never_toward_chargers(
        node: RouterNode, backend: Backend) -> None:
    cp = await Charger.connect(node, "R-additional_properties", "ocpp2.0.1")
    try:
        connected = await backend.next("connected", cs="R-additional_properties")
        # a charger's CALLRESULT with an extra property: published with relaxed
        await backend.out(node.node_id, kind="call", cs="R-additional_properties",
                          conn=connected["conn"], id="c1", action="Reset",
                          payload={"type": "Immediate"})
        call = await cp.recv()
        assert call[:3] == [2, "c1", "Reset"]
        await cp.send([3, "c1", {"status": "Accepted", "vendorExtra": 1}])
        result = await backend.next("result", cs="R-additional_properties", id="c1")
        assert result["relaxed"] == "extras:additional_properties"
        # a backend CALL with the same breakage is refused: relaxations are
        # for what chargers send only
        await backend.out(node.node_id, kind="call", cs="R-additional_properties",
                          conn=connected["conn"], id="c2", action="Reset",
                          payload={"type": "Immediate", "vendorExtra": 1})
        failed = await backend.next("failed", cs="R-additional_properties", id="c2")
        assert failed["code"] == "InvalidPayload"
        # and so is a backend reply to a charger CALL
        msg_id = await cp.call("StatusNotification", STATUS)
        call = await backend.next("call", cs="R-additional_properties", id=msg_id)
        await backend.reply(call, {"vendorExtra": 1})
        answer = await cp.recv()
        assert answer[:3] == [4, msg_id, "InternalError"]
    finally:
        await cp.close()


async def test_reload_under_load(node: RouterNode, backend: Backend,
                                 profiles_file: Path) -> None:
    """Chargers keep sending while the rules change (SIGHUP, then POST):
    every CALL gets exactly one answer, and the verdict follows the file."""
    broken = {**STATUS, "connectorStatus": "occupied"}
    chargers = [await Charger.connect(node, f"LOAD-{i}", "ocpp2.0.1") for i in range(4)]
    stop = asyncio.Event()
    answered: list[int] = [0]

    senders_done = asyncio.Event()

    async def answer_all() -> None:
        # until the senders' last CALL is answered (no cancellation: a
        # cancelled XREAD may surface as a TimeoutError)
        while not senders_done.is_set():
            try:
                call = await backend.next("call", wait=0.5)
            except TimeoutError:
                continue
            await backend.reply(call, {})

    async def send_valid(cp: Charger) -> None:
        while not stop.is_set():
            msg_id = await cp.call("StatusNotification", STATUS)
            assert await cp.recv(wait=20) == [3, msg_id, {}]
            answered[0] += 1

    responder = asyncio.create_task(answer_all())
    senders = [asyncio.create_task(send_valid(cp)) for cp in chargers[1:]]
    probe = chargers[0]
    try:
        assert await _rejected(probe, "StatusNotification", broken) == "PropertyConstraintViolation"
        write_profiles(profiles_file, PROFILES + '\n[[validation_profile]]\nname = "load"\n'
                                                 'identity = "LOAD-*"\nrelax = ["enum_case"]\n')
        node.proc.send_signal(signal.SIGHUP)
        async with asyncio.timeout(timeout(20)):
            while node.metric("ocpp_router_profile_reloads_total", outcome="ok") < 1:
                await asyncio.sleep(0.05)
        msg_id = await probe.call("StatusNotification", broken)
        assert (await probe.recv(wait=20))[:2] == [3, msg_id]
        # a broken file: 400, the current rules stay
        write_profiles(profiles_file, '[[validation_profile]]\nname = "x"\nidentity = "*"\n'
                                      'relax = ["nope"]\n')
        status, text = await asyncio.to_thread(post, node, "/profiles/reload")
        assert status == 400 and "unknown check 'nope'" in text
        msg_id = await probe.call("StatusNotification", broken)
        assert (await probe.recv(wait=20))[:2] == [3, msg_id]
        # back to the original rules over the admin port: strict again for LOAD-*
        write_profiles(profiles_file, PROFILES)
        status, text = await asyncio.to_thread(post, node, "/profiles/reload")
        assert (status, text) == (200, "7 rules loaded\n")
        await _rejected(probe, "StatusNotification", broken)
        _, listed = node.admin("/profiles")
        assert [r["name"] for r in json.loads(listed)][-1] == "acme-ac22"
    finally:
        stop.set()
        try:
            await asyncio.gather(*senders)
        finally:
            senders_done.set()
            await responder
        for cp in chargers:
            await cp.close()
    assert answered[0] > 0
    assert node.metric("ocpp_router_profile_reloads_total", outcome="failed") == 1
    assert node.metric("ocpp_router_profile_reloads_total", outcome="ok") == 2


def test_a_bad_profile_file_stops_the_router_at_start(
        router_factory: Callable[..., RouterNode], tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "bad.toml"
    path.write_text('[[validation_profile]]\nname = "x"\nidentity = "*"\nrelax = ["case"]\n')
    proc = subprocess.run([sys.executable, "-m", "router.cli.main", "serve",
                           "--validation-profiles", str(path)], capture_output=True,
                          timeout=timeout(60))
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err
    assert "validation_profile 'x': unknown check 'case'" in err and len(err.splitlines()) == 1


def test_rules_in_the_config_file_itself(router_factory: Callable[..., RouterNode],
                                         tmp_path: Path) -> None:
    from router.config import load

    path = tmp_path / "router.toml"
    path.write_text('reply_timeout = 20\n' + PROFILES)
    config = load({"config": str(path)}, environ={})
    assert config.validation_profiles == str(path)
    assert BOOT  # the helpers' boot payloads stay importable for the other tests


async def test_workers_reload_through_the_supervisor(
        router_factory: Callable[..., RouterNode], profiles_file: Path) -> None:
    """With --workers the supervisor forwards SIGHUP and POST /profiles/reload."""
    node = router_factory("--validation-profiles", str(profiles_file), "--workers", "2")
    status, text = await asyncio.to_thread(post, node, "/profiles/reload")
    assert (status, text) == (202, "reload signalled to 2 workers\n")
    # One reload per worker before the next signal: two SIGHUPs that reach a
    # worker before it handled the first are one (signals do not queue; the
    # file is read once, after both, which is all a reload promises).
    async with asyncio.timeout(timeout(30)):
        while node.metric("ocpp_router_profile_reloads_total", outcome="ok") < 2:
            await asyncio.sleep(0.1)
    node.proc.send_signal(signal.SIGHUP)
    async with asyncio.timeout(timeout(30)):
        while node.metric("ocpp_router_profile_reloads_total", outcome="ok") < 4:
            await asyncio.sleep(0.1)
