"""The Kubernetes overlays render with `kubectl kustomize`, validate against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields are errors), and have the shape operations rely on."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from deploy_files import KUSTOMIZE, OVERLAYS, kustomize

# The Kubernetes release the manifests are written for (kubectl's on the project's machines).
KUBERNETES_VERSION = "1.32"
# Custom resources have no schema in kubernetes-validate: they are listed here, and checked by
# hand below, rather than skipped silently. Anything else without a schema fails.
CRD_OBJECTS = {
    "production": {("ScaledObject", "ponyserve-worker"), ("PodMonitor", "ponyserve")},
    "dev": set(),
}

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {overlay: kustomize(KUSTOMIZE / "overlays" / overlay) for overlay in OVERLAYS}


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _pod_specs(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield doc, doc["spec"]["template"]["spec"]


def _containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _config(docs: list[Doc]) -> dict[str, str]:
    return _one(docs, "ConfigMap", "ponyserve-config")["data"]


def _env(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_validates_against_the_kubernetes_schemas(rendered: dict[str, list[Doc]], overlay: str) -> None:
    custom = set()
    for doc in rendered[overlay]:
        key = (doc["kind"], doc["metadata"]["name"])
        if key in CRD_OBJECTS[overlay]:
            custom.add(key)
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {key}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert custom == CRD_OBJECTS[overlay]


def test_the_validator_refuses_what_the_api_server_would() -> None:
    """Guards the test above: strict validation really rejects a misspelt field and a wrong type."""
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"selector": {"matchLabels": {"a": "b"}},
                           "template": {"metadata": {"labels": {"a": "b"}},
                                        "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    del deployment["spec"]["template"]["spec"]["terminationGracePeriod"]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_selector_selects_pods_the_overlay_runs(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d, _ in _pod_specs(docs)]

    def selects(match: dict[str, str]) -> bool:
        return any(match.items() <= labels.items() for labels in pod_labels)

    for doc in docs:
        kind, spec = doc["kind"], doc.get("spec", {})
        if kind == "Service":
            assert selects(spec["selector"]), doc["metadata"]["name"]
        elif kind in ("PodDisruptionBudget", "NetworkPolicy", "PodMonitor"):
            key = "podSelector" if kind == "NetworkPolicy" else "selector"
            assert selects(spec[key]["matchLabels"]), (kind, doc["metadata"]["name"])
        elif kind in ("Deployment", "StatefulSet"):
            assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
        elif kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            _one(docs, "Deployment", spec["scaleTargetRef"]["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_unprivileged_with_requests_and_limits(rendered: dict[str, list[Doc]], overlay: str) -> None:
    for owner, pod in _pod_specs(rendered[overlay]):
        name = owner["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        for container in _containers(pod):
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][bound].keys(), where
    namespace = _one(rendered[overlay], "Namespace", "ponyserve")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_draining(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    drain = float(_config(docs)["PONYSERVE_DRAIN_TIMEOUT_SECONDS"])
    api = _one(docs, "Deployment", "ponyserve-api")["spec"]["template"]["spec"]
    [container] = api["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"].split("?")[0] == "/readyz"
    assert api["terminationGracePeriodSeconds"] > drain
    worker_deployment = _one(docs, "Deployment", "ponyserve-worker")
    worker = worker_deployment["spec"]["template"]["spec"]
    [container] = worker["containers"]
    # The grace period outlasts the drain, and preStop asks the worker (PID 1) to drain and waits for it.
    assert worker["terminationGracePeriodSeconds"] > drain
    script = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "kill -TERM 1" in script and "kill -0 1" in script and "PONYSERVE_DRAIN_TIMEOUT_SECONDS" in script
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == int(_config(docs)["PONYSERVE_WORKER_METRICS_PORT"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # A rollout never lowers capacity: the new worker is ready (models loaded) before an old one drains.
    assert worker_deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    job = _one(docs, "Job", "ponyserve-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["ponyserve", "migrate"]
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migrate"


def test_production_takes_its_database_and_storage_from_secrets_and_runs_on_gpus(
        rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["production"]
    # Created by the operator (docs/operations.md); nothing secret is in the repository.
    assert not [d for d in docs if d["kind"] == "Secret"]
    for name in ("ponyserve-api", "ponyserve-worker"):
        pod = _one(docs, "Deployment", name)["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = _env(container)
        for variable in ("PONYSERVE_DATABASE_URL", "PONYSERVE_STORAGE_URL", "PONYSERVE_METRICS_TOKEN",
                         "PONYSERVE_PUBLIC_URL"):
            ref = env[variable]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "ponyserve-secrets" and not ref.get("optional", False), (name, variable)
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["models"]["readOnly"] is True and mounts["models"]["mountPath"] == "/models"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "ponyserve-models", "readOnly": True}
        assert "replicas" not in _one(docs, "Deployment", name)["spec"]  # the autoscalers own it
    assert _config(docs)["PONYSERVE_MODELS_FILE"].startswith("/models/")
    claim = _one(docs, "PersistentVolumeClaim", "ponyserve-models")
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    worker = _one(docs, "Deployment", "ponyserve-worker")["spec"]["template"]["spec"]
    [container] = worker["containers"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"]
    assert _env(container)["PONYSERVE_DEVICE"]["value"] == "cuda:0"
    hpa = _one(docs, "HorizontalPodAutoscaler", "ponyserve-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "ponyserve-api" and hpa["spec"]["minReplicas"] >= 2
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"} == {
        "ponyserve-api", "ponyserve-worker"}
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert policies["ponyserve-default-deny"]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policies["ponyserve-default-deny"]["spec"]


def test_workers_scale_on_the_queue_and_may_scale_to_zero(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    scaled = _one(rendered["production"], "ScaledObject", "ponyserve-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "ponyserve-worker"
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and "ponyserve_jobs" in trigger["metadata"]["query"]
    assert float(trigger["metadata"]["threshold"]) > 0
    # The component, added to an overlay built on production, lets KEDA go down to zero workers.
    base = os.path.relpath(KUSTOMIZE, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{base}/overlays/production]\ncomponents: [{base}/components/scale-to-zero]\n")
    zero = _one(kustomize(tmp_path), "ScaledObject", "ponyserve-worker")
    assert zero["spec"]["minReplicaCount"] == 0
    assert {k: v for k, v in zero["spec"].items() if k != "minReplicaCount"} == \
        {k: v for k, v in scaled["spec"].items() if k != "minReplicaCount"}
    monitor = _one(rendered["production"], "PodMonitor", "ponyserve")
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} == {"http", "metrics"}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["authorization"]["credentials"] == {"name": "ponyserve-secrets",
                                                            "key": "PONYSERVE_METRICS_TOKEN"}


def test_dev_is_one_node_with_postgres_and_a_cpu_worker_on_the_demo_model(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["dev"]
    postgres = _one(docs, "StatefulSet", "postgres")
    service = _one(docs, "Service", "postgres")
    secret = _one(docs, "Secret", "ponyserve-secrets")
    url = base64.b64decode(secret["data"]["PONYSERVE_DATABASE_URL"]).decode()
    assert url.startswith("postgresql+psycopg://") and f"@{service['metadata']['name']}:5432/" in url
    assert postgres["spec"]["template"]["spec"]["containers"][0]["image"].startswith("postgres:")
    worker = _one(docs, "Deployment", "ponyserve-worker")["spec"]["template"]["spec"]
    [container] = worker["containers"]
    assert _env(container)["PONYSERVE_DEVICE"]["value"] == "cpu"
    assert not any("nvidia.com/gpu" in c["resources"].get(b, {}) for c in _containers(worker)
                   for b in ("requests", "limits"))
    [init] = worker["initContainers"]
    data_dir = _config(docs)["PONYSERVE_DATA_DIR"]
    # Where the demo model is written is where a worker without a models file looks for it.
    assert init["command"] == ["ponyserve", "demo-model", f"{data_dir}/models/demo"]
    assert "PONYSERVE_MODELS_FILE" not in _config(docs)
    assert not [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
