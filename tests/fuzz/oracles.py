"""Fuzz targets with an independent oracle (differential fuzzing).

- ``ocpp16`` / ``ocpp201`` / ``ocpp21``: the OCPP-J envelope decoder of each
  version (``Dialect.decode``: JSON, message types, ids, actions, and the
  payload validation of charger CALLs) with the invariants of
  tests/ocppj/test_fuzz.py (Python's ``json`` decides what is JSON); or, when
  the first byte is odd, one payload validated against one schema of that
  version (two bytes pick the schema) by the router and by ``jsonschema`` — the
  verdicts must agree (the router may be stricter only on ``format``:
  jsonschema does not check ``date-time`` by default).
- ``resp``: the RESP2 reply reader (``ReplyReader``) against hiredis, on input
  cut into input-chosen chunks; replies must be equal, and whatever hiredis
  rejects we must reject too; the XREAD form (``gets_xread``) on the same bytes
  must not crash and must agree with ``gets`` on what is a stream reply.
"""

from __future__ import annotations

import decimal
import json
import re
from functools import cache
from typing import Any

import hiredis
import jsonschema

import router.ocppj as ocppj
from router.ocppj import errors
from router.ocppj._walker import KEYWORD_ERROR, SCHEMAS
from router.ocppj.codegen import VERSION_DIRS, _schema_files
from router.streams._resp import ReplyReader
from router.streams.errors import RedisProtocolError, RedisReplyError
from tests.ocppj.test_fuzz import check
from tests.resp import encode_reply

VERSIONS = {"ocpp16": "ocpp1.6", "ocpp201": "ocpp2.0.1", "ocpp21": "ocpp2.1"}


@cache
def schemas(proto: str) -> list[tuple[str, bool, str]]:
    """(action, is_response, path under SCHEMAS) of every schema of ``proto``."""
    vdir = VERSION_DIRS[proto]
    return [(action, response, f"{vdir}/{path.name}")
            for action, _cls, response, path in _schema_files(vdir)]


@cache
def validator(relpath: str) -> tuple[Any, bool]:
    """jsonschema's validator for one schema, and whether numbers parse as
    Decimal (draft-04 / OCPP 1.6: ``multipleOf`` is decimal, as in the
    ``ocpp`` library)."""
    text = (SCHEMAS / relpath).read_text(encoding="utf-8")
    use_decimal = "draft-04" in text
    schema = json.loads(text, parse_float=decimal.Decimal if use_decimal else float)
    return jsonschema.validators.validator_for(schema)(schema), use_decimal


def _router_verdict(d: ocppj.Dialect, action: str, response: bool,
                    payload: bytes) -> errors.OCPPJError | None:
    try:
        if response:
            d.validate_response(action, payload)
        elif action in d.charger_actions or action in d.send_actions:
            msgtype = 6 if action in d.send_actions else 2
            msg = d.decode(b'[%d,"fz",' % msgtype + json.dumps(action).encode() + b","
                           + payload + b"]")
            assert msg is not None and msg.payload == payload.strip(b" \t\r\n")
        else:
            d.validate_request(action, payload, from_charger=False)
    except errors.OCPPJError as exc:
        return exc
    return None


def validate_both(proto: str, data: bytes) -> None:
    """One payload against one schema: the router and jsonschema agree."""
    table = schemas(proto)
    action, response, relpath = table[int.from_bytes(data[:2], "little") % len(table)]
    payload = data[2:]
    try:
        text = payload.decode("utf-8")
        v, use_decimal = validator(relpath)
        instance = json.loads(text, parse_float=decimal.Decimal if use_decimal else float,
                              parse_constant=_reject)
    except (ValueError, RecursionError, decimal.InvalidOperation):
        # Not JSON (the envelope half of the target covers that), or a number
        # past Decimal's exponent range (``6e5999…``): no oracle for it.
        return
    if not isinstance(instance, dict) or _too_deep(instance):
        return
    d = ocppj.dialect(proto)
    exc = _router_verdict(d, action, response, payload)
    try:
        found = list(v.iter_errors(instance))
    except RecursionError:
        return
    if exc is None:
        assert not found, (relpath, payload, [e.message for e in found])
        return
    assert len(exc.description) <= 255
    assert exc.code_for(proto) in errors.CODES[proto]
    if not found:
        # Stricter than jsonschema only where jsonschema does not look.
        assert type(exc) is KEYWORD_ERROR["format"] or isinstance(exc, errors.FormatViolation), (
            relpath, payload, exc)


