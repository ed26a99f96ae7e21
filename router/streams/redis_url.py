"""One parser for every Redis URL the router, the SDK and the CLI accept.

``--redis-url`` / ``OCPP_ROUTER_REDIS_URL`` take one of::

    redis://[[user]:password@]host[:port][/db][?options]
    rediss://…                                         (TLS)
    unix://[[user]:password@]/path/to.sock[?db=N]
    redis+sentinel://[[user]:password@]host:port[,host:port…]/<master>[/db][?options]
    rediss+sentinel://…                                (TLS to sentinels and servers)
    redis+cluster://[[user]:password@]host:port[,host:port…][?options]
    rediss+cluster://…                                 (TLS to every node)

The userinfo holds the data servers' credentials (an ACL user, or only a
password for ``requirepass``). Everything else is a query parameter, so one
string in one environment variable configures the router, backend services and
the CLI alike. The TLS parameter names are redis-py's
(``redis.asyncio.Redis.from_url`` reads the same ones), plus
``ssl_server_name``:

=====================  =======================================================
``ssl_ca_certs``        PEM file of the CAs that sign the servers' certificates
                        (default: the system trust store)
``ssl_certfile``        PEM client certificate (``tls-auth-clients yes``)
``ssl_keyfile``         its private key (default: inside ``ssl_certfile``)
``ssl_cert_reqs``       ``required`` (default), ``optional`` or ``none``
``ssl_check_hostname``  ``true`` (default with ``required``) or ``false``
``ssl_server_name``     the name the servers' certificates are checked against
                        (and sent as SNI) when it differs from the host in the
                        URL, e.g. servers addressed by IP or announced by
                        Sentinel/Cluster by IP
``db``                  database number (standalone, Sentinel; Cluster has only 0)
``sentinel_username``   credentials of the sentinels themselves, when they have
``sentinel_password``   ``requirepass``/ACLs of their own (the userinfo is
                        for the data servers)
=====================  =======================================================

Unknown parameters are an error rather than silently ignored: a misspelt
``ssl_ca_cert`` would otherwise fall back to the system trust store.

:func:`parse_redis_url` returns a :class:`RedisURL`; it builds the SSL context
of the compiled hot path's connections (``router.streams.connection``) and the
redis-py clients of the control plane, SDK and CLI (:meth:`RedisURL.redis_py`).
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, unquote

if TYPE_CHECKING:
    import redis.asyncio

Mode = Literal["standalone", "sentinel", "cluster"]

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379

_SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}

_TLS_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
               "ssl_check_hostname", "ssl_server_name")
_PARAMS = frozenset((*_TLS_PARAMS, "db", "sentinel_username", "sentinel_password"))

_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
              "none": ssl.CERT_NONE}


class RedisURLError(ValueError):
    """A Redis URL that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class TLSSettings:
    """How to verify the servers and who we are to them."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: Literal["required", "optional", "none"] = "required"
    check_hostname: bool = True
    server_name: str | None = None

    def context(self) -> ssl.SSLContext:
        """A client SSL context (TLS 1.2 or newer).

        Raises:
            RedisURLError: a certificate or key file cannot be read.
        """
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.check_hostname = self.check_hostname and self.verify != "none"
        ctx.verify_mode = _CERT_REQS[self.verify]
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise RedisURLError(f"cannot load the client certificate {self.cert_file!r}: "
                                    f"{getattr(exc, 'strerror', None) or exc}") from None
        return ctx


@dataclass(frozen=True)
class RedisURL:
    """A parsed Redis URL: what to connect to and how.

    Attributes:
        mode: ``standalone`` (one server, TCP or Unix socket), ``sentinel`` or
            ``cluster``.
        addresses: the server (standalone) or the seeds: sentinels, or cluster
            nodes to learn the topology from.
        unix_path: the socket of a ``unix://`` URL (then ``addresses`` is empty).
        master_name: the Sentinel master's name.
        db: database number (always 0 in cluster mode).
        username, password: the data servers' ACL user / password.
        sentinel_username, sentinel_password: the sentinels' own credentials.
        tls: TLS settings, None for plain TCP.
    """

    mode: Mode
    addresses: tuple[tuple[str, int], ...]
    unix_path: str | None = None
    master_name: str | None = None
    db: int = 0
    username: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)
    sentinel_username: str | None = dataclasses.field(default=None, repr=False)
    sentinel_password: str | None = dataclasses.field(default=None, repr=False)
    tls: TLSSettings | None = None

    # -- views ------------------------------------------------------------------

    def __str__(self) -> str:
        """The URL without its secrets (logs, error messages)."""
        scheme = {"standalone": "redis", "sentinel": "redis+sentinel",
                  "cluster": "redis+cluster"}[self.mode]
        if self.tls is not None:
            scheme = scheme.replace("redis", "rediss", 1)
        if self.unix_path is not None:
            return f"unix://{self.unix_path}?db={self.db}"
        user = f"{self.username or ''}:***@" if self.password else ""
        hosts = ",".join(_join_host(h, p) for h, p in self.addresses)
        path = f"/{self.master_name}/{self.db}" if self.mode == "sentinel" else (
            f"/{self.db}" if self.mode == "standalone" else "")
        return f"{scheme}://{user}{hosts}{path}"

    @property
    def host(self) -> str:
        """The first (standalone: the only) address's host."""
        return self.addresses[0][0] if self.addresses else "localhost"

    @property
    def port(self) -> int:
        return self.addresses[0][1] if self.addresses else DEFAULT_PORT

    def server(self, host: str, port: int) -> RedisURL:
        """The same credentials, database and TLS for one server of this
        deployment (a master found through Sentinel, a cluster node)."""
        return dataclasses.replace(self, mode="standalone", addresses=((host, port),),
                                   unix_path=None, master_name=None)

    def sentinel(self, host: str, port: int) -> RedisURL:
        """One sentinel of this deployment: its own credentials, no database,
        the same TLS settings."""
        return dataclasses.replace(self, mode="standalone", addresses=((host, port),),
                                   unix_path=None, master_name=None, db=0,
                                   username=self.sentinel_username,
                                   password=self.sentinel_password,
                                   sentinel_username=None, sentinel_password=None)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The hot path's SSL context, None without TLS.

        Raises:
            RedisURLError: a certificate or key file cannot be read.
        """
        return self.tls.context() if self.tls is not None else None

    def server_hostname(self, host: str) -> str | None:
        """What to send as SNI and check the certificate against for ``host``."""
        if self.tls is None:
            return None
        return self.tls.server_name or host

    # -- redis-py ---------------------------------------------------------------

    def redis_py_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a redis-py connection to one data server."""
        kw: dict[str, Any] = {"username": self.username, "password": self.password}
        if self.mode != "cluster":
            kw["db"] = self.db
        tls = self.tls
        if tls is not None:
            kw.update(ssl=True, ssl_ca_certs=tls.ca_file, ssl_certfile=tls.cert_file,
                      ssl_keyfile=tls.key_file, ssl_cert_reqs=tls.verify,
                      ssl_check_hostname=tls.check_hostname and tls.verify != "none"
                      and tls.server_name is None)
        return kw

    def redis_py(self, **options: Any) -> redis.asyncio.Redis:
        """An asyncio redis-py client for this deployment: a plain client,
        the Sentinel master's client (re-discovers it after a failover) or a
        ``RedisCluster`` (which answers the same commands, routed by slot).

        Args:
            options: more client keyword arguments (``socket_timeout``, …).

        Note:
            redis-py cannot verify a certificate against another name than the
            address it connects to; with ``ssl_server_name`` it checks the
            chain against the CA but not the name. The hot path checks both.
        """
        import redis.asyncio as aioredis
        from redis.asyncio.cluster import RedisCluster
        from redis.asyncio.sentinel import Sentinel

        kw = self.redis_py_kwargs()
        kw.update(options)
        if self.mode == "cluster":
            from redis.asyncio.cluster import ClusterNode
            kw.pop("db", None)
            nodes = [ClusterNode(h, p) for h, p in self.addresses]
            return _remember(RedisCluster(startup_nodes=nodes, **kw), self)  # type: ignore[arg-type]
        if self.mode == "sentinel":
            assert self.master_name is not None
            sentinel_kw: dict[str, Any] = {
                "username": self.sentinel_username, "password": self.sentinel_password}
            for key in ("socket_timeout", "socket_connect_timeout"):
                if key in options:
                    sentinel_kw[key] = options[key]
            if self.tls is not None:
                sentinel_kw.update({k: v for k, v in kw.items() if k.startswith("ssl")})
            sentinel = Sentinel(list(self.addresses), sentinel_kwargs=sentinel_kw, **kw)

            class SentinelMaster(aioredis.Redis):
                # redis-py's master client leaves the sentinels' connections
                # open on aclose(); this one closes them too.
                async def aclose(self, close_connection_pool: bool | None = None) -> None:
                    await super().aclose(close_connection_pool)
                    for client in sentinel.sentinels:
                        await client.aclose()

            master: aioredis.Redis = sentinel.master_for(self.master_name,
                                                         redis_class=SentinelMaster)
            return _remember(master, self)
        if self.unix_path is not None:
            return _remember(aioredis.Redis(unix_socket_path=self.unix_path, **{
                k: v for k, v in kw.items() if not k.startswith("ssl")}), self)
        return _remember(aioredis.Redis(host=self.host, port=self.port, **kw), self)


