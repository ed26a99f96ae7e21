"""OCPP-J envelope: decoding rules and error outcomes, encoding, per version."""

from __future__ import annotations

import json

import pytest

import router.ocppj as ocppj
from router.ocppj import Options, errors

D16 = ocppj.dialect("ocpp1.6")
D201 = ocppj.dialect("ocpp2.0.1")
D21 = ocppj.dialect("ocpp2.1")
ALL = [D16, D201, D21]
BOOT16 = b'{"chargePointVendor":"ACME","chargePointModel":"X1"}'
HB = b'[2,"19223201","Heartbeat",{}]'


def raises(d: ocppj.Dialect, data: bytes) -> errors.OCPPJError:
    with pytest.raises(errors.OCPPJError) as info:
        d.decode(data)
    exc = info.value
    assert len(exc.description) <= 255
    assert exc.code_for(d.proto) in errors.CODES[d.proto]
    return exc


# -- the five message types ---------------------------------------------------


@pytest.mark.parametrize("d", ALL, ids=lambda d: d.proto)
def test_call(d: ocppj.Dialect) -> None:
    m = d.decode(HB)
    assert m is not None
    assert (m.msgtype, m.id, m.action, m.payload) == (2, "19223201", "Heartbeat", b"{}")
    assert m.code is m.description is m.details is None


def test_call_keeps_payload_bytes_exactly() -> None:
    payload = b'{ "chargePointVendor" : "AC\\u004dE",\n\t"chargePointModel":"X1\xc3\xa9" }'
    m = D16.decode(b' [ 2 , "a" , "BootNotification" , ' + payload + b' ] \r\n')
    assert m is not None and m.payload == payload


@pytest.mark.parametrize("d", ALL, ids=lambda d: d.proto)
def test_callresult_is_envelope_only(d: ocppj.Dialect) -> None:
    m = d.decode(b'[3,"abc",{"anything":[1,2,{"x":null}]}]')
    assert m is not None
    assert (m.msgtype, m.id, m.action, m.payload) == (3, "abc", None, b'{"anything":[1,2,{"x":null}]}')


@pytest.mark.parametrize(("d", "code"), [(D16, "OccurenceConstraintViolation"),
                                         (D201, "OccurrenceConstraintViolation"),
                                         (D21, "OccurrenceConstraintViolation")])
def test_callerror(d: ocppj.Dialect, code: str) -> None:
    m = d.decode(f'[4,"abc","{code}","missing \\"x\\"",{{"a":[1]}}]'.encode())
    assert m is not None
    assert (m.msgtype, m.id, m.code, m.description, m.details) == (4, "abc", code, 'missing "x"',
                                                                     b'{"a":[1]}')
    assert m.action is None and m.payload is None


def test_callresulterror_and_send_in_21() -> None:
    m = D21.decode(b'[5,"abc","InternalError","",{}]')
    assert m is not None and (m.msgtype, m.code, m.details) == (5, "InternalError", b"{}")
    payload = (b'{"id":1,"pending":0,"basetime":"2026-01-01T00:00:00Z","data":'
               b'[{"t":0.5,"v":"1"}]}')
    m = D21.decode(b'[6,"s1","NotifyPeriodicEventStream",' + payload + b"]")
    assert m is not None and (m.msgtype, m.action, m.payload) == (6, "NotifyPeriodicEventStream",
                                                                  payload)


def test_send_rules() -> None:
    # SEND only for SEND actions, CALL only for CALL actions (OCPP-J 2.1).
    assert isinstance(raises(D21, b'[6,"s","Heartbeat",{}]'), errors.NotSupported)
    assert isinstance(raises(D21, b'[2,"s","NotifyPeriodicEventStream",{}]'), errors.NotSupported)
    exc = raises(D21, b'[6,"s","NotifyPeriodicEventStream",{"id":"x"}]')
    assert exc.msgtype == 6 and exc.message_id == "s"


# -- unknown message types ------------------------------------------------------


@pytest.mark.parametrize("data", [b'[7,"a","X",{}]', b'[0,"a"]', b'[1]', b'[22,"a",{}]',
                                  b'[-2,"a","Heartbeat",{}]', b'[2.0,"a","Heartbeat",{}]',
                                  b'[2e0,"a","Heartbeat",{}]'])
def test_unknown_type_ignored_in_16_and_21(data: bytes) -> None:
    assert D16.decode(data) is None
    assert D21.decode(data) is None


