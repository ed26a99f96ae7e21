"""Type stub of the compiled OCPP-J envelope core (ext/router/ocppj/_envelope.pyx)."""

from collections.abc import Callable
from typing import Any, final

@final
class Message:
    """One decoded OCPP-J message; fields are None where the type has none."""

    @property
    def msgtype(self) -> int:
        """2 CALL, 3 CALLRESULT, 4 CALLERROR, 5 CALLRESULTERROR, 6 SEND."""
    @property
    def id(self) -> str:
        """Message id (≤ 36 characters)."""
    @property
    def action(self) -> str | None:
        """Action of a CALL / SEND."""
    @property
    def payload(self) -> bytes | None:
        """Payload bytes exactly as received (CALL / CALLRESULT / SEND)."""
    @property
    def code(self) -> str | None:
        """Error code of a CALLERROR / CALLRESULTERROR."""
    @property
    def description(self) -> str | None:
        """Error description of a CALLERROR / CALLRESULTERROR."""
    @property
    def details(self) -> bytes | None:
        """Error details (exact JSON object bytes) of a CALLERROR / CALLRESULTERROR."""

class Core:
    @property
    def proto(self) -> str: ...
    def __init__(
        self,
        proto: str,
        call_decoders: dict[str, Any],
        send_decoders: dict[str, Any],
        csms_decoders: dict[str, Any],
        response_decoders: dict[str, Any],
        error_codes: frozenset[str],
        respell: dict[str, str],
        strict_datetime: bool,
        null_payload_as_empty: bool,
        lenient_error_codes: bool,
        invalid: Callable[[str, bytes, bool, str, int], None],
        post_check: Callable[[str, bool, Any, str, int], None],
    ) -> None: ...
    def decode(self, data: bytes | bytearray | memoryview) -> Message | None:
        """Decode one WebSocket text message from a charger.

        Returns None for an unknown message type that must be ignored (OCPP 1.6
        and 2.1). CALL / SEND: the action must be one a charger may send in this
        version and the payload must match its request schema. CALLRESULT:
        envelope only (validate the payload with ``validate_response`` once the
        pending CALL's action is known). CALLERROR / CALLRESULTERROR: envelope,
        code, description and details.

        Raises:
            OCPPJError: anything that must be answered with a CALLERROR; its
                ``message_id`` is ``"-1"`` when the id could not be read.
        """
    def validate_response(self, action: str, payload: bytes, *, message_id: str = "-1") -> None:
        """Validate a CALLRESULT payload against the response schema of ``action``.

        Raises:
            OCPPJError: unknown action (ActionNotImplemented), action without a
                response (NotSupported) or invalid payload.
        """
    def validate_request(
        self, action: str, payload: bytes, *, from_charger: bool, message_id: str = "-1"
    ) -> None:
        """Validate a CALL payload against the request schema of ``action``.

        Args:
            from_charger: True for a charger's CALL, False for a CSMS's CALL.

        Raises:
            OCPPJError: ActionNotImplemented (unknown action), NotSupported
                (wrong direction) or the payload's violation.
        """
    def validate_send(
        self, action: str, payload: bytes, *, from_charger: bool = True, message_id: str = "-1"
    ) -> None:
        """Validate a SEND payload (OCPP 2.1).

        Raises:
            OCPPJError: as ``validate_request``.
        """
    def encode_call(self, id: str, action: str, payload: bytes) -> bytes:
        """``[2, id, action, payload]``.

        Raises:
            ValueError: ``id`` longer than 36 characters.
        """
    def encode_send(self, id: str, action: str, payload: bytes) -> bytes:
        """``[6, id, action, payload]`` (OCPP 2.1 only).

        Raises:
            ValueError: not OCPP 2.1, or ``id`` longer than 36 characters.
        """
    def encode_result(self, id: str, payload: bytes) -> bytes:
        """``[3, id, payload]``.

        Raises:
            ValueError: ``id`` longer than 36 characters.
        """
    def encode_error(self, id: str, code: str, description: str, details: bytes = b"{}") -> bytes:
        """``[4, id, code, description, details]``; description cut to 255 characters.

        The two codes spelled differently in 1.6 and 2.x are respelled for the
        version.

        Raises:
            ValueError: ``code`` is not an error code of the version, ``details``
                is not a JSON object, or ``id`` is longer than 36 characters.
        """

def scan(data: bytes | bytearray | memoryview) -> None:
    """Validate that ``data`` is exactly one JSON value.

    Raises:
        ValueError: not valid JSON (RFC 8259, UTF-8, paired surrogates, depth ≤ 256).
    """
