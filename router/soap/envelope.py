"""SOAP 1.2 envelopes of OCPP-S: reading one, writing answers, faults and calls.

The binding (OCA "OCPP-S 1.6", and the same for 1.5 and 1.2): SOAP 1.2 over
HTTP POST, document/literal, one body element named after the operation with a
lower-case first letter plus ``Request``/``Response``
(``bootNotificationRequest``); headers ``chargeBoxIdentity`` (in the service's
namespace — compared case-insensitively and accepted in either OCPP namespace,
as some chargers send it) and WS-Addressing ``Action`` (``/<Operation>`` and
``/<Operation>Response``), ``MessageID``, ``RelatesTo``, ``From``, ``ReplyTo``,
``To``.

:func:`parse_message` is the pure entry point (bytes in, a
:class:`SoapMessage` or a :class:`~router.soap.errors.SoapError` out) that the
router and the fuzz targets call.
"""

from __future__ import annotations

import uuid
from typing import Any

from router.soap._tables import TABLES
from router.soap.codec import escape, from_element, to_xml, types_of
from router.soap.errors import (
    NotSupported,
    ProtocolViolation,
    SoapError,
    VersionMismatch,
)
from router.soap.xmlparse import Element, parse

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = "http://www.w3.org/2005/08/addressing"
WSA_ANONYMOUS = WSA + "/anonymous"
WSA_FAULT_ACTION = WSA + "/soap/fault"
CONTENT_TYPE = "application/soap+xml; charset=utf-8"

#: namespace (without the trailing slash) → (OCPP version, service).
NAMESPACES: dict[str, tuple[str, str]] = {}
for _version, _services in TABLES.items():
    for _service, _table in _services.items():
        NAMESPACES[_table["ns"].rstrip("/")] = (_version, _service)

#: proto value of each OCPP-S version in stream entries (docs/streams.md).
PROTO = {"1.6": "ocpp1.6", "1.5": "ocpp1.5", "1.2": "ocpp1.2"}


def namespace(version: str, service: str) -> str:
    """The target namespace of a service (with the trailing slash, as the WSDL)."""
    return TABLES[version][service]["ns"]  # type: ignore[no-any-return]


class SoapMessage:
    """One parsed OCPP-S message.

    ``action`` is the operation (``BootNotification``); ``response`` tells a
    ``…Response`` element from a ``…Request``; ``payload`` its JSON value in
    the version's own names (validated against the version's tables), or None
    for a fault, whose ``fault`` is ``(code, subcode, reason)``.
    """

    __slots__ = ("action", "fault", "from_address", "identity", "message_id", "payload",
                 "relates_to", "response", "service", "version", "wsa_action")

    def __init__(self) -> None:
        self.version = ""
        self.service = ""
        self.action = ""
        self.response = False
        self.payload: dict[str, Any] | None = None
        self.fault: tuple[str, str, str] | None = None
        self.identity: str | None = None
        self.message_id: str | None = None
        self.relates_to: str | None = None
        self.from_address: str | None = None
        self.wsa_action: str | None = None


def _text(el: Element) -> str:
    return el.text.strip()


def _address(el: Element) -> str | None:
    for child in el.children:
        if child.name == "Address":
            return _text(child) or None
    return _text(el) or None


def _fault(body_el: Element) -> tuple[str, str, str]:
    code = subcode = reason = ""
    for part in body_el.children:
        if part.name == "Code":
            for c in part.children:
                if c.name == "Value":
                    code = _text(c).rpartition(":")[2]
                elif c.name == "Subcode":
                    for s in c.children:
                        if s.name == "Value":
                            subcode = _text(s).rpartition(":")[2]
        elif part.name == "Reason":
            for t in part.children:
                if t.name == "Text":
                    reason = _text(t)
                    break
    return code, subcode, reason