def test_unknown_type_answered_in_201() -> None:
    exc = raises(D201, b'[7,"abc","X",{}]')
    assert isinstance(exc, errors.MessageTypeNotSupported) and exc.message_id == "abc"
    assert D201.error_for(exc) == (b'[4,"abc","MessageTypeNotSupported",'
                                   b'"$[0]: unknown message type",{}]')
    assert raises(D201, b"[9]").message_id == "-1"


@pytest.mark.parametrize("data", [b'[5,"a","InternalError","",{}]', b'[6,"a","Heartbeat",{}]'])
def test_types_5_and_6_exist_only_in_21(data: bytes) -> None:
    assert D16.decode(data) is None
    assert isinstance(raises(D201, data), errors.MessageTypeNotSupported)


def test_unknown_type_with_invalid_json_is_a_format_violation() -> None:
    assert isinstance(raises(D16, b'[7,"a",{]'), errors.FormatViolation)


# -- invalid JSON --------------------------------------------------------------


INVALID_JSON = [
    b"", b" ", b"[", b"[2", b'[2,"a"', b'[2,"a","Heartbeat",{}', b'[2,"a","Heartbeat",{}]]',
    b'[2,"a","Heartbeat",{}] x', b"[2,'a','Heartbeat',{}]", b'[2,"a","Heartbeat",{},]',
    b'[2,"a","Heartbeat",{"a":1,}]', b'[2,"a","Heartbeat",{"a"}]', b'[2,"a","Heartbeat",{a:1}]',
    b'[2,"a","Heartbeat",{"a":01}]', b'[2,"a","Heartbeat",{"a":1.}]', b'[2,"a","Heartbeat",{"a":.5}]',
    b'[2,"a","Heartbeat",{"a":-}]', b'[2,"a","Heartbeat",{"a":1e}]', b'[2,"a","Heartbeat",{"a":NaN}]',
    b'[2,"a","Heartbeat",{"a":Infinity}]', b'[2,"a","Heartbeat",{"a":tru}]', b'[2,"a","Heartbeat",{"a":nul}]',
    b'[2,"a","Heartbeat",{"a":"x\ny"}]', b'[2,"a","Heartbeat",{"a":"\\x"}]', b'[2,"a","Heartbeat",{"a":"\\u12"}]',
    b'[2,"a","Heartbeat",{"a":"\\ud800"}]', b'[2,"a","Heartbeat",{"a":"\\udc00"}]',
    b'[2,"a","Heartbeat",{"a":"\\ud800\\u0041"}]', b'[2,"a","Heartbeat",{"a":"\xff"}]',
    b'[2,"a","Heartbeat",{"a":"\xc0\xaf"}]', b'[2,"a","Heartbeat",{"a":"\xed\xa0\x80"}]',
    b'[2,"a","Heartbeat",{"a":"\xf4\x90\x80\x80"}]', b'[2,"a","Heartbeat",{"a":"\xe2\x82"}]',
    b'[2,"a","Heartbeat",{"a":\xc3\xa9}]', b'\xef\xbb\xbf[2,"a","Heartbeat",{}]',
    b'[2,"a","Heartbeat",{}]\x00', b'[6,"a","X",{"a":1,,}]', b'[2,"a","Nope",{"a":1,,}]',
    b'[2,5,"Heartbeat",{"a":1,,}]', b'[2,"a","Heartbeat",{"a":1,,},1]', b'[2,"a","Heartbeat",{"a":[1}}]',
    b'[2,"a","Reset",{"a":01}]', b'[2,"a","Heartbeat",{"a":"\xff"}]', b'[9,"a","X",{"a":tru}]',
    b'[2,"a","Heartbeat",{"a":[' + b"[" * 300 + b"]" * 300 + b"]}]",
]


@pytest.mark.parametrize("d", ALL, ids=lambda d: d.proto)
@pytest.mark.parametrize("data", INVALID_JSON)
def test_invalid_json_is_a_format_violation(d: ocppj.Dialect, data: bytes) -> None:
    exc = raises(d, data)
    assert isinstance(exc, errors.FormatViolation)
    assert exc.code_for(d.proto) == ("FormationViolation" if d.proto == "ocpp1.6" else "FormatViolation")
    assert exc.description.startswith("$: invalid JSON (")
    # Raw input is never echoed (only our own words and a byte offset).
    assert "Heartbeat" not in exc.description and "\\" not in exc.description


