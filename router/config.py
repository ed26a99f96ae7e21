"""Router configuration: one declarative table, three sources.

Every option can be given as a command-line flag (``--reply-timeout 20``), an
environment variable (``OCPP_ROUTER_REPLY_TIMEOUT=20``) or a key in a TOML file
(``reply_timeout = 20``, file given by ``--config`` / ``OCPP_ROUTER_CONFIG``).
Precedence: flag > environment > file > default. Values from all sources go
through the same parser and the same checks, and a bad value is reported with
the option's name and where it came from. docs/configuration.md is checked
against :data:`OPTIONS` by the tests.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from router.streams.redis_url import RedisURLError, parse_redis_url

ENV_PREFIX = "OCPP_ROUTER_"
KNOWN_SUBPROTOCOLS = ("ocpp2.1", "ocpp2.0.1", "ocpp1.6")


class ConfigError(ValueError):
    """An option has a value the router cannot use."""


def _positive_int(value: Any) -> int:
    n = int(value)
    if n <= 0:
        raise ValueError("must be > 0")
    return n


def _non_negative_int(value: Any) -> int:
    n = int(value)
    if n < 0:
        raise ValueError("must be >= 0")
    return n


def _port(value: Any) -> int:
    n = int(value)
    if not 0 <= n <= 65535:
        raise ValueError("must be a TCP port (0-65535)")
    return n


def _seconds(value: Any) -> float:
    x = float(value)
    if not x >= 0 or x == float("inf"):
        raise ValueError("must be a number of seconds >= 0")
    return x


def _positive_seconds(value: Any) -> float:
    x = _seconds(value)
    if x == 0:
        raise ValueError("must be > 0")
    return x


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    else:
        items = [str(v).strip() for v in value]
    return tuple(v for v in items if v)


def _subprotocols(value: Any) -> tuple[str, ...]:
    items = _str_list(value)
    if not items:
        raise ValueError("needs at least one subprotocol")
    for item in items:
        if item not in KNOWN_SUBPROTOCOLS:
            raise ValueError(f"unknown subprotocol {item!r} (known: {', '.join(KNOWN_SUBPROTOCOLS)})")
    if len(set(items)) != len(items):
        raise ValueError("lists a subprotocol twice")
    return items


def _networks(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in _str_list(value))


def _path_prefix(value: Any) -> str:
    text = str(value)
    if not text.startswith("/"):
        raise ValueError("must start with '/'")
    return text if text.endswith("/") else text + "/"


def _node_id(value: Any) -> str:
    text = str(value)
    if not text or len(text) > 128 or any(c.isspace() or c in "{}" for c in text):
        raise ValueError("must be 1-128 characters without spaces or braces")
    return text


def _key_prefix(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in "{}" for c in text):
        raise ValueError("must be non-empty, without spaces or braces")
    return text


def _str(value: Any) -> str:
    return str(value)


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value)
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


def _window_bits(value: Any) -> int:
    n = int(value)
    if not 9 <= n <= 15:
        raise ValueError("must be between 9 and 15 (RFC 7692 §7.1.2)")
    return n


@dataclass(frozen=True)
class Option:
    """One configuration option."""

    name: str                      # attribute name; flag is --name-with-dashes
    parse: Callable[[Any], Any]
    default: Any
    help: str
    group: str
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _default_node_id() -> str:
    return socket.gethostname().split(".")[0] or "router"


OPTIONS: tuple[Option, ...] = (
    # -- serving
    Option("host", _str, "0.0.0.0", "address to listen on for chargers", "serving"),
    Option("port", _port, 9000, "port for charger WebSockets", "serving"),
    Option("admin_host", _str, "0.0.0.0", "address of the admin HTTP port", "serving"),
    Option("admin_port", _port, 9001, "admin HTTP port: /healthz, /readyz, /metrics", "serving"),
    Option("workers", _positive_int, 1,
           "worker processes sharing the port (SO_REUSEPORT); each is its own node", "serving"),
    Option("node_id", _node_id, None,
           "node id (default: host name; with --workers, host name plus '-' and the worker index)",
           "serving"),
    Option("path_prefix", _path_prefix, "/ocpp/",
           "URL path before the charger identity: ws://host:port<prefix><identity>", "serving"),
    Option("subprotocols", _subprotocols, KNOWN_SUBPROTOCOLS,
           "accepted OCPP subprotocols in order of preference (comma-separated)", "serving"),
    Option("log_level", _choice("debug", "info", "warning", "error"), "info", "log level",
           "serving"),
    # -- redis
    Option("redis_url", _str, "redis://127.0.0.1:6379/0",
           "Redis URL: redis://, rediss:// (TLS), unix://, redis+sentinel://, "
           "redis+cluster:// (docs/deployment.md, Redis modes)", "redis"),
    Option("key_prefix", _key_prefix, "ocpp", "prefix of every Redis key", "redis"),
    Option("shards", _positive_int, 1,
           "number of inbound streams; must be the same on every router and backend", "redis"),
    Option("stream_maxlen", _positive_int, 1_000_000,
           "approximate cap of each inbound stream (XADD MAXLEN ~)", "redis"),
    Option("registry_ttl", _positive_int, 300,
           "seconds a registry entry lives without refresh (refreshed every third of it)",
           "redis"),
    Option("publish_timeout", _positive_seconds, 2.0,
           "seconds an XADD may take, held through a Redis restart or failover included, "
           "before it counts as failed (charger gets InternalError)",
           "redis"),
    Option("max_pending_publishes", _positive_int, 20_000,
           "publishes in flight before the router stops reading from sockets (backpressure)",
           "redis"),
    # -- redis: durability (issue 12)
    Option("durability", _choice("none", "replicated"), "none",
           "replicated: an entry counts as published once a replica has it (WAIT 1), "
           "so it survives a master crash; none: once the master has it", "redis"),
    # -- security
    Option("auth", _choice("none", "basic"), "none",
           "charger authentication: none, or HTTP Basic (security profiles 1 and 2)", "security"),
    Option("tls_cert", _str, None, "PEM certificate chain: serve wss:// (profiles 2 and 3)",
           "security"),
    Option("tls_key", _str, None, "PEM private key of --tls-cert", "security"),
    Option("tls_client_ca", _str, None,
           "PEM CA bundle: require a client certificate chained to it whose subject CN equals "
           "the identity (security profile 3)", "security"),
    Option("tls_ciphers", _str, None, "OpenSSL cipher string for TLS 1.2 (default: OpenSSL's)",
           "security"),
    Option("trusted_proxy_header", _str, None,
           "header carrying the client-certificate subject verified by a TLS-terminating proxy",
           "security"),
    Option("trusted_proxy_networks", _networks, (),
           "source networks (CIDR, comma-separated) allowed to set --trusted-proxy-header",
           "security"),
    # -- limits and timeouts
    Option("max_connections", _positive_int, 15_000, "open charger connections per process",
           "limits"),
    Option("max_handshakes", _positive_int, 1_000, "concurrent handshakes in progress per process",
           "limits"),
    Option("handshake_timeout", _positive_seconds, 10.0,
           "seconds to complete the HTTP upgrade (and authentication)", "limits"),
    Option("retry_after", _non_negative_int, 30, "Retry-After seconds in 503 answers", "limits"),
    Option("max_message_size", _positive_int, 1 << 20,
           "largest WebSocket message in bytes, after decompression (larger: close 1009)",
           "limits"),
    Option("ping_interval", _seconds, 60.0,
           "seconds between server pings on an idle connection; 0 switches keepalive off",
           "limits"),
    Option("ping_timeout", _positive_seconds, 30.0,
           "seconds to wait for the pong before closing the connection", "limits"),
    Option("close_timeout", _positive_seconds, 5.0,
           "seconds to wait for the peer's close frame", "limits"),
    Option("permessage_deflate", _bool, True, "negotiate RFC 7692 compression when offered",
           "limits"),
    Option("deflate_window_bits", _window_bits, 12,
           "largest LZ77 window (both directions) accepted for permessage-deflate", "limits"),
    Option("drain_seconds", _seconds, 30.0,
           "on SIGTERM, close connections spread evenly over this many seconds", "limits"),
    # -- OCPP
    Option("reply_timeout", _positive_seconds, 30.0,
           "seconds to wait for a backend reply to a charger CALL before answering "
           "CALLERROR InternalError", "ocpp"),
    Option("call_timeout", _positive_seconds, 30.0,
           "default seconds a charger has to answer a backend CALL", "ocpp"),
    Option("max_queued_calls", _positive_int, 16,
           "backend CALLs queued per connection (beyond: failed QueueFull)", "ocpp"),
    Option("heartbeat", _choice("edge", "forward"), "edge",
           "answer Heartbeat at the router (edge) or publish it like any CALL (forward)", "ocpp"),
    Option("strict_datetime", _bool, False, "check date-time fields as RFC 3339", "ocpp"),
    Option("null_payload_as_empty", _bool, False,
           "treat a null payload as {} (some 1.6 firmware sends null)", "ocpp"),
    Option("lenient_error_codes", _bool, False,
           "accept both spellings of Formation/Format and Occurence/Occurrence in CALLERRORs "
           "from chargers", "ocpp"),
    # -- OCPP-S: SOAP chargers (docs/soap.md)
    Option("soap", _bool, True,
           "accept OCPP-S (SOAP 1.2) chargers: HTTP POST under --path-prefix on the charger port",
           "ocpp"),
    Option("soap_max_body", _positive_int, 256 * 1024,
           "largest SOAP body in bytes, before and after decompression (larger: HTTP 413)",
           "ocpp"),
    Option("soap_session_timeout", _positive_seconds, 1800.0,
           "seconds without a request after which a SOAP charger is published as "
           "disconnected (set it above the chargers' heartbeat interval)", "ocpp"),
)

_BY_NAME = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class Config:
    """The router's settings, validated. Build with :func:`load`."""

    host: str = "0.0.0.0"
    port: int = 9000
    admin_host: str = "0.0.0.0"
    admin_port: int = 9001
    workers: int = 1
    node_id: str | None = None
    path_prefix: str = "/ocpp/"
    subprotocols: tuple[str, ...] = KNOWN_SUBPROTOCOLS
    log_level: str = "info"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ocpp"
    shards: int = 1
    stream_maxlen: int = 1_000_000
    registry_ttl: int = 300
    publish_timeout: float = 2.0
    max_pending_publishes: int = 20_000
    durability: str = "none"
    auth: str = "none"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    tls_ciphers: str | None = None
    trusted_proxy_header: str | None = None
    trusted_proxy_networks: tuple[Any, ...] = ()
    max_connections: int = 15_000
    max_handshakes: int = 1_000
    handshake_timeout: float = 10.0
    retry_after: int = 30
    max_message_size: int = 1 << 20
    ping_interval: float = 60.0
    ping_timeout: float = 30.0
    close_timeout: float = 5.0
    permessage_deflate: bool = True
    deflate_window_bits: int = 12
    drain_seconds: float = 30.0
    reply_timeout: float = 30.0
    call_timeout: float = 30.0
    max_queued_calls: int = 16
    heartbeat: str = "edge"
    strict_datetime: bool = False
    null_payload_as_empty: bool = False
    lenient_error_codes: bool = False
    soap: bool = True
    soap_max_body: int = 256 * 1024
    soap_session_timeout: float = 1800.0
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def node_for_worker(self, index: int | None) -> str:
        """The node id of worker ``index`` (None: the only process)."""
        base = self.node_id or _default_node_id()
        return base if index is None else f"{base}-{index}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option as a flag (default None, so unset flags fall through)."""
    parser.add_argument("--config", metavar="FILE",
                        help=f"TOML file with options (env {ENV_PREFIX}CONFIG)")
    groups: dict[str, Any] = {}
    for opt in OPTIONS:
        group = groups.get(opt.group)
        if group is None:
            group = groups[opt.group] = parser.add_argument_group(opt.group)
        default = opt.default
        if isinstance(default, tuple):
            default = ",".join(str(d) for d in default) or "none"
        help_text = f"{opt.help} (default: {default}; env {opt.env})"
        if opt.parse is _bool:
            group.add_argument(opt.flag, dest=opt.name, default=None,
                               action=argparse.BooleanOptionalAction, help=help_text)
        else:
            group.add_argument(opt.flag, dest=opt.name, default=None, metavar=opt.metavar,
                               help=help_text)


