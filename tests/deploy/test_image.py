"""The image for real: built with podman, the chart's rendered pods run as
Kubernetes would run them (tests/deploy/podman.py), against a real redis-server,
with real ``ocpp`` library chargers and the backend SDK's Client."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
import redis.asyncio as aioredis
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from prometheus_client.parser import text_string_to_metric_families

from router.backend import Client
from router.embedded_redis import RedisServer, free_port
from router.streams.keys import KeySpace
from tests.conftest import timeout
from tests.deploy import podman
from tests.deploy.chart import (
    NAMESPACE,
    RELEASE,
    find,
    manifests,
    router_deployment,
    values_file,
)

pytestmark = [
    pytest.mark.skipif(not podman.available(), reason="podman and mmdebstrap are not installed "
                                                      "(scripts/system-deps.sh installs them)"),
    # A fresh machine builds the base images and the image first (≈ 2 minutes).
    pytest.mark.timeout(900),
]

FULLNAME = f"{RELEASE}-ocpp-router"
CHARGERS = 5
PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    return podman.build_image()


def test_the_image_is_small_non_root_and_labelled(image: dict[str, Any]) -> None:
    config = image["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/opt/ocpp-router/bin/ocpp-router"]
    assert config["Cmd"] == ["serve"]
    assert config["StopSignal"] in ("SIGTERM", "15")
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.title"] == "ocpp-router"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", labels["org.opencontainers.image.revision"])
    # The runtime stage adds the virtual environment only: no compiler, no pip.
    def sh(command: str) -> str:
        return podman.podman("run", "--rm", "--entrypoint", "/bin/sh", podman.TEST_IMAGE,
                             "-c", command).stdout.strip()

    assert sh("command -v cc gcc || echo none") == "none"
    assert not [f for f in sh("ls /opt/ocpp-router/bin").split() if f.startswith("pip")]
    assert sh("ls /src /wheels /opt/build 2>/dev/null || echo none") == "none"
    assert image["Size"] < 150 * 1000 * 1000


class Charger(ChargePoint16):
    @on("Reset")
    async def on_reset(self, type: str) -> result16.Reset:  # "type": the OCPP field name
        return result16.Reset(status="Accepted")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError:
        return 0, ""


def pod_spec(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return dict(find(docs, "Deployment", name)["spec"]["template"]["spec"])


def port_of(pod: dict[str, Any], name: str) -> int:
    return next(int(p["containerPort"]) for p in pod["containers"][0]["ports"]
                if p["name"] == name)


def metric_names_used(expr: str) -> set[str]:
    return set(re.findall(r"\bocpp_router_[a-z0-9_]+", expr))


def check_metric_exists(name: str, families: dict[str, str]) -> None:
    """``name`` as a query writes it (``_total``, ``_bucket``, …) is served by /metrics."""
    if families.get(name) in ("gauge", "unknown"):
        return
    for suffix, kinds in (("_total", ("counter",)), ("_bucket", ("histogram",)),
                          ("_sum", ("histogram",)), ("_count", ("histogram",))):
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and families.get(base) in kinds:
            return
    raise AssertionError(f"{name} is queried but /metrics has no such series "
                         f"(families: {sorted(families)})")


@contextlib.asynccontextmanager
async def charger(url: str, identity: str) -> AsyncIterator[tuple[Charger, Any]]:
    async with websockets.connect(f"{url}{identity}", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
        cp = Charger(identity, ws)
        task = asyncio.create_task(cp.start())
        try:
            yield cp, ws
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await task


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_rendered_pod_serves_chargers_and_drains_on_stop(
        image: dict[str, Any], redis_server: RedisServer, key_prefix: str,
        tmp_path: Path, workers: int) -> None:
    # Redis with a password: the URL with credentials reaches the pod only
    # through the (emulated) Secret the chart references.
    setup = aioredis.Redis.from_url(redis_server.url)
    await setup.config_set("requirepass", PASSWORD)
    await setup.aclose()
    redis_url = f"redis://:{PASSWORD}@127.0.0.1:{redis_server.port}/0"
    port, admin = free_port(), free_port()
    values = {
        "image": {"repository": "localhost/ocpp-router", "tag": "test"},
        "redis": {"existingSecret": "test-redis"},
        "config": {"port": port, "admin_port": admin, "key_prefix": key_prefix,
                   "drain_seconds": 3, "close_timeout": 2, "workers": workers},
        "lifecycle": {"preStopSeconds": 1},
        "referenceCsms": {"enabled": True},
        "metrics": values_file("monitoring")["metrics"],
    }
    docs = manifests(values)
    pod = router_deployment(docs)["spec"]["template"]["spec"]
    csms_pod = pod_spec(docs, f"{FULLNAME}-reference-csms")
    secrets = {("test-redis", "url"): redis_url}
    config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    assert port_of(pod, "ocpp") == port and port_of(pod, "admin") == admin
    suffix = uuid.uuid4().hex[:8]
    router_name, csms_name = f"{FULLNAME}-{suffix}", f"{FULLNAME}-csms-{suffix}"
    (tmp_path / "router").mkdir()
    (tmp_path / "csms").mkdir()
    router_args = podman.run_args(pod, name=router_name, secrets=secrets,
                                  config_maps=config_maps, workdir=tmp_path / "router")
    csms_args = podman.run_args(csms_pod, name=csms_name, secrets=secrets, config_maps={},
                                workdir=tmp_path / "csms")
    probe = pod["containers"][0]["readinessProbe"]["httpGet"]
    ready_url = f"http://127.0.0.1:{port_of(pod, probe['port'])}{probe['path']}"

    redis = aioredis.Redis.from_url(redis_url)
    client = Client(redis, prefix=key_prefix)
    try:
        with podman.running(router_args), podman.running(csms_args):
            async with asyncio.timeout(timeout(60)):
                while (await asyncio.to_thread(http_get, ready_url))[0] != 200:
                    await asyncio.sleep(0.1)
            # The reference CSMS's group reads new entries only: wait for it.
            inbound = KeySpace(key_prefix, 1).inbound(0)
            async with asyncio.timeout(timeout(60)):
                while True:
                    with contextlib.suppress(aioredis.ResponseError):
                        if await redis.xinfo_groups(inbound):
                            break
                    await asyncio.sleep(0.1)

            state = podman.state(router_name)
            await check_process(router_name, state["Pid"])

            async with contextlib.AsyncExitStack() as stack:
                url = f"ws://127.0.0.1:{port}/ocpp/"
                conns = [await stack.enter_async_context(charger(url, f"CP-{i}"))
                         for i in range(CHARGERS)]
                for cp, _ in conns:
                    boot = await cp.call(call16.BootNotification(charge_point_vendor="ACME",
                                                                 charge_point_model="K8s"))
                    assert boot.status == "Accepted"
                where = await client.where("CP-0")
                nodes = [router_name] if workers == 1 else [
                    f"{router_name}-{i}" for i in range(workers)]
                assert where is not None and where.node in nodes
                answer = await client.call("CP-0", "Reset", {"type": "Soft"},
                                           timeout=timeout(10))
                assert answer == {"status": "Accepted"}

                await check_metrics(admin, docs)

                took = await asyncio.to_thread(podman.stop_like_kubelet, router_name, pod)
                codes = []
                for _, ws in conns:
                    with contextlib.suppress(websockets.ConnectionClosed):
                        await asyncio.wait_for(ws.wait_closed(), timeout(10))
                    codes.append(ws.close_code)
            assert codes == [1001] * CHARGERS
            final = podman.state(router_name)
            log = podman.logs(router_name)
            assert final["ExitCode"] == 0, log
            assert took < pod["terminationGracePeriodSeconds"], log
            # Every worker drained its share (the kernel spreads connections).
            drained = re.findall(r"draining (\d+) connections over 3 s", log)
            assert len(drained) == workers and sum(map(int, drained)) == CHARGERS, log
            assert "file descriptor limit 20000: room for about" in log
    finally:
        await client.close()
        await redis.aclose()


async def check_process(name: str, pid: int) -> None:
    """uid 10001, a read-only root with a writable /tmp, the fd limit raised to the hard one."""
    status = Path(f"/proc/{pid}/status").read_text()
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
    assert uids is not None and uids.groups() == ("10001", "10001")
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert re.search(r"^Max open files\s+20000\s+20000", limits, re.M), limits
    python = "/opt/ocpp-router/bin/python"
    write = "import sys; open(sys.argv[1], 'w').write('x')"
    for path in ("/opt/ocpp-router/x", "/etc/x", "/x"):
        proc = await asyncio.to_thread(podman.podman, "exec", name, python, "-c", write, path,
                                       check=False)
        assert proc.returncode != 0 and "Read-only file system" in proc.stderr, proc.stderr
    proc = await asyncio.to_thread(podman.podman, "exec", name, python, "-c", write, "/tmp/x",
                                   check=False)
    assert proc.returncode == 0, proc.stderr


async def check_metrics(admin: int, docs: list[dict[str, Any]]) -> None:
    """Every metric the dashboard, the alerts and the autoscalers query is on /metrics."""
    status, text = await asyncio.to_thread(http_get, f"http://127.0.0.1:{admin}/metrics")
    assert status == 200
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    dashboard = json.loads(find(docs, "ConfigMap", f"{FULLNAME}-dashboard")["data"][
        "ocpp-router.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if "query" in v
              and isinstance(v["query"], dict)]
    exprs += [r["expr"] for g in find(docs, "PrometheusRule")["spec"]["groups"]
              for r in g["rules"]]
    exprs.append(values_file("hpa").get("autoscaling", {}).get("hpa", {}).get(
        "connectionsMetric", "ocpp_router_connections"))
    used = set().union(*(metric_names_used(e) for e in exprs))
    assert len(used) >= 10
    for name in sorted(used):
        check_metric_exists(name, families)


def test_a_sigterm_during_start_up_ends_the_router_at_once(image: dict[str, Any]) -> None:
    """PID 1 ignores signals it has no handler for: the command installs one at once,
    so a pod deleted while it starts does not wait for its grace period."""
    name = f"ocpp-router-early-{uuid.uuid4().hex[:8]}"
    with podman.running(["run", "--detach", "--name", name, "--network", "none",
                         podman.TEST_IMAGE, "serve", "--redis-url", "redis://192.0.2.1:6379/0"]):
        status = Path(f"/proc/{podman.state(name)['Pid']}/status")
        deadline = time.monotonic() + timeout(30)
        # SigCgt: the signals the process catches; bit 15 - 1 is SIGTERM.
        while not int(re.search(r"^SigCgt:\s+([0-9a-f]+)", status.read_text(), re.M)
                      .group(1), 16) & (1 << 14):       # type: ignore[union-attr]
            assert time.monotonic() < deadline, "SIGTERM never handled"
            time.sleep(0.005)
        started = time.monotonic()
        podman.podman("stop", "--time", "30", name, timeout=60)
        assert time.monotonic() - started < 20
        # 143 when the SIGTERM came before the node listened, 0 after its drain.
        assert podman.state(name)["ExitCode"] in (0, 128 + 15)


@pytest.mark.skipif(importlib.util.find_spec("router.cli.simulate") is None,
                    reason="`ocpp-router simulate` (the helm test hook's charger) is not in "
                           "this build yet")
def test_the_helm_test_hook_boots_a_charger_through_the_service(
        image: dict[str, Any], redis_server: RedisServer, key_prefix: str,
        tmp_path: Path) -> None:
    """``helm test``: the rendered hook pod, run from the image, boots one charger through
    the chargers' Service (its DNS name resolved to the router) and exits 0."""
    port, admin = free_port(), free_port()
    values = {"image": {"repository": "localhost/ocpp-router", "tag": "test"},
              "redis": {"existingSecret": "test-redis"},
              "service": {"port": port},
              "config": {"port": port, "admin_port": admin, "key_prefix": key_prefix},
              "referenceCsms": {"enabled": True}}
    docs = manifests(values)
    secrets = {("test-redis", "url"): redis_server.url}
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    hook = next(d for d in docs if d["kind"] == "Pod")["spec"]
    suffix = uuid.uuid4().hex[:8]
    for sub in ("router", "csms", "hook"):
        (tmp_path / sub).mkdir()
    router_args = podman.run_args(router_deployment(docs)["spec"]["template"]["spec"],
                                  name=f"{FULLNAME}-{suffix}", secrets=secrets,
                                  config_maps=maps, workdir=tmp_path / "router")
    csms_args = podman.run_args(pod_spec(docs, f"{FULLNAME}-reference-csms"),
                                name=f"{FULLNAME}-csms-{suffix}", secrets=secrets,
                                config_maps={}, workdir=tmp_path / "csms")
    hook_args = podman.run_args(hook, name=f"{FULLNAME}-test-{suffix}", secrets={},
                                config_maps={}, workdir=tmp_path / "hook",
                                hosts={f"{FULLNAME}.{NAMESPACE}.svc": "127.0.0.1"})
    with podman.running(router_args), podman.running(csms_args):
        deadline = time.monotonic() + timeout(60)
        while http_get(f"http://127.0.0.1:{admin}/readyz")[0] != 200:
            assert time.monotonic() < deadline, "the router never became ready"
            time.sleep(0.1)
        # The reference CSMS's group reads new entries only: wait for it.
        sync = redis_sync.Redis.from_url(redis_server.url)
        inbound = KeySpace(key_prefix, 1).inbound(0)
        while not (sync.exists(inbound) and sync.xinfo_groups(inbound)):
            assert time.monotonic() < deadline, "the reference CSMS never joined"
            time.sleep(0.1)
        sync.close()
        with podman.running(hook_args) as name:
            proc = podman.podman("wait", name, timeout=timeout(120))
            assert proc.stdout.strip() == "0", podman.logs(name)
