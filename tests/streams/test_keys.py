import zlib

import pytest

from router.streams import KeySpace


def test_default_keys_match_the_contract() -> None:
    ks = KeySpace()
    assert ks.inbound(0) == b"ocpp:in:{0}"
    assert ks.out("router-a-0") == b"ocpp:out:router-a-0"
    assert ks.registry("CP-1") == b"ocpp:cs:CP-1"
    assert ks.auth("CP-1") == b"ocpp:auth:CP-1"
    assert ks.node("router-a-0") == b"ocpp:node:router-a-0"
    assert ks.all_inbound() == [b"ocpp:in:{0}"]


def test_shard_is_crc32_of_utf8_identity() -> None:
    ks = KeySpace("p", shards=7)
    for ident in ["CP-1", "CP-2", "Zürich/ß-1", "x" * 300, ""]:
        shard = zlib.crc32(ident.encode("utf-8")) % 7
        assert ks.shard_of(ident) == shard
        assert ks.inbound_for(ident) == b"p:in:{%d}" % shard
    assert ks.all_inbound() == [b"p:in:{%d}" % n for n in range(7)]


def test_utf8_identity_in_keys() -> None:
    ks = KeySpace("ocpp")
    assert ks.registry("Zürich") == "ocpp:cs:Zürich".encode()


@pytest.mark.parametrize(("prefix", "shards"), [("", 1), ("ocpp", 0)])
def test_bad_keyspace(prefix: str, shards: int) -> None:
    with pytest.raises(ValueError):
        KeySpace(prefix, shards)


def test_inbound_out_of_range() -> None:
    ks = KeySpace(shards=2)
    with pytest.raises(IndexError):
        ks.inbound(2)
    with pytest.raises(IndexError):
        ks.inbound(-1)
