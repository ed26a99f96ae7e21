"""The configuration table: sources, precedence, errors, and the docs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from router.config import OPTIONS, Config, ConfigError, add_arguments, load

DOCS = Path(__file__).parents[1] / "docs" / "configuration.md"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    config = load(parse([]), environ={})
    assert config == Config()
    assert config.subprotocols == ("ocpp2.1", "ocpp2.0.1", "ocpp1.6")


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    f = tmp_path / "router.toml"
    f.write_text('reply_timeout = 5\nshards = 3\nauth = "basic"\n')
    config = load(parse(["--config", str(f), "--reply-timeout", "7"]),
                  environ={"OCPP_ROUTER_SHARDS": "4"})
    assert config.reply_timeout == 7.0
    assert config.shards == 4
    assert config.auth == "basic"
    assert config.sources["reply_timeout"] == "option --reply-timeout"


@pytest.mark.parametrize(("argv", "environ", "message"), [
    (["--port", "70000"], {}, "option --port: must be a TCP port"),
    ([], {"OCPP_ROUTER_SHARDS": "0"}, "environment variable OCPP_ROUTER_SHARDS: must be > 0"),
    (["--subprotocols", "ocpp1.5"], {}, "unknown subprotocol 'ocpp1.5'"),
    (["--auth", "digest"], {}, "must be one of none, basic"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], {}, "file not found"),
    (["--tls-cert", "/x"], {}, "--tls-cert and --tls-key go together"),
    (["--port", "9000", "--admin-port", "9000"], {}, "must differ"),
    (["--redis-url", "http://x"], {}, "option --redis-url: unsupported scheme 'http://'"),
    (["--trusted-proxy-header", "X-Client-Cert"], {}, "needs --trusted-proxy-networks"),
    (["--reply-timeout", "soon"], {}, "option --reply-timeout: is not a valid value"),
    ([], {"OCPP_ROUTER_PERMESSAGE_DEFLATE": "maybe"}, "must be true or false"),
])
def test_bad_values_name_the_option_and_source(argv: list[str], environ: dict[str, str],
                                               message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(parse(argv), environ=environ)


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "router.toml"
    f.write_text("reply_timout = 5\n")
    with pytest.raises(ConfigError, match="unknown option 'reply_timout'"):
        load(parse(["--config", str(f)]), environ={})


def test_bad_toml_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "router.toml"
    f.write_text("port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(parse(["--config", str(f)]), environ={})


def test_boolean_flags_have_a_no_form() -> None:
    assert load(parse(["--no-permessage-deflate"]), environ={}).permessage_deflate is False


def test_node_ids_per_worker() -> None:
    config = load(parse(["--node-id", "edge-a"]), environ={})
    assert config.node_for_worker(None) == "edge-a"
    assert config.node_for_worker(2) == "edge-a-2"


def test_every_option_is_documented() -> None:
    text = DOCS.read_text()
    for opt in OPTIONS:
        assert f"`{opt.flag}`" in text, opt.flag
        assert f"`{opt.env}`" in text, opt.env
    assert len({o.name for o in OPTIONS}) == len(OPTIONS)


def test_config_fields_match_options() -> None:
    from router.config import config_field_names

    assert set(config_field_names()) == {o.name for o in OPTIONS}
    defaults = Config()
    for opt in OPTIONS:
        assert getattr(defaults, opt.name) == opt.default, opt.name
