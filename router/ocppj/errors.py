"""OCPP-J errors: one base class, one subclass per RPC error code.

Each class carries its wire code as class data, spelled per OCPP version:
OCPP-J 1.6 §4.2.3 (Table "Valid Error Codes") spells ``FormationViolation`` and
``OccurenceConstraintViolation``; OCPP-J 2.0.1 §4.3 and OCPP-J 2.1 spell
``FormatViolation`` and ``OccurrenceConstraintViolation`` and add
``MessageTypeNotSupported`` and ``RpcFrameworkError``. ``code_for(proto)`` is
the one place that maps an error to the code sent in a CALLERROR.

Descriptions are written by this package (a JSON path and what is wrong there);
they never contain the peer's input, so they can be sent back as
``errorDescription`` as they are.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CODES",
    "ActionNotImplemented",
    "FormatViolation",
    "GenericError",
    "InternalError",
    "MessageTypeNotSupported",
    "NotSupported",
    "OCPPJError",
    "OccurrenceConstraintViolation",
    "PropertyConstraintViolation",
    "ProtocolError",
    "RpcFrameworkError",
    "SecurityError",
    "TypeConstraintViolation",
    "error_class",
    "error_codes",
]

#: Error codes valid in a CALLERROR, per WebSocket subprotocol.
CODES: dict[str, frozenset[str]] = {
    # OCPP-J 1.6 §4.2.3
    "ocpp1.6": frozenset(
        {
            "NotImplemented", "NotSupported", "InternalError", "ProtocolError", "SecurityError",
            "FormationViolation", "PropertyConstraintViolation", "OccurenceConstraintViolation",
            "TypeConstraintViolation", "GenericError",
        }
    ),
    # OCPP-J 2.0.1 §4.3 (OCPP-J 2.1 keeps the same list)
    "ocpp2.0.1": frozenset(
        {
            "FormatViolation", "GenericError", "InternalError", "MessageTypeNotSupported",
            "NotImplemented", "NotSupported", "OccurrenceConstraintViolation",
            "PropertyConstraintViolation", "ProtocolError", "RpcFrameworkError", "SecurityError",
            "TypeConstraintViolation",
        }
    ),
}
CODES["ocpp2.1"] = CODES["ocpp2.0.1"]


def error_codes(proto: str) -> frozenset[str]:
    """The CALLERROR codes of ``proto``, spelled for that version.

    Args:
        proto: ``"ocpp1.6"``, ``"ocpp2.0.1"`` or ``"ocpp2.1"``.

    Raises:
        KeyError: unknown subprotocol.
    """
    return CODES[proto]

#: The two codes whose spelling changed between 1.6 and 2.x (tolerated on
#: input with ``Options.lenient_error_codes``, normalised on output).
RESPELL: dict[str, str] = {
    "FormationViolation": "FormatViolation",
    "FormatViolation": "FormationViolation",
    "OccurenceConstraintViolation": "OccurrenceConstraintViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
}


class OCPPJError(Exception):
    """Base of every error that is answered with a CALLERROR.

    Attributes:
        message_id: id of the offending message, ``"-1"`` when it could not be
            read (OCPP-J 2.0.1 §4.2.3); use it as the CALLERROR's id.
        description: ≤ 255 characters, names the JSON path, contains no input.
        details: ``errorDetails`` as JSON bytes (``b"{}"`` when empty).
        msgtype: message type of the offending frame (2 CALL, 3 CALLRESULT,
            4 CALLERROR, 5 CALLRESULTERROR, 6 SEND; 0 when unknown). OCPP-J
            never answers a CALLRESULT, CALLERROR or SEND with a CALLERROR,
            so a router uses this to decide whether to reply or only report.
    """

    #: Code for OCPP 2.0.1 / 2.1.
    code: ClassVar[str] = "GenericError"
    #: Code for OCPP 1.6 (same as ``code`` unless the spelling differs or 1.6 lacks it).
    code_v16: ClassVar[str] = "GenericError"

    def __init__(
        self,
        description: str = "",
        *,
        message_id: str = "-1",
        details: bytes = b"{}",
        msgtype: int = 0,
    ) -> None:
        super().__init__(description)
        self.message_id = message_id
        self.description = description[:255]
        self.details = details
        self.msgtype = msgtype

    def code_for(self, proto: str) -> str:
        """The wire code of this error for ``proto``.

        Args:
            proto: ``"ocpp1.6"``, ``"ocpp2.0.1"`` or ``"ocpp2.1"``.
        """
        return self.code_v16 if proto == "ocpp1.6" else self.code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r}, message_id={self.message_id!r})"


class FormatViolation(OCPPJError):
    """Not valid JSON, or a payload that does not conform to the PDU structure."""

    code = "FormatViolation"
    code_v16 = "FormationViolation"


class OccurrenceConstraintViolation(OCPPJError):
    """A required field is missing or an array has too few / too many items."""

    code = "OccurrenceConstraintViolation"
    code_v16 = "OccurenceConstraintViolation"


class TypeConstraintViolation(OCPPJError):
    """A field has the wrong JSON type (e.g. ``"connectorId": "1"``)."""

    code = code_v16 = "TypeConstraintViolation"


class PropertyConstraintViolation(OCPPJError):
    """A field's value is outside its constraints (enum, length, range, multiple, format)."""

    code = code_v16 = "PropertyConstraintViolation"


