"""The shipped schemas: provenance, completeness, and the direction tables."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import router.ocppj as ocppj
from router.ocppj import v16, v21, v201
from router.ocppj.actions import DIRECTIONS
from router.ocppj.codegen import SCHEMAS, VERSION_DIRS, _schema_files

ROOT = Path(__file__).resolve().parents[2]
SECURITY_16 = ["SecurityEventNotification", "SignCertificate", "CertificateSigned",
               "InstallCertificate", "DeleteCertificate", "GetInstalledCertificateIds",
               "ExtendedTriggerMessage", "GetLog", "LogStatusNotification", "SignedUpdateFirmware",
               "SignedFirmwareStatusNotification"]


def test_manifest_matches_files() -> None:
    manifest = json.loads((SCHEMAS / "MANIFEST.json").read_text(encoding="utf-8"))
    assert manifest["source"]["package"] == "ocpp" and manifest["source"]["version"]
    shipped = {str(p.relative_to(SCHEMAS)) for p in SCHEMAS.glob("*/*.json")}
    assert shipped == set(manifest["files"])
    for rel, entry in manifest["files"].items():
        # Unmodified (OCPP 2.1 schemas are CC BY-ND 4.0, see NOTICE).
        assert hashlib.sha256((SCHEMAS / rel).read_bytes()).hexdigest() == entry["sha256"], rel


def test_notice_attributes_the_schemas() -> None:
    notice = (ROOT / "NOTICE").read_text(encoding="utf-8")
    assert "Open Charge Alliance" in notice and "CC BY-ND 4.0" in notice
    assert "router/ocppj/schemas" in notice


@pytest.mark.parametrize("action", SECURITY_16)
def test_16_security_extension_present(action: str) -> None:
    assert (SCHEMAS / "v16" / f"{action}.json").exists()
    assert (SCHEMAS / "v16" / f"{action}Response.json").exists()
    assert action in ocppj.dialect("ocpp1.6").all_actions


@pytest.mark.parametrize("proto", list(VERSION_DIRS))
def test_directions_cover_exactly_the_schemas(proto: str) -> None:
    charger, csms, send = DIRECTIONS[proto]
    files = _schema_files(VERSION_DIRS[proto])
    requests = {a for a, _c, response, _p in files if not response}
    responses = {a for a, _c, response, _p in files if response}
    assert charger | csms | send == requests
    assert charger | csms == responses  # SEND messages have no response
    assert not (send & (charger | csms))
    assert charger & csms == {"DataTransfer"}
    assert len(requests) == {"ocpp1.6": 39, "ocpp2.0.1": 64, "ocpp2.1": 91}[proto]


@pytest.mark.parametrize("proto", list(VERSION_DIRS))
def test_typed_modules(proto: str) -> None:
    module = ocppj.types(proto)
    public = {"ocpp1.6": v16, "ocpp2.0.1": v201, "ocpp2.1": v21}[proto]
    assert module.REQUESTS == public.REQUESTS and module.RESPONSES == public.RESPONSES
    assert public.BootNotificationRequest is module.BootNotificationRequest
    for action, cls in module.REQUESTS.items():
        assert cls.__name__ == action + "Request"
    with pytest.raises(ocppj.UnknownProtocol):
        ocppj.types("ocpp9")
