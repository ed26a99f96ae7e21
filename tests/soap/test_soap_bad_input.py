"""Bad OCPP-S input: each answered with the right SOAP fault or HTTP status, and
nothing published. Real HTTP against a real router process; the parser's own
cases without sockets at the end."""

from __future__ import annotations

import asyncio
import gzip
import xml.etree.ElementTree as ET
import zlib
from collections.abc import AsyncIterator

import pytest

from router.soap import (
    ForbiddenXML,
    MalformedXML,
    NotSupported,
    ProtocolViolation,
    VersionMismatch,
    parse_request,
)
from tests.conftest import RouterNode
from tests.server.helpers import Backend
from tests.soap.chargepoint import SoapChargePoint, envelope, parse_fault

BOOT = {"chargePointVendor": "ACME", "chargePointModel": "S1"}
LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;")
                                                  * 10) for i in range(1, 10))
          + b']><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
            b"&lol9;</s:Body></s:Envelope>")
XXE = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&x;'
       b"</s:Body></s:Envelope>")


@pytest.fixture
async def cp(router_node: RouterNode) -> AsyncIterator[SoapChargePoint]:
    async with SoapChargePoint(router_node.port, "BAD-1") as charger:
        yield charger


def fault_of(status: int, data: bytes) -> tuple[int, str, str]:
    fault = parse_fault(status, ET.fromstring(data))  # trusted: the router under test
    assert fault is not None, data
    return status, fault.code, fault.subcode


@pytest.mark.parametrize(("body", "expected"), [
    (b"<s:Envelope><unclosed>", (400, "Sender", "ProtocolError")),
    (b"not xml at all", (400, "Sender", "ProtocolError")),
    (LAUGHS, (400, "Sender", "SecurityError")),
    (XXE, (400, "Sender", "SecurityError")),
    (b'<?xml version="1.0"?><?evil pi?><s:Envelope xmlns:s="http://www.w3.org/2003/05/'
     b'soap-envelope"><s:Body/></s:Envelope>', (400, "Sender", "SecurityError")),
    (b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>',
     (500, "VersionMismatch", "")),
])
async def test_malformed_and_hostile_xml(cp: SoapChargePoint, backend: Backend,
                                         body: bytes, expected: tuple[int, str, str]) -> None:
    status, data = await cp.post(body)
    assert fault_of(status, data) == expected
    await backend.nothing(kinds=("call", "connected"))


async def test_wrong_namespace_missing_identity_and_bad_payload(
        cp: SoapChargePoint, backend: Backend) -> None:
    status, data = await cp.post(cp.request("BootNotification", BOOT,
                                            ns="urn://Ocpp/Cs/2099/01/"))
    assert fault_of(status, data) == (400, "Sender", "NotSupported")
    status, data = await cp.post(cp.request("BootNotification", BOOT, identity=""))
    assert fault_of(status, data) == (400, "Sender", "ProtocolError")
    status, data = await cp.post(cp.request("BootNotification", BOOT, identity="bad id"))
    assert fault_of(status, data) == (400, "Sender", "IdentityMismatch")
    # A charge point operation sent to the central system.
    status, data = await cp.post(cp.request("Reset", {"type": "Soft"},
                                            ns="urn://Ocpp/Cp/2015/10/"))
    assert fault_of(status, data) == (400, "Sender", "NotSupported")
    # Schema violations name the path.
    status, data = await cp.post(cp.request("BootNotification", {"chargePointVendor": "A"}))
    assert fault_of(status, data) == (400, "Sender", "ProtocolError")
    assert b"chargePointModel" in data
    status, data = await cp.post(cp.request("StartTransaction", {
        "connectorId": "one", "idTag": "T", "timestamp": "2026-01-01T00:00:00Z",
        "meterStart": 0}))
    assert fault_of(status, data) == (400, "Sender", "ProtocolError")
    assert b"$.connectorId" in data
    await backend.nothing(kinds=("call", "connected"))


