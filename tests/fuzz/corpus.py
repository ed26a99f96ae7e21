"""Seed corpora and dictionaries of the fuzz targets.

``python -m tests.fuzz.corpus`` (re)writes ``tests/fuzz/seeds/<target>/`` and
``tests/fuzz/dicts/<target>.dict``; both are in the repository, so a run
starts from the same inputs everywhere. The seeds are valid traffic the
mutations start from:

- ``frames`` (and ``frames_diff``, those up to 4 KiB): Autobahn-like client streams (single and fragmented text and
  binary, control frames between fragments, every length encoding, close
  frames with and without code and reason, 2-, 3- and 4-byte UTF-8, compressed
  messages) in both the raw and the structure-aware form of the target;
- ``upgrade``: real charger upgrade requests (each subprotocol, Basic auth,
  deflate offers, long paths);
- ``ocpp16`` / ``ocpp201`` / ``ocpp21``: for every action and direction of the
  version, a schema-valid payload both as an OCPP-J frame (CALL, CALLRESULT,
  SEND in 2.1) and in the validation form (schema index + payload), plus
  CALLERROR frames;
- ``resp``: the replies the router reads from Redis (XADD ids, XREADGROUP and
  XAUTOCLAIM entries, errors, nil, integers, nested arrays).
"""

from __future__ import annotations

import importlib.util
import json
import random
import zlib
from pathlib import Path

from router.ocppj._walker import load_schema
from router.streams.errors import RedisReplyError
from tests.fuzz.oracles import VERSIONS, schemas
from tests.ocppj.instances import valid
from tests.resp import encode_reply
from tests.ws.helpers import client_frame, close_payload, upgrade_request

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "seeds"
DICTS = HERE / "dicts"
# What the long runs found beyond the seeds, minimized (python -m tests.fuzz
# --minimize): every run starts from there too, and test_fuzz.py replays it.
GROWN = HERE / "grown"