def test_invalid_json_id_is_read_when_possible() -> None:
    assert raises(D201, b'[2,"abc","Heartbeat",{]').message_id == "abc"
    assert raises(D201, b'[2,"abc"').message_id == "abc"
    assert raises(D201, b'[2,"ab').message_id == "-1"
    assert raises(D201, b'[2,"abc\xff","Heartbeat",{}]').message_id == "-1"
    assert raises(D201, b"{").message_id == "-1"


def test_every_prefix_of_a_valid_message_is_a_format_violation() -> None:
    frame = b'[2, "\xc3\xa9\\u00e9", "BootNotification", ' + BOOT16 + b"]"
    assert D16.decode(frame) is not None
    for i in range(len(frame)):
        assert isinstance(raises(D16, frame[:i]), errors.FormatViolation), frame[:i]


def test_deep_nesting_limit() -> None:
    # 256 levels in total are accepted (the top-level array is level 1).
    ok = b'[3,"a",{"a":' + b"[" * 254 + b"]" * 254 + b"}]"
    assert D201.decode(ok) is not None
    deep = b'[3,"a",{"a":' + b"[" * 255 + b"]" * 255 + b"}]"
    assert "nesting too deep" in raises(D201, deep).description


# -- envelope structure ------------------------------------------------------------


@pytest.mark.parametrize(("data", "message_id"), [
    (b"{}", "-1"), (b'"x"', "-1"), (b"2", "-1"), (b"null", "-1"), (b"[]", "-1"),
    (b'["2","a","Heartbeat",{}]', "-1"), (b'[null,"a","Heartbeat",{}]', "-1"),
    (b'[2,1,"Heartbeat",{}]', "-1"), (b'[2,null,"Heartbeat",{}]', "-1"), (b"[2]", "-1"),
    (b'[2,"' + b"a" * 37 + b'","Heartbeat",{}]', "-1"),
    (b'[2,"a","Heartbeat"]', "a"), (b'[2,"a","Heartbeat",{},{}]', "a"), (b'[3,"a"]', "a"),
    (b'[3,"a",{},1]', "a"), (b'[4,"a","GenericError",""]', "a"), (b'[2,"a",5,{}]', "a"),
    (b'[2,"a",null,{}]', "a"),
])
def test_structure_errors(data: bytes, message_id: str) -> None:
    exc16 = raises(D16, data)
    exc201 = raises(D201, data)
    assert isinstance(exc201, errors.RpcFrameworkError)
    assert exc201.code_for("ocpp2.0.1") == "RpcFrameworkError"
    assert exc16.code_for("ocpp1.6") == "FormationViolation"
    assert exc16.message_id == exc201.message_id == message_id


def test_message_id_rules() -> None:
    for mid in ["", "-1", "a" * 36, "é" * 36, "\U0001f600" * 36]:
        frame = json.dumps([2, mid, "Heartbeat", {}]).encode()
        m = D201.decode(frame)
        assert m is not None and m.id == mid
        m = D201.decode(json.dumps([2, mid, "Heartbeat", {}], ensure_ascii=False).encode())
        assert m is not None and m.id == mid
    for mid in ["a" * 37, "é" * 37]:
        assert raises(D201, json.dumps([2, mid, "Heartbeat", {}]).encode()).message_id == "-1"
    m = D201.decode(b'[2,"a\\"b\\\\c","Heartbeat",{}]')
    assert m is not None and m.id == 'a"b\\c'


def test_action_rules() -> None:
    exc = raises(D16, b'[2,"a","Reset",{"type":"Hard"}]')
    assert isinstance(exc, errors.NotSupported) and exc.code_for("ocpp1.6") == "NotSupported"
    exc = raises(D16, b'[2,"a","TransactionEvent",{}]')
    assert isinstance(exc, errors.ActionNotImplemented)
    assert exc.code_for("ocpp1.6") == "NotImplemented" and exc.message_id == "a"
    assert "TransactionEvent" not in exc.description
    assert isinstance(raises(D201, b'[2,"a","StartTransaction",{}]'), errors.ActionNotImplemented)
    assert isinstance(raises(D201, b'[2,"a","BatterySwap",{}]'), errors.ActionNotImplemented)
    assert isinstance(raises(D21, b'[2,"a","heartbeat",{}]'), errors.ActionNotImplemented)
    m = D16.decode(b'[2,"a","Heart\\u0062eat",{}]')
    assert m is not None and m.action == "Heartbeat"


