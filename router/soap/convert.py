"""OCPP 1.5/1.2 payloads ↔ the OCPP 1.6 JSON shapes backends already handle.

Backends see every SOAP charger through the stream contract. A 1.6S payload is
the 1.6 JSON payload as it is. A 1.5S/1.2S message is converted to the 1.6
shape where the mapping is exact — every value the older version can carry has
one 1.6 value with the same meaning — and published in its own names otherwise
(the table in docs/soap.md, "1.5 and 1.2 payloads"). Backend payloads for those
chargers come in the same shape and go through the inverse mapping, then are
checked against the older version's own tables, so a 1.6 value the charger
cannot understand (BootNotification ``Pending``, a ``chargingProfile``) is
refused before it is sent.

Charger → backend (``to_16``):

* MeterValues: ``values`` → ``meterValue``; each ``value`` (text with
  attributes) → a ``sampledValue`` object; units ``Amp``/``Volt`` → ``A``/``V``;
  a 1.2 value (an integer register reading in Wh) → ``{"value": "<n>"}``.
* StopTransaction: ``transactionData[].values[]`` → ``transactionData[]``.
* UnlockConnector response: ``Accepted``/``Rejected`` → ``Unlocked``/``UnlockFailed``.
* StatusNotification (``Occupied``, ``Mode3Error`` have no 1.6 equal) and the
  SendLocalList response (``HashError``, ``hash``): published in 1.5 names.
* Everything else has the 1.6 names and values already.

Backend → charger (``from_16``):

* BootNotification response: ``interval`` → ``heartbeatInterval``.
* SendLocalList request: ``localAuthorizationList`` → ``localAuthorisationList``.
* UnlockConnector, StatusNotification, SendLocalList responses are charger
  answers; nothing to convert that way.
"""

from __future__ import annotations

from typing import Any

_UNITS = {"Amp": "A", "Volt": "V"}

#: (service, action, response) of the messages published in 1.5/1.2 names.
NATIVE = frozenset({("cs", "StatusNotification", False), ("cp", "SendLocalList", True)})


def _sampled(value: Any) -> dict[str, Any]:
    if isinstance(value, int):            # 1.2: one integer reading (Wh register)
        return {"value": str(value)}
    out = dict(value)
    unit = out.get("unit")
    if unit in _UNITS:
        out["unit"] = _UNITS[unit]
    return out


def _meter_value(mv: dict[str, Any]) -> dict[str, Any]:
    return {"timestamp": mv["timestamp"], "sampledValue": [_sampled(v) for v in mv["value"]]
            if isinstance(mv["value"], list) else [_sampled(mv["value"])]}


def to_16(service: str, action: str, response: bool, payload: dict[str, Any]) -> dict[str, Any]:
    """A validated 1.5/1.2 payload in the shape backends get (see the module docs)."""
    if service == "cs" and not response:
        if action == "MeterValues":
            out = {k: v for k, v in payload.items() if k != "values"}
            if "values" in payload:
                out["meterValue"] = [_meter_value(mv) for mv in payload["values"]]
            return out
        if action == "StopTransaction" and "transactionData" in payload:
            out = dict(payload)
            out["transactionData"] = [_meter_value(mv) for td in payload["transactionData"]
                                      for mv in td.get("values", ())]
            return out
    elif service == "cp" and response and action == "UnlockConnector":
        status = str(payload.get("status"))
        return {"status": {"Accepted": "Unlocked", "Rejected": "UnlockFailed"}.get(
            status, status)}
    return payload


def from_16(service: str, action: str, response: bool,
            payload: dict[str, Any]) -> dict[str, Any]:
    """A backend payload (1.6 shape) in 1.5/1.2 names; checked afterwards
    against the version's tables by the writer."""
    if service == "cs" and response and action == "BootNotification" and "interval" in payload:
        out = dict(payload)
        out["heartbeatInterval"] = out.pop("interval")
        return out
    if service == "cp" and not response and action == "SendLocalList" \
            and "localAuthorizationList" in payload:
        out = dict(payload)
        out["localAuthorisationList"] = out.pop("localAuthorizationList")
        return out
    return payload
