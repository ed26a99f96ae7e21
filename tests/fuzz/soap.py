"""Fuzz target ``soap``: the OCPP-S front (issue 16, ``router.soap``).

Any bytes into :meth:`SoapCodec.decode_request` — the hardened expat parser,
the SOAP 1.2 envelope and WS-Addressing headers, the table-driven element to
JSON conversion of OCPP 1.6, 1.5 and 1.2 and the 1.6 JSON schema check. The
only allowed outcomes: a request with a known action, a protocol and a JSON
object payload, or a :class:`SoapError` whose fault envelope is well-formed
XML and echoes at most 300 characters. The code is Python on expat (standard
library, not rebuilt here): atheris instruments the ``router.soap`` modules'
bytecode for this target (:mod:`tests.fuzz.runner`).
"""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET

import router.ocppj as ocppj
from router.ocppj._walker import load_schema
from router.soap import SoapCodec
from router.soap.codec import escape
from router.soap.convert import from_16
from router.soap.envelope import body_xml, fault_envelope, namespace
from router.soap.errors import SoapError

CODEC = SoapCodec(ocppj.dialect("ocpp1.6"))
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"


def fuzz_soap(data: bytes) -> None:
    try:
        req = CODEC.decode_request(data)
    except SoapError as exc:
        fault = fault_envelope(exc)
        ET.fromstring(fault)        # well-formed, whatever the input was
        assert len(str(exc)[:300]) <= 300
        return
    assert req.proto in ("ocpp1.6", "ocpp1.5", "ocpp1.2"), req.proto
    assert req.action
    assert isinstance(json.loads(req.payload), dict)


def envelope(version: str, action: str, body: str, identity: str = "CP-1") -> bytes:
    """A charger's request as a charge point sends it (SOAP 1.2, WS-Addressing)."""
    headers = (f"<o:chargeBoxIdentity>{escape(identity)}</o:chargeBoxIdentity>"
               f"<a:Action>/{action}</a:Action><a:MessageID>urn:uuid:1</a:MessageID>"
               "<a:From><a:Address>http://203.0.113.7:8080/</a:Address></a:From>"
               "<a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous"
               "</a:Address></a:ReplyTo><a:To>http://csms.example/ocpp</a:To>")
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP12}" '
            f'xmlns:a="{WSA}" xmlns:o="{namespace(version, "cs")}"><s:Header>{headers}'
            f"</s:Header><s:Body>{body}</s:Body></s:Envelope>").encode()


def seeds() -> list[bytes]:
    """A valid request of every charger action of 1.6, and of 1.5 and 1.2
    where the action exists there; plus a DOCTYPE and a malformed one."""
    from tests.fuzz.oracles import schemas
    from tests.ocppj.instances import valid

    rng = random.Random("soap")
    out = []
    d = ocppj.dialect("ocpp1.6")
    for action, response, relpath in schemas("ocpp1.6"):
        if response or action not in d.charger_actions:
            continue
        schema = load_schema(relpath)
        payload = valid(schema, schema, rng, draft6="draft-06" in schema["$schema"],
                        optional=1.0)
        for version in ("1.6", "1.5", "1.2"):
            try:
                shaped = payload if version == "1.6" else from_16("cs", action, False, payload)
                out.append(envelope(version, action, body_xml(version, "cs", action, False,
                                                              shaped)))
            except (SoapError, KeyError, ValueError, TypeError):
                continue        # not an operation of that version
    out.append(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')
    out.append(envelope("1.6", "Heartbeat", "<o:heartbeatRequest>")[:-20])
    return out