def parse_message(data: bytes, *, expect_response: bool = False) -> SoapMessage:
    """Parse and validate one OCPP-S message.

    The body element's namespace chooses the version and service; the element
    must be an operation of that service, and its content must match the
    operation's type in the version's tables.

    Args:
        data: the HTTP body (decompressed, size-checked by the caller).
        expect_response: parsing the answer to our own request: a
            ``…Response`` element or a SOAP Fault is expected.

    Returns:
        The message; ``payload`` uses the version's own element names.

    Raises:
        SoapError: a subclass naming the fault to answer (malformed or
            forbidden XML, not SOAP 1.2, unknown namespace or operation,
            schema violations).
    """
    root = parse(data)
    if root.name != "Envelope" or root.ns != SOAP12:
        if root.name == "Envelope" and root.ns == SOAP11:
            raise VersionMismatch("SOAP 1.1 envelope: OCPP-S uses SOAP 1.2")
        raise VersionMismatch("the root element is not a SOAP 1.2 Envelope")
    header = body = None
    for child in root.children:
        if child.ns != SOAP12:
            raise ProtocolViolation(f"unexpected element {child.name[:40]!r} in the Envelope")
        if child.name == "Header" and header is None and body is None:
            header = child
        elif child.name == "Body" and body is None:
            body = child
        else:
            raise ProtocolViolation(f"unexpected element {child.name[:40]!r} in the Envelope")
    if body is None:
        raise ProtocolViolation("the Envelope has no Body")
    if len(body.children) != 1:
        raise ProtocolViolation("the Body must hold exactly one element")
    msg = SoapMessage()
    if header is not None:
        for h in header.children:
            lname = h.name.lower()
            if lname == "chargeboxidentity":
                if h.ns.rstrip("/") in NAMESPACES:
                    msg.identity = _text(h)
            elif h.ns == WSA or h.ns.endswith("/addressing"):
                if h.name == "Action":
                    msg.wsa_action = _text(h)
                elif h.name == "MessageID":
                    msg.message_id = _text(h) or None
                elif h.name == "RelatesTo":
                    msg.relates_to = _text(h) or None
                elif h.name == "From":
                    msg.from_address = _address(h)
    el = body.children[0]
    if el.ns == SOAP12 and el.name == "Fault":
        if not expect_response:
            raise ProtocolViolation("a Fault is not a request")
        msg.fault = _fault(el)
        msg.response = True
        return msg
    found = NAMESPACES.get(el.ns.rstrip("/"))
    if found is None:
        raise NotSupported(f"namespace {el.ns[:80]!r} is not an OCPP-S service")
    msg.version, msg.service = found
    table = TABLES[msg.version][msg.service]
    tname = table["elements"].get(el.name)
    if tname is None or not el.name[:1].islower():
        raise NotSupported(f"{el.name[:60]!r} is not an operation of OCPP {msg.version}")
    if el.name.endswith("Response"):
        msg.response, base = True, el.name[:-8]
    elif el.name.endswith("Request"):
        base = el.name[:-7]
    else:
        raise NotSupported(f"{el.name[:60]!r} is not an operation of OCPP {msg.version}")
    if msg.response != expect_response:
        raise ProtocolViolation(f"{el.name} was not expected here")
    msg.action = base[:1].upper() + base[1:]
    if msg.action not in table["operations"]:
        raise NotSupported(f"{msg.action[:60]!r} is not an operation of OCPP {msg.version}")
    msg.payload = from_element(types_of(msg.version, msg.service), tname, el)
    return msg


# No header is marked mustUnderstand: a charger whose SOAP stack does not
# process a block would have to fault (SOAP 1.2 Part 1 §5.2.3), and the
# WS-Addressing headers are informative for OCPP-S peers.
def _envelope(ns: str, headers: list[str], body: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            f'<s:Envelope xmlns:s="{SOAP12}" xmlns:a="{WSA}" xmlns:o="{ns}">'
            f'<s:Header>{"".join(headers)}</s:Header><s:Body>{body}</s:Body>'
            "</s:Envelope>").encode()


def body_xml(version: str, service: str, action: str, response: bool,
             payload: dict[str, Any]) -> str:
    """The body element of an operation from its JSON payload (version's names).

    Raises:
        ProtocolViolation: the payload breaks the operation's type.
    """
    table = TABLES[version][service]
    name = action[:1].lower() + action[1:] + ("Response" if response else "Request")
    tname = table["elements"].get(name)
    if tname is None:
        raise NotSupported(f"{action} is not an operation of OCPP {version}")
    out: list[str] = []
    to_xml(types_of(version, service), tname, payload, "o:" + name, out)
    return "".join(out)


def response_envelope(version: str, action: str, body: str, relates_to: str | None) -> bytes:
    """The central system's answer to a charger request."""
    headers = [f'<a:Action>/{action}Response</a:Action>',
               f"<a:MessageID>urn:uuid:{uuid.uuid4()}</a:MessageID>"]
    if relates_to:
        headers.append(f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>")
    headers.append(f"<a:To>{WSA_ANONYMOUS}</a:To>")
    return _envelope(namespace(version, "cs"), headers, body)


def fault_envelope(error: SoapError, version: str | None = None,
                   relates_to: str | None = None) -> bytes:
    """A SOAP 1.2 Fault (Part 1 §5.4) for ``error``; the reason is its message."""
    ns = namespace(version or "1.6", "cs")
    headers = [f'<a:Action>{WSA_FAULT_ACTION}</a:Action>']
    if relates_to:
        headers.append(f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>")
    sub = (f"<s:Subcode><s:Value>o:{error.subcode}</s:Value></s:Subcode>"
           if error.subcode else "")
    reason = escape(str(error)[:300])
    body = (f"<s:Fault><s:Code><s:Value>s:{error.code}</s:Value>{sub}</s:Code>"
            f'<s:Reason><s:Text xml:lang="en">{reason}</s:Text></s:Reason></s:Fault>')
    return _envelope(ns, headers, body)


def request_envelope(version: str, action: str, body: str, identity: str, to: str,
                     message_id: str, from_address: str | None = None) -> bytes:
    """A central system request to a charger's SOAP server."""
    headers = [f"<o:chargeBoxIdentity>{escape(identity)}</o:chargeBoxIdentity>",
               f'<a:Action>/{action}</a:Action>',
               f"<a:MessageID>{escape(message_id)}</a:MessageID>",
               f"<a:From><a:Address>{escape(from_address or WSA_ANONYMOUS)}</a:Address></a:From>",
               f"<a:ReplyTo><a:Address>{WSA_ANONYMOUS}</a:Address></a:ReplyTo>",
               f'<a:To>{escape(to)}</a:To>']
    return _envelope(namespace(version, "cp"), headers, body)


__all__ = ["CONTENT_TYPE", "NAMESPACES", "PROTO", "SoapError", "SoapMessage", "body_xml",
           "fault_envelope", "parse_message", "request_envelope", "response_envelope"]
