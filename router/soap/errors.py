"""Errors of the OCPP-S layer, each carrying the SOAP 1.2 fault it maps to.

SOAP 1.2 Part 1 §5.4.6 fault codes (``Sender``: the message was wrong;
``Receiver``: we could not process a good one; ``VersionMismatch``: not a SOAP
1.2 envelope) with the OCPP-S subcodes, and the HTTP status of the SOAP 1.2
HTTP binding (Part 2 §7.5.1.2: Sender → 400, otherwise 500).
"""

from __future__ import annotations


class SoapError(ValueError):
    """Base of every OCPP-S error; ``code``/``subcode`` are the fault to answer."""

    code = "Sender"
    subcode: str | None = "ProtocolError"

    @property
    def status(self) -> int:
        return 400 if self.code == "Sender" else 500


class MalformedXML(SoapError):
    """Not well-formed XML, or over the depth/element limits."""


class ForbiddenXML(SoapError):
    """A DTD, entity declaration, entity reference or processing instruction:
    never allowed in a SOAP message (SOAP 1.2 Part 1 §5)."""

    subcode = "SecurityError"


class VersionMismatch(SoapError):
    """The root is not a SOAP 1.2 envelope (§5.4.7)."""

    code = "VersionMismatch"
    subcode = None


class NotSupported(SoapError):
    """A namespace (OCPP version) or operation the router does not serve."""

    subcode = "NotSupported"


class ProtocolViolation(SoapError):
    """The envelope lacks what OCPP-S requires (header, body element …) or the
    payload breaks the message's schema; the message names the path."""


class IdentityMismatch(SoapError):
    """chargeBoxIdentity is not a valid identity, or differs from the one the
    transport authenticated."""

    subcode = "IdentityMismatch"


class ReceiverError(SoapError):
    """The central system could not process a valid message (backend error,
    timeout, Redis unavailable)."""

    code = "Receiver"
    subcode: str | None = "InternalError"

    def __init__(self, text: str, subcode: str | None = "InternalError",
                 code: str = "Receiver") -> None:
        super().__init__(text)
        self.subcode = subcode
        self.code = code
