"""Fuzzing the envelope decoder: only documented outcomes, never a crash.

Every input must end as a ``Message``, ``None`` (unknown message type in 1.6 /
2.1) or an ``OCPPJError`` with a valid code, a description of at most 255
characters that echoes nothing of the input, and a message id that is ``"-1"``
or the frame's own id. An independent oracle (Python's ``json`` with strict
UTF-8 and no NaN) decides what is valid JSON, and decoded fields must equal
what it reads. A longer run: ``OCPPJ_FUZZ_EXAMPLES=20000`` (or the atheris target
``python -m tests.ocppj.fuzz_envelope``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import router.ocppj as ocppj
from router.ocppj import errors

EXAMPLES = int(os.environ.get("OCPPJ_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 300, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DIALECTS = [ocppj.dialect(p) for p in ocppj.PROTOCOLS] + [
    ocppj.dialect("ocpp1.6", ocppj.Options(True, True, True))]
MARK = "ZQX"  # planted in every generated string: must never come back in a description

ACTIONS = sorted(ocppj.dialect("ocpp2.1").all_actions | ocppj.dialect("ocpp1.6").all_actions)


def _no_surrogates(value: Any) -> bool:
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(_no_surrogates(v) for v in value)
    if isinstance(value, dict):
        return all(_no_surrogates(k) and _no_surrogates(v) for k, v in value.items())
    return True


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def oracle(data: bytes) -> tuple[bool, Any]:
    """(is valid JSON for us, value)."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
        if data[:1].isspace() is False and data.lstrip()[:1] == b"\xef":  # BOM is not JSON
            return False, None
        return _no_surrogates(value) and _depth(value) <= 256, value
    except ValueError:
        return False, None
    except RecursionError:
        # Python's own parser (or _depth) gave up, around 1,000 levels (fewer
        # under the fuzzing build's sanitizers): far deeper than the 256 the
        # router accepts, so for us this is not JSON either. Found by the
        # ocpp201 fuzz target (tests/fuzz/regressions/ocpp201/).
        return False, None


def _prefix_id(data: bytes) -> str | None:
    """The id of a frame that starts ``[<number>, "<id>"`` (the rest may be broken)."""
    # Invalid UTF-8 after the id does not change the id; inside it, we answer "-1".
    text = data.decode("utf-8", "replace")
    dec = json.JSONDecoder()
    ws = " \t\r\n"
    i = len(text) - len(text.lstrip(ws))
    if text[i:i + 1] != "[":
        return None
    try:
        i += 1
        i += len(text[i:]) - len(text[i:].lstrip(ws))
        _, i = dec.raw_decode(text, i)
        i += len(text[i:]) - len(text[i:].lstrip(ws))
        if text[i:i + 1] != ",":
            return None
        i += 1
        i += len(text[i:]) - len(text[i:].lstrip(ws))
        value, _ = dec.raw_decode(text, i)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def check(d: ocppj.Dialect, data: bytes) -> None:
    ok_json, value = oracle(data)
    try:
        msg = d.decode(data)
    except errors.OCPPJError as exc:
        assert exc.code_for(d.proto) in errors.CODES[d.proto]
        assert len(exc.description) <= 255
        assert MARK not in exc.description
        # The id is answered when it can be read (also from a broken frame).
        assert exc.message_id == "-1" or exc.message_id == _prefix_id(data), (data, exc)
        assert len(exc.message_id) <= 36
        frame = d.error_for(exc)
        assert json.loads(frame)[0] == 4
        if not ok_json:
            assert isinstance(exc, errors.FormatViolation), (data, exc)
        else:
            assert not isinstance(exc, errors.FormatViolation) or (
                isinstance(value, list) and len(value) == 4 and isinstance(value[3], dict)), exc
        return
    assert ok_json, data
    assert isinstance(value, list) and value
    if msg is None:
        assert d.proto != "ocpp2.0.1"
        assert type(value[0]) is not int or value[0] not in ((2, 3, 4, 5, 6) if d.proto == "ocpp2.1"
                                                             else (2, 3, 4))
        return
    assert value[0] == msg.msgtype and value[1] == msg.id and len(msg.id) <= 36
    if msg.msgtype in (2, 6):
        assert msg.action == value[2] and msg.payload is not None
        assert json.loads(msg.payload) == value[3]
    elif msg.msgtype == 3:
        assert msg.payload is not None
        assert json.loads(msg.payload) == (value[2] if value[2] is not None else {})
    else:
        assert msg.code is not None and msg.description == value[3] and msg.details is not None
        assert json.loads(msg.details) == value[4]


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    for d in DIALECTS:
        check(d, data)


text = st.text(max_size=12).map(lambda s: MARK + s)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False,
                                                                         allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
frames = st.tuples(
    st.sampled_from([2, 3, 4, 5, 6, 7, 0, -1, 2.0, "2"]),
    st.one_of(st.text(max_size=40), st.integers(), st.none()),
    st.lists(st.one_of(st.sampled_from(ACTIONS), text, json_values, st.sampled_from(
        ["GenericError", "FormatViolation", "FormationViolation", "RpcFrameworkError"])),
        max_size=4),
).map(lambda t: [t[0], t[1], *t[2]])


@FUZZ
@given(frames, st.booleans())
def test_structured_frames(frame: list[Any], ascii_only: bool) -> None:
    data = json.dumps(frame, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    for d in DIALECTS:
        check(d, data)


@FUZZ
@given(frames, st.data())
def test_mutated_frames(frame: list[Any], data: st.DataObject) -> None:
    raw = bytearray(json.dumps(frame, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(raw)))
        byte = data.draw(st.sampled_from(list(b'[]{}",:\\ 0-.eE\x00\x1f\x80\xc3\xed\xf4\xff')))
        if op == "insert":
            raw.insert(pos, byte)
        elif raw and pos < len(raw):
            if op == "flip":
                raw[pos] = byte
            else:
                del raw[pos]
    for d in DIALECTS:
        check(d, bytes(raw))


@FUZZ
@given(st.sampled_from(ACTIONS), json_values, st.sampled_from(DIALECTS))
def test_validate_paths(action: str, value: Any, d: ocppj.Dialect) -> None:
    payload = json.dumps(value).encode()
    for call in (lambda: d.validate_response(action, payload),
                 lambda: d.validate_request(action, payload, from_charger=True),
                 lambda: d.validate_request(action, payload, from_charger=False)):
        try:
            call()
        except errors.OCPPJError as exc:
            assert len(exc.description) <= 255 and MARK not in exc.description
            assert exc.code_for(d.proto) in errors.CODES[d.proto]