@pytest.mark.parametrize("payload", [b"[]", b'"x"', b"1", b"true", b"null"])
def test_payload_must_be_an_object(payload: bytes) -> None:
    exc = raises(D16, b'[2,"a","Heartbeat",' + payload + b"]")
    assert isinstance(exc, errors.TypeConstraintViolation) and exc.description.startswith("$[3]:")
    exc = raises(D16, b'[3,"a",' + payload + b"]")
    assert isinstance(exc, errors.TypeConstraintViolation) and exc.description.startswith("$[2]:")


def test_callerror_checks() -> None:
    assert isinstance(raises(D16, b'[4,"a",1,"",{}]'), errors.TypeConstraintViolation)
    assert isinstance(raises(D16, b'[4,"a","Nope","",{}]'), errors.PropertyConstraintViolation)
    assert isinstance(raises(D16, b'[4,"a","GenericError",null,{}]'), errors.TypeConstraintViolation)
    assert isinstance(raises(D16, b'[4,"a","GenericError","",[]]'), errors.TypeConstraintViolation)
    assert isinstance(raises(D16, b'[4,"a","GenericError","",null]'), errors.TypeConstraintViolation)
    # Spellings are per version unless lenient.
    assert isinstance(raises(D16, b'[4,"a","FormatViolation","",{}]'), errors.PropertyConstraintViolation)
    assert isinstance(raises(D201, b'[4,"a","FormationViolation","",{}]'),
                      errors.PropertyConstraintViolation)
    assert isinstance(raises(D201, b'[4,"a","OccurenceConstraintViolation","",{}]'),
                      errors.PropertyConstraintViolation)
    assert D201.decode(b'[4,"a","RpcFrameworkError","",{}]') is not None
    assert isinstance(raises(D16, b'[4,"a","RpcFrameworkError","",{}]'),
                      errors.PropertyConstraintViolation)
    # 2.x: errorDescription is string[0..255]; 1.6 sets no limit.
    long = json.dumps([4, "a", "GenericError", "d" * 256, {}]).encode()
    assert D16.decode(long) is not None
    exc = raises(D201, long)
    assert isinstance(exc, errors.PropertyConstraintViolation) and exc.msgtype == 4
    assert D201.decode(json.dumps([4, "a", "GenericError", "é" * 255, {}]).encode()) is not None


def test_buffer_types() -> None:
    for data in (bytearray(HB), memoryview(HB), memoryview(b"xx" + HB)[2:]):
        m = D16.decode(data)
        assert m is not None and m.id == "19223201"
    with pytest.raises(TypeError):
        D16.decode("text")  # type: ignore[arg-type]


# -- options --------------------------------------------------------------------


def test_null_payload_option() -> None:
    d = ocppj.dialect("ocpp1.6", Options(null_payload_as_empty=True))
    m = d.decode(b'[2,"a","Heartbeat",null]')
    assert m is not None and m.payload == b"{}"
    m = d.decode(b'[3,"a",null]')
    assert m is not None and m.payload == b"{}"
    # Still validated as {}: BootNotification has required fields.
    assert isinstance(raises(d, b'[2,"a","BootNotification",null]'),
                      errors.OccurrenceConstraintViolation)


def test_lenient_error_codes_option() -> None:
    d16 = ocppj.dialect("ocpp1.6", Options(lenient_error_codes=True))
    m = d16.decode(b'[4,"a","FormatViolation","",{}]')
    assert m is not None and m.code == "FormationViolation"
    m = d16.decode(b'[4,"a","OccurrenceConstraintViolation","",{}]')
    assert m is not None and m.code == "OccurenceConstraintViolation"
    d201 = ocppj.dialect("ocpp2.0.1", Options(lenient_error_codes=True))
    m = d201.decode(b'[4,"a","FormationViolation","",{}]')
    assert m is not None and m.code == "FormatViolation"
    m = d201.decode(b'[4,"a","OccurenceConstraintViolation","",{}]')
    assert m is not None and m.code == "OccurrenceConstraintViolation"
    assert isinstance(raises(d201, b'[4,"a","Bogus","",{}]'), errors.PropertyConstraintViolation)


DATES_OK = ["2026-11-21T12:00:00Z", "2026-11-21T12:00:00.123Z", "2026-11-21T12:00:00+01:00",
            "2024-02-29T23:59:60z", "2026-11-21t12:00:00.1-05:30"]
