"""OCPP-J: envelope decoding, schema validation and encoding for 1.6, 2.0.1 and 2.1.

A :class:`Dialect` per WebSocket subprotocol decodes charger messages
(:meth:`Dialect.decode`), validates payloads in both directions
(:meth:`Dialect.validate_request`, :meth:`Dialect.validate_response`) and
encodes frames (``encode_*``). Every error that must be answered with a
CALLERROR is an :class:`~router.ocppj.errors.OCPPJError` whose code is spelled
for the version (:meth:`Dialect.error_for` builds the frame).

Validation uses msgspec types generated from the official OCA JSON schemas
(``router/ocppj/schemas``, ``router/ocppj/_generated``); the verdict equals a
JSON Schema draft-04/06 validator's (see docs/ocppj.md for the rules, the error
code mapping and the tolerance options). The typed message classes are public:
``router.ocppj.v16``, ``router.ocppj.v201``, ``router.ocppj.v21`` or
``types(proto)``, and :func:`decode_payload` decodes into them.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

import msgspec

from router.ocppj import errors
from router.ocppj._envelope import Core, Message, scan
from router.ocppj._runtime import first_bad_datetime
from router.ocppj._walker import first_violation, load_schema
from router.ocppj.actions import DIRECTIONS
from router.ocppj.errors import OCPPJError

__all__ = [
    "PROTOCOLS",
    "Dialect",
    "Message",
    "OCPPJError",
    "Options",
    "UnknownProtocol",
    "decode_payload",
    "dialect",
    "errors",
    "types",
]

#: WebSocket subprotocol names (RFC 6455 §1.9), in order of preference.
PROTOCOLS: tuple[str, ...] = ("ocpp2.1", "ocpp2.0.1", "ocpp1.6")

# Generated modules are imported on first use: each takes tens of milliseconds
# to import (hundreds of Struct classes), and a deployment may use one version.
_MODULES: dict[str, str] = {
    "ocpp1.6": "router.ocppj._generated.v16",
    "ocpp2.0.1": "router.ocppj._generated.v201",
    "ocpp2.1": "router.ocppj._generated.v21",
}
_VERSION_TEXT = {"ocpp1.6": "OCPP 1.6", "ocpp2.0.1": "OCPP 2.0.1", "ocpp2.1": "OCPP 2.1"}


class UnknownProtocol(KeyError, ValueError):
    """Not one of :data:`PROTOCOLS`."""


@dataclass(frozen=True)
class Options:
    """Validation options of a dialect; all off by default (docs/ocppj.md).

    Attributes:
        strict_datetime: check ``format: date-time`` fields as RFC 3339 §5.6
            date-times. Off: any string is accepted, as JSON Schema draft-04/06
            validators do by default (format is an annotation there).
        null_payload_as_empty: a charger's ``null`` payload is treated as ``{}``
            (and published as ``{}``); some firmwares send ``[2,"1","Heartbeat",null]``.
        lenient_error_codes: accept both spellings of FormationViolation /
            FormatViolation and OccurenceConstraintViolation /
            OccurrenceConstraintViolation in CALLERRORs from chargers; the
            decoded ``Message.code`` is normalised to the version's spelling.
    """

    strict_datetime: bool = False
    null_payload_as_empty: bool = False
    lenient_error_codes: bool = False


def types(proto: str) -> ModuleType:
    """The module of generated msgspec types for ``proto``.

    ``types("ocpp1.6").BootNotificationRequest`` is the same class as
    ``router.ocppj.v16.BootNotificationRequest``; the module also has
    ``REQUESTS`` / ``RESPONSES`` (action -> type).

    Args:
        proto: one of :data:`PROTOCOLS`.

    Raises:
        UnknownProtocol: ``proto`` is not supported.
    """
    try:
        name = _MODULES[proto]
    except KeyError:
        raise UnknownProtocol(proto) from None
    return importlib.import_module(name)


class Dialect(Core):
    """OCPP-J for one subprotocol; get one with :func:`dialect` (cached).

    Attributes:
        proto: the subprotocol name (``"ocpp1.6"`` …).
        options: the :class:`Options` in force.
        charger_actions: actions a charger may send as CALL.
        csms_actions: actions a CSMS may send as CALL.
        send_actions: actions a charger may send as SEND (OCPP 2.1).
        all_actions: every action of the version.
        error_codes: the CALLERROR codes of the version.

    ``decode``, ``validate_*`` and ``encode_*`` are implemented in the compiled
    core (``router.ocppj._envelope``); their contracts are documented in the
    stub ``router/ocppj/_envelope.pyi`` and in docs/ocppj.md.
    """

    options: Options
    charger_actions: frozenset[str]
    csms_actions: frozenset[str]
    send_actions: frozenset[str]
    all_actions: frozenset[str]
    error_codes: frozenset[str]

    def __init__(self, proto: str, options: Options = Options()) -> None:
        module = types(proto)
        charger, csms, send = DIRECTIONS[proto]
        self.options = options
        self.charger_actions = charger
        self.csms_actions = csms
        self.send_actions = send
        self.all_actions = charger | csms | send
        self.error_codes = errors.CODES[proto]
        self._module = module

        def decoders(actions: frozenset[str], table: dict[str, type[msgspec.Struct]]) -> dict[str, Any]:
            # Bound ``decode`` methods, built once per action (msgspec's fast path).
            return {a: msgspec.json.Decoder(table[a]).decode for a in sorted(actions)}

        accepted = self.error_codes
        respell: dict[str, str] = {}
        if options.lenient_error_codes:
            for other, ours in errors.RESPELL.items():
                if ours in self.error_codes and other not in self.error_codes:
                    respell[other] = ours
            accepted = accepted | frozenset(respell)
        super().__init__(
            proto,
            decoders(charger, module.REQUESTS),
            decoders(send, module.REQUESTS),
            decoders(csms, module.REQUESTS),
            decoders(frozenset(module.RESPONSES), module.RESPONSES),
            accepted,
            respell,
            options.strict_datetime,
            options.null_payload_as_empty,
            options.lenient_error_codes,
            self._invalid,
            self._post_check,
        )

    def __repr__(self) -> str:
        return f"Dialect({self.proto!r}, {self.options!r})"

    def error_for(self, exc: OCPPJError) -> bytes:
        """The CALLERROR frame answering ``exc`` (code spelled for this version).

        Args:
            exc: an error raised by ``decode`` / ``validate_*``.
        """
        return self.encode_error(exc.message_id, exc.code_for(self.proto), exc.description, exc.details)

    # -- error path (called by the compiled core) ----------------------------

    def _invalid(self, action: str, payload: bytes, response: bool, message_id: str, msgtype: int) -> None:
        # msgspec rejected the payload: re-check with JSON Schema semantics to
        # classify it, or accept it when only msgspec's stricter types objected.
        key = f"{action}:{'response' if response else 'request'}"
        schema = load_schema(self._module.SCHEMA_FILES[key])
        try:
            value = json.loads(payload)
        except ValueError:
            raise errors.FormatViolation("$: invalid JSON", message_id=message_id, msgtype=msgtype) from None
        found = first_violation(schema, value, strict_datetime=self.options.strict_datetime)
        if found is not None:
            raise found.error(message_id, msgtype)

    def _post_check(self, action: str, response: bool, obj: Any, message_id: str, msgtype: int) -> None:
        # Strict mode, after a successful decode: date-time fields are RFC 3339.
        path = first_bad_datetime(obj, self._module.DATETIME_FIELDS)
        if path is not None:
            raise errors.PropertyConstraintViolation(
                f"{path}: not an RFC 3339 date-time", message_id=message_id, msgtype=msgtype
            )


@cache
def dialect(proto: str, options: Options = Options()) -> Dialect:
    """The (cached) :class:`Dialect` for a subprotocol and options.

    Args:
        proto: one of :data:`PROTOCOLS`, e.g. the subprotocol the handshake agreed.
        options: validation options.

    Raises:
        UnknownProtocol: ``proto`` is not supported (a ``KeyError`` and a ``ValueError``).
    """
    types(proto)
    return Dialect(proto, options)


@cache
def _typed_decoder(proto: str, action: str, response: bool) -> tuple[type[msgspec.Struct], Any, str]:
    module = types(proto)
    table: dict[str, type[msgspec.Struct]] = module.RESPONSES if response else module.REQUESTS
    cls = table[action]
    return cls, msgspec.json.Decoder(cls).decode, module.SCHEMA_FILES[f"{action}:{'response' if response else 'request'}"]


def decode_payload(
    proto: str, action: str, payload: bytes, *, response: bool, strict_datetime: bool = False
) -> msgspec.Struct:
    """Decode and validate a payload into its generated type.

    For backend code: ``decode_payload("ocpp1.6", "BootNotification", raw,
    response=False)`` returns a ``router.ocppj.v16.BootNotificationRequest``.

    Args:
        proto: one of :data:`PROTOCOLS`.
        action: the OCPP action.
        payload: the JSON payload bytes.
        response: decode as the action's response (CALLRESULT) type.
        strict_datetime: also check date-time fields as RFC 3339.

    Raises:
        UnknownProtocol: ``proto`` is not supported.
        OCPPJError: the action is unknown (``ActionNotImplemented`` / ``NotSupported``)
            or the payload is invalid (same classification as :meth:`Dialect.decode`).
    """
    module = types(proto)
    try:
        cls, decode, schema_file = _typed_decoder(proto, action, response)
    except KeyError:
        names = set(module.REQUESTS) | set(module.RESPONSES)
        if action in names:
            raise errors.NotSupported("$: action has no such message in this direction") from None
        raise errors.ActionNotImplemented(f"$: action not implemented in {_VERSION_TEXT[proto]}") from None
    try:
        obj: msgspec.Struct = decode(payload)
    except msgspec.DecodeError:
        try:
            scan(payload)
            value = json.loads(payload)
        except ValueError:
            raise errors.FormatViolation("$: invalid JSON") from None
        found = first_violation(load_schema(schema_file), value, strict_datetime=strict_datetime)
        if found is not None:
            raise found.error() from None
        # Valid by JSON Schema, rejected only by msgspec's stricter types
        # (e.g. 1.0 for an integer in draft-06): convert the value instead.
        obj = msgspec.convert(value, cls, strict=False)
    else:
        if strict_datetime:
            path = first_bad_datetime(obj, module.DATETIME_FIELDS)
            if path is not None:
                raise errors.PropertyConstraintViolation(f"{path}: not an RFC 3339 date-time")
    return obj