class ProtocolError(OCPPJError):
    """Payload for the action is incomplete."""

    code = code_v16 = "ProtocolError"


class ActionNotImplemented(OCPPJError):
    """The action is not known in this OCPP version (wire code ``NotImplemented``)."""

    code = code_v16 = "NotImplemented"


class NotSupported(OCPPJError):
    """The action is known but not supported in this direction."""

    code = code_v16 = "NotSupported"


class MessageTypeNotSupported(OCPPJError):
    """Unknown message type id (2.0.1; 1.6 and 2.1 ignore such messages).

    OCPP 1.6 has no such code; should a 1.6 dialect ever need it, it answers
    ``GenericError``.
    """

    code = "MessageTypeNotSupported"
    code_v16 = "GenericError"


class RpcFrameworkError(OCPPJError):
    """Not a valid OCPP-J message (wrong arity, id not a string …).

    OCPP 1.6 has no such code; it answers ``FormationViolation`` ("not conform
    the PDU structure", OCPP-J 1.6 §4.2.3).
    """

    code = "RpcFrameworkError"
    code_v16 = "FormationViolation"


class InternalError(OCPPJError):
    """The receiver hit an internal error while processing the message."""

    code = code_v16 = "InternalError"


class GenericError(OCPPJError):
    """Any other error."""

    code = code_v16 = "GenericError"


class SecurityError(OCPPJError):
    """A security issue prevented completing the action."""

    code = code_v16 = "SecurityError"


_BY_CODE: dict[str, type[OCPPJError]] = {}
for _cls in (
    FormatViolation, OccurrenceConstraintViolation, TypeConstraintViolation,
    PropertyConstraintViolation, ProtocolError, ActionNotImplemented, NotSupported,
    MessageTypeNotSupported, RpcFrameworkError, InternalError, GenericError, SecurityError,
):
    _BY_CODE.setdefault(_cls.code, _cls)
    _BY_CODE.setdefault(_cls.code_v16, _cls)
_BY_CODE["FormationViolation"] = FormatViolation
_BY_CODE["GenericError"] = GenericError


def error_class(code: str) -> type[OCPPJError]:
    """The error class for a wire code in either spelling.

    Args:
        code: e.g. ``"OccurenceConstraintViolation"`` or ``"NotImplemented"``.

    Raises:
        KeyError: not an OCPP-J error code.
    """
    return _BY_CODE[code]