def load(args: argparse.Namespace | Mapping[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> Config:
    """Merge flags, environment and TOML file into a validated :class:`Config`.

    Raises:
        ConfigError: an unknown key in the file, an unparsable value or an
            inconsistent combination; the message names the option and source.
    """
    environ = os.environ if environ is None else environ
    flags: Mapping[str, Any] = vars(args) if isinstance(args, argparse.Namespace) else (args or {})
    raw: dict[str, tuple[Any, str]] = {}

    config_file = flags.get("config") or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        try:
            with open(config_file, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from exc
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in _BY_NAME:
                raise ConfigError(f"config file {config_file}: unknown option {key!r}")
            raw[name] = (value, f"config file {config_file}")
    for opt in OPTIONS:
        if opt.env in environ:
            raw[opt.name] = (environ[opt.env], f"environment variable {opt.env}")
    for opt in OPTIONS:
        value = flags.get(opt.name)
        if value is not None:
            raw[opt.name] = (value, f"option {opt.flag}")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, (value, source) in raw.items():
        opt = _BY_NAME[name]
        try:
            values[name] = opt.parse(value)
        except (TypeError, ValueError) as exc:
            text = str(exc)
            generic = not text or text.startswith(("invalid literal", "could not convert"))
            reason = "is not a valid value" if generic else text
            raise ConfigError(f"{source}: {reason} (got {value!r})") from exc
        sources[name] = source
    config = Config(**values, sources=sources)
    _check(config)
    return config


def _check(c: Config) -> None:
    def where(name: str) -> str:
        return c.sources.get(name, "default")

    if (c.tls_cert is None) != (c.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        path = getattr(c, name)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{where(name)}: file not found: {path}")
    if c.tls_client_ca and not c.tls:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
    if c.trusted_proxy_header and not c.trusted_proxy_networks:
        raise ConfigError("--trusted-proxy-header needs --trusted-proxy-networks")
    if c.reply_timeout <= c.publish_timeout:
        raise ConfigError("--reply-timeout must be longer than --publish-timeout (a CALL must "
                          "not expire while its XADD is still unacknowledged)")
    if c.port and c.admin_port and c.port == c.admin_port:
        raise ConfigError("--port and --admin-port must differ")
    try:
        parse_redis_url(c.redis_url)
    except RedisURLError as exc:
        raise ConfigError(f"{where('redis_url')}: {exc}") from None


def config_field_names() -> Sequence[str]:
    return [f.name for f in fields(Config) if f.name != "sources"]
