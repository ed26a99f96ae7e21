"""Exceptions of the backend SDK (one base: :class:`BackendError`).

Two families:

* :class:`OCPPError` and its subclasses are raised *by handlers* to answer a
  charger CALL with a CALLERROR (OCPP-J 1.6 §4.2.3, OCPP-J 2.0.1 §4.3). The
  wire code is class data; :meth:`OCPPError.wire_code` spells it for the
  connection's OCPP version, because 1.6 and 2.x spell two codes differently.
* :class:`CallFailed` and its subclasses are raised *by*
  :meth:`router.backend.Client.call` when a backend CALL to a charger does not
  end with a CALLRESULT.
"""

from __future__ import annotations

from typing import Any, ClassVar


class BackendError(Exception):
    """Base of every exception the backend SDK raises."""


# --------------------------------------------------------------------------
# Raised by handlers: becomes a CALLERROR to the charger.


class OCPPError(BackendError):
    """Raise from an ``on_call`` handler to answer the charger with a CALLERROR.

    ``description`` and ``details`` are sent to the charger as they are: put
    nothing internal in them.
    """

    code: ClassVar[str] = "GenericError"
    #: The OCPP 1.6 spelling of :attr:`code`, when it differs.
    code_v16: ClassVar[str | None] = None

    def __init__(self, description: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(description or self.code)
        self.description = description
        self.details: dict[str, Any] = details or {}

    def wire_code(self, proto: str) -> str:
        """The error code as the connection's OCPP version spells it.

        Args:
            proto: the connection's subprotocol (``ocpp1.6``, ``ocpp2.0.1``, ``ocpp2.1``).
        """
        if proto == "ocpp1.6" and self.code_v16 is not None:
            return self.code_v16
        return self.code


class GenericError(OCPPError):
    """Any other error (OCPP-J 1.6 §4.2.3)."""

    code = "GenericError"


class ActionNotImplemented(OCPPError):
    """The requested action is not known by the receiver."""

    code = "NotImplemented"


class ActionNotSupported(OCPPError):
    """The action is recognised but not supported by the receiver."""

    code = "NotSupported"


class InternalError(OCPPError):
    """An internal error occurred; the receiver cannot process the action."""

    code = "InternalError"


class ProtocolError(OCPPError):
    """The payload is incomplete."""

    code = "ProtocolError"


class SecurityError(OCPPError):
    """A security issue prevents the receiver from completing the action."""

    code = "SecurityError"


class FormatViolation(OCPPError):
    """The payload is syntactically incorrect or does not conform to its schema."""

    code = "FormatViolation"
    # OCPP-J 1.6 §4.2.3 spells it "FormationViolation".
    code_v16 = "FormationViolation"


class PropertyConstraintViolation(OCPPError):
    """A field has a value that is not allowed."""

    code = "PropertyConstraintViolation"


class OccurrenceConstraintViolation(OCPPError):
    """A field violates occurrence constraints (missing, or present too often)."""

    code = "OccurrenceConstraintViolation"
    # OCPP-J 1.6 §4.2.3 has the typo "OccurenceConstraintViolation" on the wire.
    code_v16 = "OccurenceConstraintViolation"


class TypeConstraintViolation(OCPPError):
    """A field has the wrong data type."""

    code = "TypeConstraintViolation"


# --------------------------------------------------------------------------
# Raised by Client.call: the backend CALL did not end with a CALLRESULT.


class CallFailed(BackendError):
    """A CALL to a charger did not end with a CALLRESULT.

    ``code`` is the OCPP error code (charger CALLERROR) or the router's
    ``failed`` code (docs/streams.md); ``description`` is human-readable.
    """

    code: str = "Failed"

    def __init__(self, description: str = "", *, code: str | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(f"{self.code}: {description}" if description else self.code)
        self.description = description


class ChargerError(CallFailed):
    """The charger answered the CALL with a CALLERROR (or 2.1 CALLRESULTERROR)."""

    def __init__(self, code: str, description: str = "",
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(description, code=code)
        self.details: dict[str, Any] = details or {}


class NotConnected(CallFailed):
    """The charger is not connected (no registry entry, or not on the node any more)."""

    code = "NotConnected"


class CallTimeout(CallFailed, TimeoutError):
    """No answer within the timeout (the charger's, or the router's failed to arrive)."""

    code = "Timeout"


class InvalidPayload(CallFailed, ValueError):
    """The payload is not valid for the action's schema, or the action does not exist."""

    code = "InvalidPayload"


class DeliveryFailed(CallFailed):
    """The router could not deliver the CALL (``QueueFull``, ``Closed``, ``Malformed`` …)."""