DATES_BAD = ["2026-11-21 12:00:00Z", "2026-11-21T12:00:00", "2026-11-21", "2023-02-29T00:00:00Z",
             "2026-13-01T00:00:00Z", "2026-11-21T24:00:00Z", "2026-11-21T12:00:00+1:00",
             "21/11/2026", "", "2026-11-21T12:00Z", "2026-11-21T12:00:00.Z", "\uff12\uff10\uff12\uff16-11-21T12:00:00Z"]


@pytest.mark.parametrize("value", DATES_OK + DATES_BAD)
def test_datetime_default_accepts_any_string(value: str) -> None:
    payload = json.dumps({"currentTime": value, "interval": 300, "status": "Accepted"}).encode()
    D16.validate_response("BootNotification", payload)


@pytest.mark.parametrize("value", DATES_OK)
def test_strict_datetime_accepts_rfc3339(value: str) -> None:
    d = ocppj.dialect("ocpp2.0.1", Options(strict_datetime=True))
    d.decode(json.dumps([2, "a", "StatusNotification", {
        "timestamp": value, "connectorStatus": "Available", "evseId": 1, "connectorId": 1}]).encode())


@pytest.mark.parametrize("value", DATES_BAD)
def test_strict_datetime_rejects_other_forms(value: str) -> None:
    d = ocppj.dialect("ocpp1.6", Options(strict_datetime=True))
    payload = {"connectorId": 1, "meterValue": [
        {"timestamp": "2026-11-21T12:00:00Z", "sampledValue": [{"value": "1"}]},
        {"timestamp": value, "sampledValue": [{"value": "1"}]}]}
    frame = json.dumps([2, "a", "MeterValues", payload]).encode()
    exc = raises(d, frame)
    assert isinstance(exc, errors.PropertyConstraintViolation)
    assert exc.description == "$.meterValue[1].timestamp: not an RFC 3339 date-time"
    # On the slow path (msgspec rejects the draft-06 integer 1.0, JSON Schema
    # accepts it) the date-time is classified the same way.
    d201 = ocppj.dialect("ocpp2.0.1", Options(strict_datetime=True))
    exc = raises(d201, json.dumps([2, "a", "StatusNotification", {
        "timestamp": value, "connectorStatus": "Available", "evseId": 1.0, "connectorId": 1}]).encode())
    assert exc.description == "$.timestamp: not an RFC 3339 date-time"
    with pytest.raises(errors.PropertyConstraintViolation):
        d.validate_response("BootNotification", json.dumps(
            {"currentTime": value, "interval": 1, "status": "Accepted"}).encode())
    with pytest.raises(errors.PropertyConstraintViolation):
        ocppj.decode_payload("ocpp1.6", "MeterValues", json.dumps(payload).encode(), response=False,
                             strict_datetime=True)


# -- validate_* ---------------------------------------------------------------------


def test_validate_request_directions() -> None:
    D16.validate_request("Reset", b'{"type":"Hard"}', from_charger=False)
    D16.validate_request("BootNotification", BOOT16, from_charger=True)
    with pytest.raises(errors.NotSupported):
        D16.validate_request("Reset", b'{"type":"Hard"}', from_charger=True)
    with pytest.raises(errors.NotSupported):
        D16.validate_request("BootNotification", BOOT16, from_charger=False)
    with pytest.raises(errors.ActionNotImplemented):
        D16.validate_request("Nope", b"{}", from_charger=False)
    D16.validate_request("DataTransfer", b'{"vendorId":"v"}', from_charger=False)
    D16.validate_request("DataTransfer", b'{"vendorId":"v"}', from_charger=True)
    with pytest.raises(errors.PropertyConstraintViolation) as info:
        D16.validate_request("Reset", b'{"type":"Warm"}', from_charger=False, message_id="m7")
    assert info.value.message_id == "m7" and info.value.description.startswith("$.type:")


@pytest.mark.parametrize("payload", [b"", b"  ", b"{", b'{"type":"Hard"} {}', b"[]", b"null",
                                     b'{"type":"Hard\xff"}'])
def test_validate_request_rejects_non_objects(payload: bytes) -> None:
    with pytest.raises((errors.FormatViolation, errors.TypeConstraintViolation)):
        D16.validate_request("Reset", payload, from_charger=False)


def test_validate_response() -> None:
    D201.validate_response("Heartbeat", b'{"currentTime":"2026-11-21T12:00:00Z"}')
    with pytest.raises(errors.OccurrenceConstraintViolation):
        D201.validate_response("Heartbeat", b"{}")
    with pytest.raises(errors.ActionNotImplemented):
        D201.validate_response("Nope", b"{}")
    with pytest.raises(errors.NotSupported):
        D21.validate_response("NotifyPeriodicEventStream", b"{}")


