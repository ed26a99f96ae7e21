"""A redis-server that speaks only TLS and knows only ACL users.

:class:`TestCA` makes a throw-away CA with ``openssl`` (a server certificate
for ``localhost``/127.0.0.1 and a client certificate); :class:`TLSRedis`
starts redis-server with ``--port 0 --tls-port N`` (no plain TCP at all),
``--tls-auth-clients yes`` (a client certificate is required) and an ACL file
in which ``default`` is off, so every client must log in as a user.

The users are the ones docs/deployment.md prescribes (``ROUTER_ACL``,
``BACKEND_ACL``) plus ``admin`` for the test's own checks; the ACL strings are
read from docs/deployment.md itself, so a test that passes with them proves
the documented ACL is sufficient.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import orjson
import websockets
from ocpp.v16 import call as call16

from router.backend import Client
from router.backend.reference_csms import ReferenceCSMS
from router.embedded_redis import find_redis_server, free_port, terminate
from router.streams import parse_redis_url
from tests.backend.test_e2e import Charger16
from tests.conftest import RouterNode, start_router, timeout
from tests.redis_modes.run_cli import cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"

ADMIN_PASSWORD = "admin-secret"
ROUTER_PASSWORD = "router-secret"
BACKEND_PASSWORD = "backend-secret"


def documented_acl(user: str, prefix: str, *, cluster: bool = False) -> str:
    """The ``user <name> …`` line for ``user`` from docs/deployment.md, with the
    key prefix ``ocpp`` replaced by ``prefix`` and the password filled in;
    with ``cluster``, plus the rules the page adds for Redis Cluster (its
    ``ACL SETUSER <user> +cluster…`` line)."""
    text = DOCS.read_text()
    match = re.search(rf"^ACL SETUSER {re.escape(user)} (on .+)$", text, re.MULTILINE)
    if match is None:
        raise AssertionError(f"docs/deployment.md has no 'ACL SETUSER {user}' line")
    rule = match.group(1).strip()
    if cluster:
        more = re.search(rf"^\s*ACL SETUSER {re.escape(user)} (\+cluster.+)$", text, re.MULTILINE)
        if more is None:
            raise AssertionError(f"docs/deployment.md has no cluster rules for {user}")
        rule += " " + more.group(1).strip()
    password = {"ocpp-router": ROUTER_PASSWORD, "ocpp-backend": BACKEND_PASSWORD}[user]
    rule = rule.replace("~ocpp:*", f"~{prefix}:*").replace(">CHANGE-ME", f">{password}")
    return f"user {user} {rule}"


class TestCA:
    """A CA, a server certificate (localhost, 127.0.0.1) and a client certificate."""

    __test__ = False   # not a pytest class

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = directory / "ca.pem"
        self.server_cert = directory / "server.pem"
        self.server_key = directory / "server.key"
        self.client_cert = directory / "client.pem"
        self.client_key = directory / "client.key"
        ca_key = directory / "ca.key"
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", ca_key, "-out", self.ca, "-days", "2",
                      "-subj", "/CN=ocpp-router test CA")
        self._issue(ca_key, self.server_cert, self.server_key, "localhost",
                    "subjectAltName=DNS:localhost,DNS:redis.test,IP:127.0.0.1\n"
                    "extendedKeyUsage=serverAuth\n")
        self._issue(ca_key, self.client_cert, self.client_key, "ocpp-router client",
                    "extendedKeyUsage=clientAuth\n")

    def _issue(self, ca_key: Path, cert: Path, key: Path, cn: str, ext: str) -> None:
        csr = cert.with_suffix(".csr")
        extfile = cert.with_suffix(".ext")
        extfile.write_text(ext)
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", ca_key,
                      "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", extfile)

    @staticmethod
    def _openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


class TLSRedis:
    """redis-server on a TLS port only, with client certificates and ACL users.

    Args:
        prefix: the key prefix the documented ACLs are narrowed to.
    """

    def __init__(self, prefix: str = "ocpp") -> None:
        self.prefix = prefix
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="ocpp-router-tls-redis-"))
        self.ca = TestCA(self._dir)

    def url(self, user: str = "admin", password: str | None = None, *, host: str = "127.0.0.1",
            client_cert: bool = True, extra: str = "") -> str:
        """A ``rediss://`` URL for ``user`` with this CA (and the client certificate)."""
        password = password or {"admin": ADMIN_PASSWORD, "ocpp-router": ROUTER_PASSWORD,
                                "ocpp-backend": BACKEND_PASSWORD}[user]
        query = f"ssl_ca_certs={quote(str(self.ca.ca))}"
        if client_cert:
            query += (f"&ssl_certfile={quote(str(self.ca.client_cert))}"
                      f"&ssl_keyfile={quote(str(self.ca.client_key))}")
        return f"rediss://{user}:{password}@{host}:{self.port}/0?{query}{extra}"

    def start(self, timeout: float = 15.0) -> TLSRedis:
        acl = self._dir / "users.acl"
        acl.write_text("\n".join([
            "user default off",
            f"user admin on >{ADMIN_PASSWORD} ~* &* +@all",
            documented_acl("ocpp-router", self.prefix),
            documented_acl("ocpp-backend", self.prefix),
        ]) + "\n")
        self.proc = subprocess.Popen([
            find_redis_server(), "--port", "0", "--tls-port", str(self.port),
            "--bind", "127.0.0.1", "--dir", str(self._dir), "--save", "", "--appendonly", "no",
            "--tls-cert-file", str(self.ca.server_cert), "--tls-key-file", str(self.ca.server_key),
            "--tls-ca-cert-file", str(self.ca.ca), "--tls-auth-clients", "yes",
            "--aclfile", str(acl), "--loglevel", "warning",
            "--logfile", str(self._dir / "redis.log"),
        ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx = ssl.create_default_context(cafile=str(self.ca.ca))
        ctx.load_cert_chain(str(self.ca.client_cert), str(self.ca.client_key))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self._dir / "redis.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"TLS redis-server exited: {log[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw, \
                        ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"-NOAUTH"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("TLS redis-server did not answer")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> TLSRedis:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


async def documented_users_end_to_end(router_url: str, backend_url: str, prefix: str, *,
                                      shards: int = 1) -> None:
    """What each documented ACL user must be able to do, end to end: a router
    logged in as ``ocpp-router`` (``router_url``), the reference CSMS on the
    SDK and the CLI as ``ocpp-backend`` (``backend_url``). A charger with a
    password (Basic auth, set by the CLI) boots and authorises; the CLI lists
    it, CALLs it and tails the stream; the router counted no Redis error (a
    NOPERM would be one) and drains cleanly."""
    conn = ["--redis-url", backend_url, "--key-prefix", prefix]
    rc, _out, err = await cli("auth", "set", "CP-TLS", *conn, stdin=b"s3cret-passw0rd-16\n")
    assert rc == 0, err
    node: RouterNode = await asyncio.to_thread(
        start_router, router_url, prefix, "--auth", "basic", "--shards", str(shards))
    backend = parse_redis_url(backend_url).redis_py()
    csms = ReferenceCSMS(backend, prefix=prefix, shards=shards, block=0.5)
    task = asyncio.create_task(csms.run())
    try:
        await asyncio.wait_for(csms.app.wait_ready(), timeout(20))
        header = {"Authorization": "Basic " + base64.b64encode(
            b"CP-TLS:s3cret-passw0rd-16").decode()}
        async with websockets.connect(node.url("CP-TLS"), subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                      additional_headers=header) as ws:
            cp = Charger16("CP-TLS", ws)
            runner = asyncio.create_task(cp.start())
            try:
                boot = await asyncio.wait_for(cp.call(call16.BootNotification(
                    charge_point_vendor="ACME", charge_point_model="X1")), timeout(20))
                assert boot.status == "Accepted"
                auth = await asyncio.wait_for(cp.call(call16.Authorize(id_tag="04A2B3")),
                                              timeout(20))
                assert auth.id_tag_info["status"] == "Accepted"
                async with Client(backend, prefix=prefix, shards=shards) as client:
                    async with asyncio.timeout(timeout(10)):
                        while await client.where("CP-TLS") is None:
                            await asyncio.sleep(0.05)
                rc, out, err = await cli("chargers", "--json", *conn)
                assert rc == 0, err
                assert [r["identity"] for r in orjson.loads(out)] == ["CP-TLS"]
                # client.call's reply stream (on a cluster: on whichever
                # master its slot is).
                rc, out, err = await cli("call", "CP-TLS", "Reset", '{"type":"Soft"}', *conn)
                assert rc == 0, err
                assert orjson.loads(out) == {"status": "Accepted"}
                rc, out, err = await cli("tail", "--from-start", "--count", "3",
                                         "--shards", str(shards), *conn)
                assert rc == 0, err
                assert b"BootNotification" in out and b"Authorize" in out
            finally:
                runner.cancel()
        status, _ = node.admin("/readyz")
        assert status == 200
        _, metrics = node.admin("/metrics")
        errors = [line for line in metrics.splitlines()
                  if line.startswith("ocpp_router_redis_errors_total{")
                  and float(line.rsplit(" ", 1)[1]) > 0]
        assert errors == []
    finally:
        csms.stop()
        await asyncio.wait_for(task, timeout(30))
        await backend.aclose()
        node.stop()
    assert node.proc.returncode == 0
