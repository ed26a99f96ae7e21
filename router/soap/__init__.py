"""OCPP-S: OCPP 1.6, 1.5 and 1.2 over SOAP 1.2, mapped onto the stream contract.

Sans-I/O like the rest of the codecs: bytes in, payloads and bytes out; the
HTTP glue is :mod:`router.server.soap`. Layout:

* ``_tables.py`` — schema facts generated from the OCA WSDLs (``codegen.py``);
* ``xmlparse.py`` — the hardened XML parser (its single construction site);
* ``codec.py`` — the table-driven element ↔ JSON loop;
* ``envelope.py`` — SOAP 1.2 envelopes, headers, faults;
* ``convert.py`` — 1.5/1.2 ↔ 1.6 payload shapes.

:func:`parse_request` is the pure function a fuzz target calls: any bytes in,
a :class:`SoapRequest` or a :class:`~router.soap.errors.SoapError` out.
"""

from __future__ import annotations

from typing import Any

import msgspec

from router.ocppj import Dialect
from router.ocppj.errors import OCPPJError
from router.soap._tables import TABLES
from router.soap.convert import NATIVE, from_16, to_16
from router.soap.envelope import (
    CONTENT_TYPE,
    PROTO,
    SoapMessage,
    body_xml,
    fault_envelope,
    parse_message,
    request_envelope,
    response_envelope,
)
from router.soap.errors import (
    ForbiddenXML,
    IdentityMismatch,
    MalformedXML,
    NotSupported,
    ProtocolViolation,
    ReceiverError,
    SoapError,
    VersionMismatch,
)

_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(dict[str, Any])

VERSIONS = tuple(TABLES)     # ("1.6", "1.5", "1.2")


class SoapRequest:
    """A charger's request, ready for the contract: ``proto`` (``ocpp1.6`` …),
    ``action``, ``payload`` (JSON bytes, 1.6 shape where the version allows,
    see :mod:`router.soap.convert`) and the envelope (``msg``)."""

    __slots__ = ("action", "msg", "payload", "proto", "version")

    def __init__(self, msg: SoapMessage, payload: bytes) -> None:
        self.msg = msg
        self.version = msg.version
        self.proto = PROTO[msg.version]
        self.action = msg.action
        self.payload = payload


def parse_request(data: bytes) -> SoapRequest:
    """Parse a charger's SOAP request into a contract payload (pure; fuzzable).

    Checks the envelope, the namespace (a central system service of 1.6, 1.5 or
    1.2), the operation, the payload against the version's tables, and that a
    ``chargeBoxIdentity`` is present. OCPP 1.6 payloads still need the 1.6 JSON
    schema check (:meth:`SoapCodec.decode_request` does it).

    Raises:
        SoapError: a subclass carrying the fault to answer.
    """
    msg = parse_message(data)
    if msg.service != "cs":
        raise NotSupported(f"{msg.action} is sent by a central system, not to it")
    if not msg.identity:
        raise ProtocolViolation("the chargeBoxIdentity header is missing")
    assert msg.payload is not None
    payload = msg.payload
    if msg.version != "1.6" and ("cs", msg.action, False) not in NATIVE:
        payload = to_16("cs", msg.action, False, payload)
    return SoapRequest(msg, _encode(payload))


class SoapCodec:
    """OCPP-S ↔ contract payloads for one router (holds the 1.6 JSON dialect,
    whose schemas check 1.6S payloads exactly as 1.6J ones)."""

    def __init__(self, dialect16: Dialect) -> None:
        self.dialect16 = dialect16
        #: CSMS-initiated operations per version (the charge point service).
        self.csms_actions = {v: frozenset(TABLES[v]["cp"]["operations"]) for v in VERSIONS}

    def decode_request(self, data: bytes) -> SoapRequest:
        """:func:`parse_request`, plus the 1.6 JSON schema check for 1.6S.

        Raises:
            SoapError: the fault to answer.
        """
        req = parse_request(data)
        if req.version == "1.6":
            try:
                self.dialect16.validate_request(req.action, req.payload, from_charger=True)
            except OCPPJError as exc:
                raise ProtocolViolation(exc.description) from None
        return req

    def response_body(self, version: str, action: str, payload: bytes) -> str:
        """The body element answering a charger's ``action`` from a backend's
        result payload (1.6 shape; 1.5/1.2 converted and checked).

        Raises:
            OCPPJError: 1.6: the payload breaks the response schema.
            ProtocolViolation: 1.5/1.2: it breaks the version's tables.
        """
        return self._body(version, "cs", action, True, payload)

    def call_body(self, version: str, action: str, payload: bytes) -> str:
        """The body element of a backend CALL to a charger (validated).

        Raises:
            OCPPJError: 1.6: the payload breaks the request schema.
            ProtocolViolation: 1.5/1.2: it breaks the version's tables.
        """
        return self._body(version, "cp", action, False, payload)

    def _body(self, version: str, service: str, action: str, response: bool,
              payload: bytes) -> str:
        if version == "1.6":    # the 1.6 JSON schema first: the same check as for 1.6J
            if response:
                self.dialect16.validate_response(action, payload)
            else:
                self.dialect16.validate_request(action, payload, from_charger=False)
            return body_xml(version, service, action, response, _loads(payload))
        obj = _loads(payload)
        if (service, action, response) not in NATIVE:
            obj = from_16(service, action, response, obj)
        return body_xml(version, service, action, response, obj)

    def decode_call_response(self, version: str, action: str, data: bytes) -> SoapMessage:
        """Parse the charger's answer to our ``action``: a response whose payload
        is converted to the contract shape (``msg.payload``), or a fault.

        Raises:
            SoapError: not a valid answer (wrong operation, schema violation).
            OCPPJError: 1.6: the payload breaks the response schema.
        """
        msg = parse_message(data, expect_response=True)
        if msg.fault is not None:
            return msg
        if msg.service != "cp" or msg.action != action or msg.version != version:
            raise ProtocolViolation(f"expected {action}Response of OCPP {version}")
        assert msg.payload is not None
        if version == "1.6":
            self.dialect16.validate_response(action, _encode(msg.payload))
        elif ("cp", action, True) not in NATIVE:
            msg.payload = to_16("cp", action, True, msg.payload)
        return msg


def _loads(payload: bytes) -> dict[str, Any]:
    try:
        return _decode.decode(payload)
    except msgspec.DecodeError:
        raise ProtocolViolation("the payload is not a JSON object") from None


__all__ = [
    "CONTENT_TYPE",
    "PROTO",
    "VERSIONS",
    "ForbiddenXML",
    "IdentityMismatch",
    "MalformedXML",
    "NotSupported",
    "ProtocolViolation",
    "ReceiverError",
    "SoapCodec",
    "SoapError",
    "SoapMessage",
    "SoapRequest",
    "VersionMismatch",
    "fault_envelope",
    "parse_message",
    "parse_request",
    "request_envelope",
    "response_envelope",
]