async def test_body_size_and_encoding(router_node: RouterNode, cp: SoapChargePoint,
                                      backend: Backend) -> None:
    # Content-Length over --soap-max-body: 413 before the body is read (the
    # router answers, then reads and discards what the client still sends).
    reader, writer = await asyncio.open_connection("127.0.0.1", router_node.port)
    big = 256 * 1024 + 1
    writer.write(b"POST /ocpp/ HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % big)
    writer.write(b"x" * big)
    assert (await reader.read()).startswith(b"HTTP/1.1 413 ")
    writer.close()
    # Chunked, without a length: 413 once the limit is passed.
    reader, writer = await asyncio.open_connection("127.0.0.1", router_node.port)
    writer.write(b"POST /ocpp/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(5):
        writer.write(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 413 ")
    writer.close()
    # A gzip bomb stops at the limit: 413 too.
    bomb = gzip.compress(b" " * (8 * 1024 * 1024))
    status, _ = await cp.post(bomb, {"Content-Encoding": "gzip"})
    assert status == 413
    # Corrupt gzip and unknown codings are the sender's fault.
    status, data = await cp.post(b"\x1f\x8bnot gzip", {"Content-Encoding": "gzip"})
    assert fault_of(status, data) == (400, "Sender", "ProtocolError")
    status, data = await cp.post(cp.request("Heartbeat", {}), {"Content-Encoding": "br"})
    assert fault_of(status, data) == (400, "Sender", "ProtocolError")
    await backend.nothing(kinds=("call", "connected"))
    # deflate (zlib) bodies are accepted like gzip ones.
    status, data = await cp.post(zlib.compress(cp.request("Heartbeat", {})),
                                 {"Content-Encoding": "deflate"})
    assert status == 200 and b"heartbeatResponse" in data
    assert router_node.metric("ocpp_router_soap_http_errors_total", status="413") == 3
    assert router_node.metric("ocpp_router_soap_faults_total", subcode="ProtocolError") == 2


async def test_http_level_refusals(router_node: RouterNode) -> None:
    async def raw(request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", router_node.port)
        writer.write(request)
        data = await reader.read()
        writer.close()
        return data

    body = envelope("urn://Ocpp/Cs/2015/10/", "", "<o:heartbeatRequest/>")
    # Outside the path prefix.
    resp = await raw(b"POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
    assert resp.startswith(b"HTTP/1.1 404 ")
    # Not HTTP.
    resp = await raw(b"POST /ocpp/ HTTP/1.1\r\nHost x\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 400 ")
    # The first line split over reads still reaches the SOAP handler.
    reader, writer = await asyncio.open_connection("127.0.0.1", router_node.port)
    writer.write(b"PO")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"ST /ocpp/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    resp = await reader.read()
    writer.close()
    assert resp.startswith(b"HTTP/1.1 400 ")    # no chargeBoxIdentity: a Sender fault
    assert b"chargeBoxIdentity" in resp


# ---------------------------------------------------------------- no sockets
def test_parse_request_errors_are_typed() -> None:
    for data, exc in [(LAUGHS, ForbiddenXML), (XXE, ForbiddenXML), (b"", MalformedXML),
                      (b"<a>" * 100 + b"</a>" * 100, MalformedXML),
                      (b"<a/>", VersionMismatch)]:
        with pytest.raises(exc):
            parse_request(data)
    env = envelope("urn://Ocpp/Cs/2015/10", "<o:chargeBoxIdentity>X</o:chargeBoxIdentity>",
                   "<o:bogusRequest/>")
    with pytest.raises(NotSupported):
        parse_request(env)
    env = envelope("urn://Ocpp/Cs/2015/10", "<o:chargeBoxIdentity>X</o:chargeBoxIdentity>",
                   "<o:heartbeatRequest><o:x>1</o:x></o:heartbeatRequest>")
    with pytest.raises(ProtocolViolation, match="unexpected element"):
        parse_request(env)


def test_identity_header_in_either_namespace_any_case() -> None:
    for header in ('<cp:ChargeBoxIdentity xmlns:cp="urn://Ocpp/Cp/2015/10/">X</cp:ChargeBoxIdentity>',
                   "<o:chargeboxidentity>X</o:chargeboxidentity>"):
        env = envelope("urn://Ocpp/Cs/2015/10", header, "<o:heartbeatRequest/>")
        req = parse_request(env)
        assert req.msg.identity == "X" and req.proto == "ocpp1.6" and req.payload == b"{}"


def test_types_follow_the_schema() -> None:
    env = envelope("urn://Ocpp/Cs/2015/10/", "<o:chargeBoxIdentity>X</o:chargeBoxIdentity>",
                   "<o:startTransactionRequest><o:connectorId> 1 </o:connectorId>"
                   "<o:idTag>T</o:idTag><o:timestamp>2026-01-01T00:00:00</o:timestamp>"
                   "<o:meterStart>+5</o:meterStart></o:startTransactionRequest>")
    assert parse_request(env).payload == (b'{"connectorId":1,"idTag":"T",'
                                          b'"timestamp":"2026-01-01T00:00:00Z","meterStart":5}')


def test_mutated_envelopes_give_only_typed_errors() -> None:
    # Documented outcomes only (STYLE.md, fuzzing): a request or a SoapError,
    # never another exception, for 3,000 byte-level mutations of real envelopes.
    import random

    from router.soap import SoapError
    from tests.soap.chargepoint import SoapChargePoint as CP

    cp = CP(1, "FUZZ-1")
    seeds = [cp.request("BootNotification", BOOT),
             cp.request("MeterValues", {"connectorId": 1, "meterValue": [
                 {"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": "1"}]}]})]
    rng = random.Random(16)
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            op = rng.random()
            if op < 0.4:
                data[i] = rng.randrange(256)
            elif op < 0.7:
                del data[i:i + rng.randint(1, 20)]
            else:
                data[i:i] = rng.choice([b"<", b"&", b"]]>", b"<!DOCTYPE x>", b"\x00", b"<o:x/>"])
        try:
            parse_request(bytes(data))
        except SoapError:
            pass


def test_generated_tables_are_closed() -> None:
    # Every type an element or field names exists (or is an XML Schema
    # built-in), every operation has its Request and Response element.
    from router.soap._tables import TABLES

    builtins = {"string", "int", "long", "decimal", "boolean", "dateTime", "anyURI"}
    for version, services in TABLES.items():
        for service, table in services.items():
            types = table["types"]
            for op in table["operations"]:
                for suffix in ("Request", "Response"):
                    assert op[0].lower() + op[1:] + suffix in table["elements"], (version, op)
            for tname in table["elements"].values():    # chargeBoxIdentity: a string
                assert tname in types or tname in builtins, (version, service, tname)
            for spec in types.values():
                refs = ([f[1] for f in spec[1]] if spec[0] == "complex" else
                        [a[1] for a in spec[2]] + [spec[1]] if spec[0] == "text" else [spec[1]])
                for ref in refs:
                    assert ref in types or ref in builtins, (version, service, ref)


def test_charger_answers_booleans_and_lists() -> None:
    # The answer to GetConfiguration: booleans as 1/0, lists from maxOccurs,
    # validated against the 1.6 response schema.
    from router.ocppj import dialect
    from router.soap import SoapCodec

    codec = SoapCodec(dialect("ocpp1.6"))
    answer = envelope("urn://Ocpp/Cp/2015/10/", "",
                      "<o:getConfigurationResponse><o:configurationKey><o:key>A</o:key>"
                      "<o:readonly>1</o:readonly><o:value>x</o:value></o:configurationKey>"
                      "<o:unknownKey>B</o:unknownKey></o:getConfigurationResponse>")
    msg = codec.decode_call_response("1.6", "GetConfiguration", answer)
    assert msg.payload == {"configurationKey": [{"key": "A", "readonly": True, "value": "x"}],
                           "unknownKey": ["B"]}
    # A call body is written in the schema's sequence order, whatever the JSON order.
    body = codec.call_body("1.6", "RemoteStartTransaction", b'{"idTag":"T","connectorId":2}')
    assert body.index("connectorId") < body.index("idTag")
    with pytest.raises(ProtocolViolation):
        codec.decode_call_response("1.6", "Reset", answer)     # not the answer to Reset
