"""The container image, built and run with podman as Kubernetes would run the pod.

No Kubernetes API server exists here, so :func:`run_args` turns the rendered
pod's container into the equivalent ``podman run``: the same image, args and
environment (Secret references resolved from a dict), the user and group of
the security context, a read-only root with only the pod's volumes writable,
all capabilities dropped, no privilege escalation, RuntimeDefault seccomp (podman's
default profile), and containerd's default soft fd limit of 1024. Host networking
stands in for the pod network: the rendered ports are the host's ports.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.deploy.chart import ROOT

CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
TEST_IMAGE = "localhost/ocpp-router:test"
ENV = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
# One image build at a time on this machine (pytest-xdist workers, other checkouts).
LOCK = Path("/tmp/ocpp-router-image-build.lock")


def available() -> bool:
    return shutil.which("podman") is not None and shutil.which("mmdebstrap") is not None


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True,
                          check=check, timeout=timeout)


def build_image(tag: str = TEST_IMAGE) -> dict[str, Any]:
    """Build the local base images (cached) and the router image; its inspect data."""
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for script, args in (("base-image.sh", []), ("build-image.sh", [tag])):
            proc = subprocess.run([str(ROOT / "deploy" / "podman" / script), *args],
                                  env=ENV,
                                  capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(podman("image", "inspect", tag).stdout)[0]
    return dict(data)


def run_args(pod: dict[str, Any], *, name: str, secrets: dict[tuple[str, str], str],
             config_maps: dict[str, dict[str, str]], workdir: Path,
             hosts: dict[str, str] | None = None) -> list[str]:
    """``podman run`` arguments equivalent to the pod's first container.

    ``hosts`` stands in for cluster DNS (Service name → address).
    """
    (container, *_) = pod["containers"]
    pod_ctx = pod.get("securityContext", {})
    ctx = {**pod_ctx, **container.get("securityContext", {})}
    args = ["run", "--detach", "--name", name, "--network", "host",
            # containerd's default soft limit; the hard one comes from containers.conf.
            "--ulimit", "nofile=1024:20000", "--ulimit", "nproc=32768:32768",
            "--hostname", name]
    for host, address in (hosts or {}).items():
        args += ["--add-host", f"{host}:{address}"]
    if "runAsUser" in ctx:
        args += ["--user", f"{ctx['runAsUser']}:{ctx.get('runAsGroup', ctx['runAsUser'])}"]
    if ctx.get("readOnlyRootFilesystem"):
        # Kubernetes mounts nothing writable beyond the pod's volumes (podman
        # would add tmpfs on /tmp, /run and /var/tmp).
        args += ["--read-only", "--read-only-tmpfs=false"]
    if ctx.get("capabilities", {}).get("drop") == ["ALL"]:
        args += ["--cap-drop", "all"]
    if ctx.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    assert ctx.get("seccompProfile", {"type": "RuntimeDefault"})["type"] == "RuntimeDefault"
    for env in container.get("env", []):
        if "value" in env:
            value = env["value"]
        else:
            ref = env["valueFrom"]["secretKeyRef"]
            value = secrets[(ref["name"], ref["key"])]
        args += ["--env", f"{env['name']}={value}"]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit", "64Mi").replace("Mi", "m")
            args += ["--tmpfs", f"{mount['mountPath']}:rw,size={size},mode=1777"]
            continue
        if "configMap" in volume:
            files = config_maps[volume["configMap"]["name"]]
        else:
            raise AssertionError(f"volume kind not emulated: {volume}")
        source = workdir / mount["name"]
        source.mkdir(mode=0o755)
        for key, text in files.items():
            (source / key).write_text(text)
            (source / key).chmod(0o644)
        args += ["--volume", f"{source}:{mount['mountPath']}:ro"]
    if "command" in container:
        args += ["--entrypoint", json.dumps(container["command"])]
    return [*args, container["image"], *container.get("args", [])]


@contextlib.contextmanager
def running(args: list[str]) -> Iterator[str]:
    """Start a container from :func:`run_args`; remove it (and its logs) afterwards."""
    name = args[args.index("--name") + 1]
    podman(*args)
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def logs(name: str) -> str:
    proc = podman("logs", name, check=False)
    return proc.stdout + proc.stderr


def state(name: str) -> dict[str, Any]:
    return dict(json.loads(podman("inspect", name).stdout)[0]["State"])


def stop_like_kubelet(name: str, pod: dict[str, Any]) -> float:
    """What the kubelet does to a deleted pod: the preStop hook, then SIGTERM, then
    SIGKILL at terminationGracePeriodSeconds counted from the start of preStop.

    Returns the seconds from the start of preStop to the container's exit.
    """
    grace = pod["terminationGracePeriodSeconds"]
    started = time.monotonic()
    hook = pod["containers"][0].get("lifecycle", {}).get("preStop", {})
    if "exec" in hook:
        podman("exec", name, *hook["exec"]["command"], timeout=grace)
    elif "sleep" in hook:
        time.sleep(hook["sleep"]["seconds"])
    left = max(int(grace - (time.monotonic() - started)), 1)
    podman("stop", "--time", str(left), name, timeout=grace + 30)
    return time.monotonic() - started