def _remember(client: redis.asyncio.Redis, url: RedisURL) -> redis.asyncio.Redis:
    # The SDK's compiled data path opens its own connections: it reads the
    # deployment from here (TLS files, Sentinel master name), which redis-py's
    # pool does not keep in a form that can be turned back into a URL.
    client.ocpp_router_url = url  # type: ignore[attr-defined]
    return client


def url_of_client(client: Any) -> RedisURL | None:
    """The :class:`RedisURL` a redis-py client was built from by
    :meth:`RedisURL.redis_py`, or None."""
    url = getattr(client, "ocpp_router_url", None)
    return url if isinstance(url, RedisURL) else None


def parse_redis_url(url: str) -> RedisURL:
    """Parse ``--redis-url``.

    Raises:
        RedisURLError: the URL is not usable; the message says why in one line
            and never contains the password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        # Not echoed: a malformed URL may well contain a password.
        raise RedisURLError("not a URL (expected redis://host:port/db, "
                            "rediss://, redis+sentinel://, redis+cluster:// or unix://)")
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise RedisURLError(f"unsupported scheme {scheme + '://'!r} (expected one of "
                            + ", ".join(s + "://" for s in _SCHEMES) + ")")
    mode, tls_on = _SCHEMES[scheme]
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise RedisURLError("a Redis URL has no #fragment")
    rest, _, query_text = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
        if not colon:
            # redis://secret@host is redis-py's and Redis' convention for a
            # password alone (requirepass); keep it.
            username, password = None, unquote(user) or None
    query = _query(query_text)
    db_text = query.pop("db", None)
    tls = _tls(query, tls_on)
    sentinel_username = query.pop("sentinel_username", None)
    sentinel_password = query.pop("sentinel_password", None)
    if (sentinel_username or sentinel_password) and mode != "sentinel":
        raise RedisURLError("sentinel_username/sentinel_password are for redis+sentinel:// URLs")

    master_name = None
    unix_path = None
    addresses: tuple[tuple[str, int], ...] = ()
    if scheme == "unix":
        if hosts:
            raise RedisURLError("a unix:// URL has no host: unix:///path/to/redis.sock")
        unix_path = "/" + path if slash else ""
        if unix_path in ("", "/"):
            raise RedisURLError("no socket path in the unix:// URL")
    elif mode == "standalone":
        addresses = _addresses(hosts or "localhost", DEFAULT_PORT, several=False)
        if path.strip("/"):
            if db_text is not None:
                raise RedisURLError("the database is given twice (path and ?db=)")
            db_text = path.strip("/")
    elif mode == "sentinel":
        if not hosts:
            raise RedisURLError("no sentinel address: redis+sentinel://host:port[,host:port…]/"
                                "<master-name>[/db]")
        addresses = _addresses(hosts, DEFAULT_SENTINEL_PORT, several=True)
        segments = path.split("/") if slash else []
        if not segments or not segments[0]:
            raise RedisURLError("no master name: redis+sentinel://host:port[,host:port…]/"
                                "<master-name>[/db]")
        master_name = unquote(segments[0])
        if len(segments) > 2 or (len(segments) == 2 and not segments[1]):
            raise RedisURLError(f"too many path segments after the master name in "
                                f"{_redact(url)!r}")
        if len(segments) == 2:
            if db_text is not None:
                raise RedisURLError("the database is given twice (path and ?db=)")
            db_text = segments[1]
    else:
        if not hosts:
            raise RedisURLError("no cluster node: redis+cluster://host:port[,host:port…]")
        addresses = _addresses(hosts, DEFAULT_PORT, several=True)
        if path.strip("/"):
            raise RedisURLError("a cluster URL has no path: Redis Cluster has only database 0")
    db = 0
    if db_text is not None:
        try:
            db = int(db_text)
        except ValueError:
            raise RedisURLError(f"bad database number {db_text!r}") from None
        if db < 0:
            raise RedisURLError(f"bad database number {db_text!r}")
        if db and mode == "cluster":
            raise RedisURLError("Redis Cluster has only database 0")
    if tls is not None and unix_path is not None:
        raise RedisURLError("TLS parameters on a unix:// URL")
    return RedisURL(mode=mode, addresses=addresses, unix_path=unix_path,
                    master_name=master_name, db=db, username=username, password=password,
                    sentinel_username=sentinel_username, sentinel_password=sentinel_password,
                    tls=tls)


def redacted(url: str) -> str:
    """``url`` with the password replaced by ``***`` (for messages)."""
    return _redact(url)


# -- helpers -----------------------------------------------------------------------


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    userinfo = f"{user}:***" if colon else "***"
    return f"{scheme}://{userinfo}@{hosts}{slash}{tail}"


def _query(text: str) -> dict[str, str]:
    try:
        parsed = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        raise RedisURLError(f"malformed query string {text!r}") from None
    out: dict[str, str] = {}
    for key, values in parsed.items():
        if key not in _PARAMS:
            raise RedisURLError(f"unknown URL parameter {key!r} (known: "
                                + ", ".join(sorted(_PARAMS)) + ")")
        if len(values) > 1:
            raise RedisURLError(f"URL parameter {key!r} given twice")
        out[key] = values[0]
    return out


def _tls(query: dict[str, str], on: bool) -> TLSSettings | None:
    given = {k: query.pop(k) for k in _TLS_PARAMS if k in query}
    if not on:
        if given:
            raise RedisURLError(f"{', '.join(given)}: TLS parameters need rediss:// "
                                "(or rediss+sentinel://, rediss+cluster://)")
        return None
    verify = given.get("ssl_cert_reqs", "required").lower()
    if verify not in _CERT_REQS:
        raise RedisURLError(f"ssl_cert_reqs must be required, optional or none, not {verify!r}")
    check = given.get("ssl_check_hostname", "true").lower()
    if check not in ("true", "false", "1", "0", "yes", "no"):
        raise RedisURLError(f"ssl_check_hostname must be true or false, not {check!r}")
    for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if key in given and not given[key]:
            raise RedisURLError(f"{key} is empty")
    if "ssl_keyfile" in given and "ssl_certfile" not in given:
        raise RedisURLError("ssl_keyfile needs ssl_certfile")
    return TLSSettings(
        ca_file=given.get("ssl_ca_certs"), cert_file=given.get("ssl_certfile"),
        key_file=given.get("ssl_keyfile"),
        verify=verify,  # type: ignore[arg-type]
        check_hostname=check in ("true", "1", "yes"),
        server_name=given.get("ssl_server_name") or None)


def _addresses(text: str, default_port: int, *, several: bool) -> tuple[tuple[str, int], ...]:
    items = text.split(",")
    if len(items) > 1 and not several:
        raise RedisURLError("several hosts need redis+sentinel:// or redis+cluster://")
    out = []
    for item in items:
        if not item:
            raise RedisURLError(f"empty address in {text!r}")
        out.append(_address(item, default_port))
    return tuple(out)


def _address(item: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):            # [IPv6]:port
        host, bracket, rest = item[1:].partition("]")
        if not bracket or not host:
            raise RedisURLError(f"bad address {item!r}")
        if rest and not rest.startswith(":"):
            raise RedisURLError(f"bad address {item!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = item.partition(":")
        if not host:
            raise RedisURLError(f"no host in {item!r}")
    if not port_text:
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise RedisURLError(f"bad port {port_text!r} in {item!r}") from None
    if not 0 < port < 65536:
        raise RedisURLError(f"port {port} out of range in {item!r}")
    return host, port


def _join_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