def _reject(name: str) -> Any:
    raise ValueError(name)


def _too_deep(value: Any, depth: int = 0) -> bool:
    if depth > 200:
        return True
    if isinstance(value, dict):
        return any(_too_deep(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_too_deep(v, depth + 1) for v in value)
    return False


def _ocppj_target(proto: str) -> Any:
    dialects = [ocppj.dialect(proto)]
    if proto == "ocpp1.6":
        dialects.append(ocppj.dialect("ocpp1.6", ocppj.Options(True, True, True)))

    def target(data: bytes) -> None:
        if not data:
            return
        if data[0] & 1:
            validate_both(proto, data[1:])
            return
        for d in dialects:
            check(d, data[1:])

    target.__name__ = f"fuzz_{proto.replace('.', '')}"
    return target


OCPPJ_TARGETS = {name: _ocppj_target(proto) for name, proto in VERSIONS.items()}


def _norm(value: object) -> object:
    if isinstance(value, Exception):
        return ("error", str(value))
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, str):
        return value.encode()
    return value


def _hiredis_all(data: bytes) -> tuple[list[object], bool]:
    """Every reply hiredis reads from ``data``, and whether it called the
    input malformed."""
    reader = hiredis.Reader()
    reader.feed(data)
    out: list[object] = []
    try:
        while (item := reader.gets()) is not False:
            out.append(_norm(item))
    except (hiredis.ProtocolError, TypeError):
        # TypeError: a RESP3 map or set with an unhashable key.
        return out, True
    return out, False


# Headers of aggregates: RESP2 arrays and the RESP3 set, map, push and
# attribute types hiredis also reads.
_ARRAY_LENGTH = re.compile(rb"[*~%>|](\d{6,})")


def fuzz_resp(data: bytes) -> None:
    """RESP2 replies in input-chosen chunks, against hiredis."""
    if not data:
        return
    step = 1 + data[0] % 61
    body = data[1:]
    ours: list[object] = []
    raw: list[object] = []
    reader = ReplyReader(64 if data[0] & 0x80 else 65536)
    failed = False   # kept for the assertion message
    try:
        for i in range(0, len(body), step):
            reader.feed(body[i:i + step])
            while (item := reader.gets()) is not False:
                raw.append(item)
                ours.append(_norm(item))
    except RedisProtocolError:
        failed = True
    if any(int(n) > 100_000 for n in _ARRAY_LENGTH.findall(body)):
        # hiredis allocates an aggregate's element table from its header (8
        # bytes per element, before any element arrived; RESP3 sets and maps
        # too): no oracle for these.
        # Our scanner waits for the elements and allocates nothing.
        return
    theirs, their_failure = _hiredis_all(body)
    # Everything we read up to where hiredis stops, hiredis reads the same
    # way. Past a reply hiredis calls malformed we may still read: we are
    # lenient where Redis never sends anything odd (leading zeros in a length,
    # a CR inside a simple string; the reply still ends at the same CRLF).
    # Those replies must be sane values: re-encoded, hiredis reads them back.
    assert ours[:len(theirs)] == theirs[:len(ours)], (body, ours, theirs, failed)
    if len(ours) > len(theirs):
        assert their_failure, (body, ours, theirs)
        for extra in raw[len(theirs):]:
            if "\\r" in repr(extra):
                continue     # a CR in a simple string: no RESP2 encoding has it
            again, bad = _hiredis_all(encode_reply(extra))
            assert again == [_norm(extra)] and not bad, (body, extra)
    # The XREAD form of the same bytes: never a crash, only documented errors.
    xreader = ReplyReader()
    try:
        xreader.feed(body)
        for _ in range(8):
            if xreader.gets_xread() is False:
                break
    except (RedisProtocolError, RedisReplyError):
        pass