# -- encoding -------------------------------------------------------------------------


def test_encoders() -> None:
    assert D16.encode_call("1", "Reset", b'{"type":"Hard"}') == b'[2,"1","Reset",{"type":"Hard"}]'
    assert D16.encode_result("1", b"{}") == b'[3,"1",{}]'
    assert D21.encode_send("s", "X", b"{}") == b'[6,"s","X",{}]'
    with pytest.raises(ValueError, match=r"2\.1"):
        D201.encode_send("s", "X", b"{}")
    assert D16.encode_error("1", "GenericError", "") == b'[4,"1","GenericError","",{}]'
    frame = D16.encode_call('q"\\\n\u00e9\U0001f600', "Reset", b"{}")
    assert json.loads(frame) == [2, 'q"\\\n\u00e9\U0001f600', "Reset", {}]
    with pytest.raises(ValueError, match="36"):
        D16.encode_call("x" * 37, "Reset", b"{}")


@pytest.mark.parametrize("msg_id", ["1", "a" * 36, "", 'q"', "back\\slash", "tab\t", "del\x7f",
                                    "\u00e9t\u00e9", "\U0001f600", " spaced id "])
def test_encode_result_any_id(msg_id: str) -> None:
    # The one-allocation path (printable ASCII) and the escaping path agree
    # with a JSON parser on every id.
    frame = D16.encode_result(msg_id, b'{"status":"Accepted"}')
    assert json.loads(frame) == [3, msg_id, {"status": "Accepted"}]
    if msg_id.isascii() and msg_id.isprintable() and '"' not in msg_id and "\\" not in msg_id:
        assert frame == b'[3,"' + msg_id.encode() + b'",{"status":"Accepted"}]'
    with pytest.raises(ValueError, match="36"):
        D16.encode_result("x" * 37, b"{}")


def test_encode_error_description_and_details() -> None:
    frame = D201.encode_error("1", "GenericError", '"\\' * 200, b'{"a": [1]}')
    parsed = json.loads(frame)
    assert parsed[3] == '"\\' * 127 + '"' and parsed[4] == {"a": [1]}
    assert len(json.loads(D201.encode_error("1", "GenericError", "é" * 300))[3]) == 255
    for bad in (b"[]", b"{", b"", b"null"):
        with pytest.raises(ValueError):
            D201.encode_error("1", "GenericError", "", bad)


def test_encode_error_respells_codes() -> None:
    assert json.loads(D16.encode_error("1", "FormatViolation", ""))[2] == "FormationViolation"
    assert json.loads(D16.encode_error("1", "OccurrenceConstraintViolation", ""))[2] == (
        "OccurenceConstraintViolation")
    assert json.loads(D201.encode_error("1", "FormationViolation", ""))[2] == "FormatViolation"
    assert json.loads(D21.encode_error("1", "OccurenceConstraintViolation", ""))[2] == (
        "OccurrenceConstraintViolation")
    with pytest.raises(ValueError):
        D16.encode_error("1", "RpcFrameworkError", "")
    with pytest.raises(ValueError):
        D201.encode_error("1", "NoSuchCode", "")


@pytest.mark.parametrize("d", ALL, ids=lambda d: d.proto)
def test_error_for_round_trips(d: ocppj.Dialect) -> None:
    exc = raises(d, b'[2,"abc","Heartbeat",{"x":1}]')
    m = d.decode(d.error_for(exc))
    assert m is not None and m.msgtype == 4 and m.id == "abc"
    assert m.code == exc.code_for(d.proto) and m.description == exc.description


# -- dialect() ------------------------------------------------------------------------


def test_dialect_cache_and_unknown() -> None:
    assert ocppj.dialect("ocpp1.6") is D16
    assert ocppj.dialect("ocpp1.6", Options(strict_datetime=True)) is not D16
    assert ocppj.PROTOCOLS == ("ocpp2.1", "ocpp2.0.1", "ocpp1.6")
    for bad in ("ocpp2.0", "OCPP1.6", ""):
        with pytest.raises(KeyError):
            ocppj.dialect(bad)
        with pytest.raises(ValueError):
            ocppj.dialect(bad)
    assert D16.proto == "ocpp1.6" and "BootNotification" in D16.charger_actions
    assert "Reset" in D16.csms_actions and "Reset" not in D16.charger_actions
