"""The Helm chart, rendered with Helm's own engine: lint, Kubernetes schemas,
values.schema.json, the grace-period arithmetic, secrets, presets, dashboard."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, latest_version

from router.config import OPTIONS, load
from scripts.chart_schema import NOT_IN_CONFIG, config_section
from tests.deploy.chart import (
    CHART,
    CI_VALUES,
    NAMESPACE,
    RELEASE,
    find,
    manifests,
    render,
    router_deployment,
    values_file,
)

FULLNAME = f"{RELEASE}-ocpp-router"
KUBE_VERSIONS = ("1.29.0", latest_version())
CI_NAMES = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"}


def schema() -> dict[str, Any]:
    return dict(json.loads((CHART / "values.schema.json").read_text()))


def test_the_ci_values_cover_every_deployment_shape() -> None:
    assert set(CI_NAMES) >= {"default", "tls", "mtls-proxy", "hpa", "keda", "monitoring",
                             "minimal"}


@pytest.mark.parametrize("name", CI_NAMES)
def test_lint_strict_passes(name: str) -> None:
    report = helm.lint(CHART, values_file(name), strict=True, namespace=NAMESPACE,
                       kube_version="v1.29.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert (problems, report["errors"]) == ([], [])


def check_crd(doc: dict[str, Any]) -> None:
    """The fields the Prometheus Operator and KEDA require (no CRD schemas ship with
    kubernetes-validate)."""
    spec = doc["spec"]
    kind = doc["kind"]
    if kind == "ServiceMonitor":
        assert spec["selector"]["matchLabels"]
        assert spec["endpoints"] and all("port" in e for e in spec["endpoints"])
    elif kind == "PodMonitor":
        assert spec["selector"]["matchLabels"]
        assert spec["podMetricsEndpoints"] and all("port" in e for e in spec["podMetricsEndpoints"])
    elif kind == "PrometheusRule":
        assert spec["groups"]
        for group in spec["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert rule["expr"].strip() and ("alert" in rule) != ("record" in rule)
                assert rule["labels"]["severity"] in ("critical", "warning", "info")
                assert rule["annotations"]["summary"]
    elif kind == "ScaledObject":
        assert spec["scaleTargetRef"]["name"] == FULLNAME
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["triggers"]
        for trigger in spec["triggers"]:
            assert trigger["type"] and trigger["metadata"]
            if trigger["type"] == "prometheus":
                assert {"serverAddress", "query", "threshold"} <= trigger["metadata"].keys()
                assert all(isinstance(v, str) for v in trigger["metadata"].values())


@pytest.mark.parametrize("name", CI_NAMES)
def test_every_manifest_validates_against_kubernetes(name: str) -> None:
    docs = manifests(values_file(name))
    assert docs
    for doc in docs:
        assert doc["metadata"]["name"]
        if doc["kind"] in CRD_KINDS:
            check_crd(doc)
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except SchemaNotFoundError as exc:      # pragma: no cover - a kind the test must know
                pytest.fail(f"no Kubernetes schema for {doc['kind']}: {exc.message}")
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} is not valid "
                            f"Kubernetes {version}: {path}: {exc.message}")


def test_the_validator_catches_a_broken_manifest() -> None:
    deployment = router_deployment(manifests())
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUsr"] = 1
    for version in KUBE_VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError, match="runAsUsr"):
            kubernetes_validate.validate(deployment, version, strict=True)


@pytest.mark.parametrize(("values", "message"), [
    ({"replicaCount": "3"}, "at '/replicaCount': got string, want integer"),
    ({"autoscaling": {"hpa": {"enabled": True}, "keda": {"enabled": True}}},
     "autoscaling.hpa and autoscaling.keda exclude each other"),
    ({"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}},
     "metrics.serviceMonitor and metrics.podMonitor scrape the same pods"),
    ({"config": {"reply_timout": 20}}, "additional properties 'reply_timout' not allowed"),
    ({"config": {"redis_url": "redis://:secret@redis:6379/0"}},
     "additional properties 'redis_url' not allowed"),
    ({"extraEnv": [{"name": "OCPP_ROUTER_REDIS_URL", "value": "redis://:secret@redis:6379"}]},
     "never a plain Redis URL"),
    ({"config": {"drain_seconds": -1}}, "at '/config/drain_seconds'"),
    ({"config": {"heartbeat": "sometimes"}}, "at '/config/heartbeat'"),
    ({"config": {"subprotocols": ["ocpp1.5"]}}, "at '/config/subprotocols/0'"),
    ({"loadBalancer": {"preset": "aws"}}, "at '/loadBalancer/preset'"),
    ({"service": {"type": "ExternalName"}}, "at '/service/type'"),
    ({"redis": {"existingSecret": ""}}, "at '/redis/existingSecret'"),
    ({"image": {"digest": "latest"}}, "at '/image/digest'"),
])
def test_the_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        render(values)
    assert message in str(info.value)


@pytest.mark.parametrize(("values", "message"), [
    ({"terminationGracePeriodSeconds": 40},
     "terminationGracePeriodSeconds 40 is shorter than the drain needs"),
    ({"config": {"ping_interval": 400}},
     "config.ping_interval 400 must be above 0 and below loadBalancer.idleTimeoutSeconds 350"),
    ({"config": {"ping_interval": 0}}, "config.ping_interval 0 must be above 0"),
    ({"tls": {"enabled": True}}, "tls.enabled needs tls.existingSecret"),
    ({"tls": {"enabled": True, "existingSecret": "t", "clientCA": {"enabled": True}}},
     "tls.clientCA.enabled needs tls.clientCA.existingSecret"),
])
def test_impossible_combinations_fail_with_a_clear_message(values: dict[str, Any],
                                                           message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as info:
        render(values)
    assert message in str(info.value)


def grace(values: dict[str, Any]) -> int:
    spec = router_deployment(manifests(values))["spec"]["template"]["spec"]
    return int(spec["terminationGracePeriodSeconds"])


@pytest.mark.parametrize(("pre_stop", "drain", "close", "publish", "margin"), [
    (10, 30, 5, 2, 5),          # the defaults
    (15, 120, 7.5, 2, 3),
    (0, 0, 1, 0.5, 0),
    (45, 300.25, 10, 5, 10),
])
def test_the_grace_period_covers_prestop_drain_close_and_publish(
        pre_stop: int, drain: float, close: float, publish: float, margin: int) -> None:
    values = {"lifecycle": {"preStopSeconds": pre_stop, "terminationMarginSeconds": margin},
              "config": {"drain_seconds": drain, "close_timeout": close,
                         "publish_timeout": publish}}
    needed = math.ceil(pre_stop + drain + close + publish + margin)
    assert grace(values) == needed
    # An explicit grace period is kept when long enough, refused when shorter.
    assert grace({**values, "terminationGracePeriodSeconds": needed + 60}) == needed + 60
    assert grace({**values, "terminationGracePeriodSeconds": needed}) == needed
    if needed > 1:
        with pytest.raises(helm.HelmRenderError, match="shorter than the drain needs"):
            render({**values, "terminationGracePeriodSeconds": needed - 1})


def test_no_secret_value_is_ever_rendered() -> None:
    url = re.compile(r"rediss?://[^\s\"']*:[^\s\"'@]*@")
    for name in CI_NAMES:
        for path, text in render(values_file(name)).items():
            assert not url.search(text), f"{name}: {path} holds a Redis URL with a password"
        for doc in manifests(values_file(name)):
            assert doc["kind"] != "Secret", f"{name}: the chart must not create Secrets"
            if doc["kind"] not in ("Deployment", "Pod"):
                continue
            pod = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
            for container in pod["containers"]:
                for env in container.get("env", []):
                    if env["name"] == "OCPP_ROUTER_REDIS_URL":
                        assert "value" not in env
                        assert env["valueFrom"]["secretKeyRef"] == {
                            "name": values_file(name).get("redis", {}).get(
                                "existingSecret", "ocpp-router-redis"),
                            "key": "url"}


def test_the_config_section_knows_every_router_option() -> None:
    assert schema()["properties"]["config"] == config_section(), (
        "values.schema.json's config section is not router/config.py's OPTIONS: "
        "run python -m scripts.chart_schema")
    props = schema()["properties"]["config"]["properties"]
    options = {o.name: o for o in OPTIONS}
    assert set(props) == set(options) - NOT_IN_CONFIG
    for name, prop in props.items():
        default = options[name].default
        if default is not None:
            default = list(default) if isinstance(default, tuple) else default
            jsonschema.validate(default, prop)
    # What values.yaml sets is the router's own default (the chart changes none).
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    for name, value in chart_values.items():
        assert value == options[name].default, name


@pytest.mark.parametrize("name", CI_NAMES)
def test_the_rendered_router_toml_is_what_the_router_loads(name: str, tmp_path: Path) -> None:
    values = values_file(name)
    docs = manifests(values)
    toml = find(docs, "ConfigMap", FULLNAME)["data"]["router.toml"]
    path = tmp_path / "router.toml"
    path.write_text(toml)
    config = load({"config": str(path)}, environ={})
    merged = {**yaml.safe_load((CHART / "values.yaml").read_text())["config"],
              **values.get("config", {})}
    for key, value in merged.items():
        loaded = getattr(config, key)
        assert (list(loaded) if isinstance(loaded, tuple) else loaded) == value, key
    proxy = values.get("trustedProxy", {})
    assert config.trusted_proxy_header == (proxy.get("header") or None)
    assert [str(n) for n in config.trusted_proxy_networks] == proxy.get("networks", [])


def test_the_pod_is_hardened_and_drains_before_it_is_killed() -> None:
    docs = manifests()
    deployment = router_deployment(docs)
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert find(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001,
                                      "runAsGroup": 10001, "fsGroup": 10001,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "privileged": False,
                                            "capabilities": {"drop": ["ALL"]}}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"ocpp": 9000, "admin": 9001}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["lifecycle"]["preStop"]["exec"]["command"][-1] == "import time; time.sleep(10)"
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert spec["minReadySeconds"] == 10 + 30          # the previous pod has drained
    assert router_deployment(manifests({"minReadySeconds": 5}))["spec"]["minReadySeconds"] == 5
    assert pod["terminationGracePeriodSeconds"] == 10 + 30 + 5 + 2 + 5
    keys = [c["topologyKey"] for c in pod["topologySpreadConstraints"]]
    assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    assert container["resources"]["requests"] and "cpu" not in container["resources"]["limits"]
    sleep = router_deployment(manifests({"lifecycle": {"preStopSleepAction": True}}))
    assert sleep["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"] == {
        "sleep": {"seconds": 10}}


def test_tls_mounts_the_secrets_and_points_the_options_at_them() -> None:
    docs = manifests(values_file("tls"))
    pod = router_deployment(docs)["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["OCPP_ROUTER_TLS_CERT"] == "/etc/ocpp-router/tls/tls.crt"
    assert env["OCPP_ROUTER_TLS_KEY"] == "/etc/ocpp-router/tls/tls.key"
    assert env["OCPP_ROUTER_TLS_CLIENT_CA"] == "/etc/ocpp-router/client-ca/ca.crt"
    assert env["SSL_CERT_FILE"] == "/etc/ocpp-router/redis-tls/ca.crt"
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"tls": "ocpp-router-tls", "client-ca": "ocpp-charger-ca",
                       "redis-tls": "ocpp-redis-ca"}
    service = find(docs, "Service", FULLNAME)
    assert service["spec"]["ports"][0]["port"] == 443
    assert "wss://<ADDRESS>:443/ocpp/" in render(values_file("tls"))[
        "ocpp-router/templates/NOTES.txt"]


def test_load_balancer_presets_follow_the_drain_and_idle_values() -> None:
    aws = find(manifests({"loadBalancer": {"preset": "aws-nlb"},
                          "lifecycle": {"preStopSeconds": 15},
                          "config": {"drain_seconds": 60},
                          "service": {"annotations": {
                              "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}}}),
               "Service", FULLNAME)
    notes = aws["metadata"]["annotations"]
    prefix = "service.beta.kubernetes.io/aws-load-balancer-"
    assert notes[prefix + "target-group-attributes"] == (
        "deregistration_delay.timeout_seconds=75,preserve_client_ip.enabled=true")
    assert notes[prefix + "listener-attributes.TCP-80"] == "tcp.idle_timeout.seconds=350"
    assert notes[prefix + "healthcheck-path"] == "/readyz"
    assert notes[prefix + "healthcheck-port"] == "9001"
    assert notes[prefix + "scheme"] == "internal"     # the user's annotation wins
    assert aws["spec"]["externalTrafficPolicy"] == "Local"
    azure = find(manifests(values_file("keda")), "Service", FULLNAME)
    assert azure["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout": "4"}
    gke = find(manifests(values_file("hpa")), "Service", FULLNAME)
    assert gke["metadata"]["annotations"] == {"cloud.google.com/l4-rbs": "enabled"}
    cluster_ip = find(manifests(values_file("minimal")), "Service", FULLNAME)
    assert "externalTrafficPolicy" not in cluster_ip["spec"]
    # No load balancer idle timeout known: any ping interval will do.
    manifests({"loadBalancer": {"idleTimeoutSeconds": 0}, "config": {"ping_interval": 0}})


def test_autoscalers_scale_on_cpu_and_connections_and_shrink_slowly() -> None:
    docs = manifests(values_file("hpa"))
    assert "replicas" not in router_deployment(docs)["spec"]
    hpa = find(docs, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 40)
    kinds = {m["type"]: m for m in hpa["metrics"]}
    assert kinds["Resource"]["resource"]["target"]["averageUtilization"] == 70
    assert kinds["Pods"]["pods"]["metric"]["name"] == "ocpp_router_connections"
    assert kinds["Pods"]["pods"]["target"]["averageValue"] == "8000"
    down = hpa["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] == 900
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]
    keda_docs = manifests(values_file("keda"))
    assert not [d for d in keda_docs if d["kind"] == "HorizontalPodAutoscaler"]
    scaled = find(keda_docs, "ScaledObject")["spec"]
    prometheus = next(t for t in scaled["triggers"] if t["type"] == "prometheus")
    assert prometheus["metadata"]["query"] == (
        f'sum(ocpp_router_connections{{namespace="{NAMESPACE}", pod=~"{FULLNAME}-.*"}})')
    assert scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == down
    assert find(manifests(), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_monitoring_objects_and_network_policy() -> None:
    docs = manifests(values_file("monitoring"))
    monitor = find(docs, "ServiceMonitor")["spec"]
    admin = find(docs, "Service", f"{FULLNAME}-admin")
    assert monitor["selector"]["matchLabels"].items() <= admin["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] == admin["spec"]["ports"][0]["name"] == "admin"
    rules = find(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {
        "OcppRouterRedisDisconnected", "OcppRouterReadingPaused", "OcppRouterBackendFailures",
        "OcppRouterReplyLatencyHigh", "OcppRouterValidationErrorsStep"}
    latency = next(r for r in rules if r["alert"] == "OcppRouterReplyLatencyHigh")
    assert latency["expr"].endswith("> 15")       # half of reply_timeout 30
    for rule in rules:
        assert f'namespace="{NAMESPACE}", pod=~"{FULLNAME}-.*"' in rule["expr"]
    policy = find(docs, "NetworkPolicy")["spec"]
    charger, admin_rule = policy["ingress"]
    assert charger == {"ports": [{"port": "ocpp", "protocol": "TCP"}]}     # open to chargers
    assert admin_rule["from"][0] == {"podSelector": {}}
    assert admin_rule["from"][1]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    csms = find(docs, "Deployment", f"{FULLNAME}-reference-csms")
    (container,) = csms["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["reference-csms"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert find(docs, "ConfigMap", f"{RELEASE}-extra")["data"] == {"note": "rendered with tpl"}
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: '{{ .Release.Name }}-text'\n"
    assert find(manifests({"extraObjects": [text]}), "ConfigMap", f"{RELEASE}-text")


def dashboard() -> dict[str, Any]:
    return dict(json.loads((CHART / "files" / "grafana-dashboard.json").read_text()))


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def test_the_dashboard_parses_and_ships_in_a_sidecar_configmap() -> None:
    docs = manifests(values_file("monitoring"))
    config_map = find(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "OCPP"}
    assert json.loads(config_map["data"]["ocpp-router.json"]) == dashboard()
    text = " ".join(dashboard_exprs())
    for family in ("ocpp_router_connections", "ocpp_router_handshakes_total",
                   "ocpp_router_messages_total", "ocpp_router_backend_reply_latency_seconds_bucket",
                   "ocpp_router_publish_latency_seconds_bucket", "ocpp_router_publish_pending",
                   "ocpp_router_reading_paused", "ocpp_router_redis_errors_total"):
        assert family in text
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_the_helm_test_hook_boots_one_charger_through_the_service() -> None:
    pod = next(d for d in manifests() if d["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["args"][:2] == ["simulate", f"ws://{FULLNAME}.{NAMESPACE}.svc:80/ocpp/"]
    assert container["args"][2:5] == ["--chargers", "1", "--idle"]
    assert container["image"] == "localhost/ocpp-router:0.1.0"
    sim = next(d for d in manifests({"tests": {"image": {"repository": "r/sim", "tag": "1"}}})
               if d["kind"] == "Pod")
    assert sim["spec"]["containers"][0]["image"] == "r/sim:1"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [d for d in manifests(values_file("minimal")) if d["kind"] == "Pod"]


def test_notes_print_the_charger_url() -> None:
    notes = render()["ocpp-router/templates/NOTES.txt"]
    assert "ws://<ADDRESS>:80/ocpp/<charge point identity>" in notes
    assert f"kubectl -n {NAMESPACE} get service {FULLNAME}" in notes
    minimal = render(values_file("minimal"))["ocpp-router/templates/NOTES.txt"]
    assert f"ws://{FULLNAME}.{NAMESPACE}.svc:80/ocpp/<charge point identity>" in minimal
