"""The chart rendered with Helm's own engine (helm-python-sdk, no helm binary)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "ocpp-router"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "rel"
NAMESPACE = "ocpp"


def values_file(name: str) -> dict[str, Any]:
    """The values of ``helm/ocpp-router/ci/<name>-values.yaml``."""
    return yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text()) or {}


def render(values: dict[str, Any] | None = None, *,
           hooks: bool = True) -> dict[str, str]:
    """Template path → rendered text, as ``helm template`` would produce.

    Raises:
        helm_python.HelmValuesError: the values break values.schema.json.
        helm_python.HelmRenderError: a template refused them (``fail``).
    """
    chart = helm.Chart.load(CHART)
    out = chart.render(copy.deepcopy(values or {}), name=RELEASE, namespace=NAMESPACE,
                       is_install=True)
    if not hooks:
        out = {k: v for k, v in out.items() if "/templates/tests/" not in k}
    return out


def manifests(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders (test hooks included)."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render(values).items()):
        if path.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} rendered"
    return found[0]


def router_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(docs, "Deployment", f"{RELEASE}-ocpp-router")