def frames() -> list[bytes]:
    def raw(*parts: bytes, cfg: int = 0x00) -> bytes:
        return bytes([cfg]) + b"".join(parts)

    def deflated(text: bytes) -> bytes:
        c = zlib.compressobj(wbits=-12)
        return (c.compress(text) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]

    boot = b'[2,"1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'
    utf8 = "κόσμε € 中 😀".encode()
    out = [
        raw(client_frame(1, b"hello"), client_frame(8, close_payload(1000))),
        raw(client_frame(1, boot)),
        raw(client_frame(1, b"he", fin=False), client_frame(9, b"p"), client_frame(0, b"llo")),
        raw(client_frame(2, b"\x00" * 125), client_frame(2, b"\xff" * 126),
            client_frame(2, b"x" * 300, length_form=127)),
        raw(client_frame(1, b"x" * 65536)),
        raw(client_frame(1, utf8[:5], fin=False), client_frame(0, utf8[5:])),
        raw(client_frame(1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")),
        raw(client_frame(9, b""), client_frame(10, b"pong"), client_frame(8, b"")),
        raw(client_frame(8, close_payload(4000, b"bye \xe2\x82\xac"))),
        raw(client_frame(8, close_payload(1001))),
        raw(client_frame(1, b"a", fin=False), client_frame(0, b"b", fin=False),
            client_frame(0, b"c")),
        raw(client_frame(1, deflated(boot), rsv=0b100), cfg=0x08),
        raw(client_frame(1, deflated(b"x" * 2000), rsv=0b100, fin=False),
            client_frame(0, deflated(b"y" * 10)), cfg=0x10),
        raw(client_frame(2, b"m", masked=False)),
        raw(client_frame(1, b"r", rsv=0b010)),
        raw(client_frame(3, b"")),
        # The structure-aware form: config byte with bit 7, then frame specs.
        bytes([0x80 | 0x10]) + b"\x01" + b"hello world" + b"abcd",
        bytes([0x80 | 0x08 | 0x01]) + bytes([0x80 | 0x10]) + b"\x20" + boot[:32] + b"kkkk",
        bytes([0x80 | 0x10 | 0x40]) + b"\x01\x00" + b"x" * 256 + b"abcd",
        # The 64-bit length form beyond max_len: the header announces more
        # than any input holds (libFuzzer keeps the first max_len bytes of a
        # seed), so the codec waits for the rest, or refuses it at once
        # under the 1,000-byte limit (cfg 3: 1009).
        raw(client_frame(2, b"z" * 70_000)[:300]),
        raw(client_frame(1, b"z" * 70_000)[:300], cfg=0x03),
        # The structure-aware form's long frames from short inputs: a 16-bit
        # length of 20,000 that the rest of the input cannot fill, so its
        # bytes are repeated (frame byte 0x5c: binary, FIN, 16-bit length),
        # fed in 291-byte chunks: the message buffer grows past 4 KiB (cfg
        # 0xf5: structured, 1 MiB limit, no deflate).
        bytes([0xf5, 0x5c, 0x4e, 0x20]) + b"a long frame from a short input ",
        raw(client_frame(8, b"\x03")),      # a 1-byte close payload: 1002
        # Messages that inflate far beyond the input (the message buffer grows
        # past 4 KiB only this way under max_len): 80,000 bytes in two
        # compressed fragments, under the 1 MiB limit (cfg 0x50) and over the
        # 70,000-byte one (cfg 0x2c: 1009 once inflated).
        raw(client_frame(1, deflated(b"x" * 30_000), rsv=0b100, fin=False),
            client_frame(0, deflated(b"y" * 50_000)), cfg=0x50),
        raw(client_frame(2, deflated(b"x" * 30_000), rsv=0b100, fin=False),
            client_frame(0, deflated(b"y" * 50_000)), cfg=0x2c),
    ]
    return out


def upgrades() -> list[bytes]:
    out = []
    for i, proto in enumerate((b"ocpp1.6", b"ocpp2.0.1", b"ocpp2.1", b"ocpp2.0.1, ocpp1.6")):
        out.append(bytes([i * 7]) + upgrade_request(b"Sec-WebSocket-Protocol: " + proto))
    out.append(b"\x05" + upgrade_request(
        b"Sec-WebSocket-Protocol: ocpp1.6",
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"))
    out.append(b"\x00" + upgrade_request(b"Authorization: Basic Q1AwMDE6c2VjcmV0"))
    out.append(b"\x3f" + upgrade_request(b"X-Forwarded-For: 203.0.113.7, 10.0.0.1",
                                         b"User-Agent: charger/1.0"))
    return out


def ocpp(proto: str) -> list[bytes]:
    rng = random.Random(proto)
    out = []
    d_frames: list[bytes] = []
    for index, (action, response, relpath) in enumerate(schemas(proto)):
        schema = load_schema(relpath)
        draft6 = "draft-06" in schema["$schema"]
        value = valid(schema, schema, rng, draft6=draft6, optional=1.0)
        payload = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        out.append(b"\x01" + index.to_bytes(2, "little") + payload)
        if response:
            d_frames.append(b'[3,"%d",' % index + payload + b"]")
        else:
            msgtype = 6 if action.startswith("NotifyPeriodicEventStream") else 2
            d_frames.append(b'[%d,"%d",%s,' % (msgtype, index, json.dumps(action).encode())
                            + payload + b"]")
    d_frames.append(b'[4,"1","GenericError","boom",{}]')
    d_frames.append(b'[4,"2","NotImplemented","",{"detail":[1,2.5e3,null,true]}]')
    if proto == "ocpp2.1":
        d_frames.append(b'[5,"3","GenericError","",{}]')
    out.extend(b"\x00" + f for f in d_frames)
    return out


def resp() -> list[bytes]:
    entry = [b"1700000000000-0", [b"kind", b"call", b"cs", b"CP1", b"id", b"42",
                                  b"payload", b'{"status":"Accepted"}']]
    replies: list[object] = [
        "OK", b"1700000000000-0", 42, -1, None, [],
        [[b"ocpp:out:{0}", [entry, entry]]],
        [b"0-0", [entry], []],
        [[b"ocpp:in:{0}", []]],
        RedisReplyError(
            "NOGROUP No such key 'ocpp:in:{0}' or consumer group"),
        [1, [2, [3, None, b""]]],
        b"x" * 300,
    ]
    out = []
    for i, r in enumerate(replies):
        out.append(bytes([i * 13 % 256]) + encode_reply(r))
    out.append(b"\x05" + b"".join(encode_reply(r) for r in replies))
    return out


DICT_TOKENS: dict[str, list[bytes]] = {
    "frames": [b"\x81\x80", b"\x01\x80", b"\x80\x80", b"\x88\x82", b"\x89\x80", b"\x8a\x80",
               b"\xc1", b"\xfe", b"\x7e", b"\x7f", b"\x03\xe8", b"\x03\xf3", b"\x0f\xa0",
               b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe2\x82\xac",
               b"\xf0\x9f\x98\x80", b"\x00\x00\xff\xff"],
    "upgrade": [b"GET ", b" HTTP/1.1\r\n", b"\r\n", b"Host: ", b"Upgrade: websocket",
                b"Connection: Upgrade", b"Sec-WebSocket-Key: ", b"Sec-WebSocket-Version: 13",
                b"Sec-WebSocket-Protocol: ", b"ocpp1.6", b"ocpp2.0.1", b"ocpp2.1",
                b"Sec-WebSocket-Extensions: permessage-deflate", b"client_max_window_bits",
                b"server_no_context_takeover", b"Authorization: Basic ", b"dGhlIHNhbXBsZSBub25jZQ==",
                b"Content-Length: ", b"Transfer-Encoding: chunked", b"%2F", b"%00", b" \t"],
    "resp": [b"\r\n", b"*", b"$", b":", b"+OK", b"-ERR ", b"$-1\r\n", b"*-1\r\n", b"*0\r\n",
             b"1700000000000-0", b"9223372036854775807", b"-9223372036854775808", b"%", b"_"],
}


def ocpp_tokens(proto: str) -> list[bytes]:
    tokens = {b"[2,", b"[3,", b"[4,", b"[5,", b"[6,", b'"', b"\\u0000", b"\\ud800", b"\\\"",
              b"null", b"true", b"false", b"1e999", b"-0", b"0.1", b"{}", b"[]",
              b"GenericError", b"FormatViolation", b"NotImplemented"}
    for action, _response, relpath in schemas(proto):
        tokens.add(json.dumps(action).encode())
        text = load_schema(relpath)
        for word in _names(text):
            tokens.add(json.dumps(word).encode())
    return sorted(tokens)


def _names(node: object) -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                out.update(value)
            if key == "enum" and isinstance(value, list):
                out.update(v for v in value if isinstance(v, str))
            out |= _names(value)
    elif isinstance(node, list):
        for value in node:
            out |= _names(value)
    return out


def all_seeds() -> dict[str, list[bytes]]:
    out = {"frames": frames(), "upgrade": upgrades(), "resp": resp()}
    out["frames_diff"] = [s for s in out["frames"] if len(s) <= 4096]
    for name, proto in VERSIONS.items():
        out[name] = ocpp(proto)
    if importlib.util.find_spec("router.soap") is not None:
        from tests.fuzz.soap import seeds as soap_seeds
        out["soap"] = soap_seeds()
    return out


def all_dicts() -> dict[str, list[bytes]]:
    out = dict(DICT_TOKENS)
    out["frames_diff"] = out["frames"]
    out["soap"] = [b"<?xml", b"<!DOCTYPE", b"<!ENTITY", b"&amp;", b"&#x", b"<![CDATA[", b"]]>",
                   b"xmlns:", b"s:Envelope", b"s:Header", b"s:Body", b"a:Action", b"a:To",
                   b"a:MessageID", b"a:From", b"a:ReplyTo", b"a:Address", b"chargeBoxIdentity",
                   b"urn://Ocpp/Cs/2015/10/", b"urn://Ocpp/Cs/2012/06/", b"urn://Ocpp/Cs/2010/08/",
                   b"http://www.w3.org/2003/05/soap-envelope", b"Request>", b"</"]
    for name, proto in VERSIONS.items():
        out[name] = ocpp_tokens(proto)
    return out


def _dict_line(token: bytes) -> str:
    return '"' + "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}"
                         for b in token) + '"'


def write() -> None:
    for name, seeds in all_seeds().items():
        folder = SEEDS / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for i, seed in enumerate(seeds):
            (folder / f"seed-{i:03d}").write_bytes(seed)
    DICTS.mkdir(exist_ok=True)
    for name, tokens in all_dicts().items():
        (DICTS / f"{name}.dict").write_text("".join(_dict_line(t) + "\n" for t in tokens))


if __name__ == "__main__":
    write()
