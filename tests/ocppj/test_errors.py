"""Error classes: wire codes per version, one mapping, lookup by code."""

from __future__ import annotations

import pytest

from router.ocppj import errors

CLASSES = [errors.FormatViolation, errors.OccurrenceConstraintViolation,
           errors.TypeConstraintViolation, errors.PropertyConstraintViolation,
           errors.ProtocolError, errors.ActionNotImplemented, errors.NotSupported,
           errors.MessageTypeNotSupported, errors.RpcFrameworkError, errors.InternalError,
           errors.GenericError, errors.SecurityError]


@pytest.mark.parametrize("cls", CLASSES)
def test_every_class_has_a_valid_code_per_version(cls: type[errors.OCPPJError]) -> None:
    exc = cls("$: x", message_id="m")
    assert isinstance(exc, errors.OCPPJError) and isinstance(exc, Exception)
    for proto in ("ocpp1.6", "ocpp2.0.1", "ocpp2.1"):
        assert exc.code_for(proto) in errors.error_codes(proto)
    assert errors.error_class(exc.code) is cls


def test_spellings() -> None:
    assert errors.FormatViolation().code_for("ocpp1.6") == "FormationViolation"
    assert errors.FormatViolation().code_for("ocpp2.1") == "FormatViolation"
    assert errors.OccurrenceConstraintViolation().code_for("ocpp1.6") == "OccurenceConstraintViolation"
    assert errors.OccurrenceConstraintViolation().code_for("ocpp2.0.1") == (
        "OccurrenceConstraintViolation")
    assert errors.ActionNotImplemented().code_for("ocpp1.6") == "NotImplemented"
    assert errors.error_class("FormationViolation") is errors.FormatViolation
    assert errors.error_class("OccurenceConstraintViolation") is errors.OccurrenceConstraintViolation
    assert "RpcFrameworkError" not in errors.error_codes("ocpp1.6")
    assert "MessageTypeNotSupported" in errors.error_codes("ocpp2.1")
    with pytest.raises(KeyError):
        errors.error_class("NoSuchCode")


def test_defaults_and_truncation() -> None:
    exc = errors.GenericError("d" * 300)
    assert exc.message_id == "-1" and exc.details == b"{}" and exc.msgtype == 0
    assert len(exc.description) == 255
    assert "GenericError" in repr(exc)
