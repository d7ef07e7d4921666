"""deploy/kubernetes/, checked offline: there is no cluster and no kubectl here. Every file the
kustomization lists is validated against the bundled schemas of each Kubernetes version named
in SUPPORTED (kubernetes-validate, strict: an unknown or misspelt field fails), and then read
for the mistakes a schema cannot see: probes on the wrong port, a grace period gunicorn's
drain does not fit in, a committed secret, selectors that miss the pods, settings the app
does not read."""

import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
# The minor versions upstream still maintains when this was written; kubernetes-validate
# (constraints.txt) ships their schemas. Add the next one when the pin is raised.
SUPPORTED = ["1.35", "1.36", "1.37"]
SECRET_NAME = "userql-secrets"
CONFIG_NAME = "userql-config"
# What only the Secret may hold.
SECRET_SETTINGS = {"DATABASE_URL", "JWT_SECRET"}
# gunicorn.conf.py's default, when the ConfigMap does not set it.
GRACEFUL_TIMEOUT_DEFAULT = 30
# gunicorn.conf.py's worker_tmp_dir: the heartbeat files, in memory.
SHM = "/dev/shm"  # noqa: S108


def load(name: str) -> list[dict[str, Any]]:
    documents = [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc]
    assert documents, f"{name} holds no document"
    assert all(isinstance(doc, dict) for doc in documents)
    return documents


def kustomization() -> dict[str, Any]:
    (document,) = load("kustomization.yaml")
    assert document["kind"] == "Kustomization"
    return document


def resources() -> list[dict[str, Any]]:
    return [doc for name in kustomization()["resources"] for doc in load(name)]


def one(kind: str) -> dict[str, Any]:
    (document,) = [doc for doc in resources() if doc["kind"] == kind]
    return document


def pod_spec(kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(kind)["spec"]["template"]["spec"]
    return spec


def config() -> dict[str, str]:
    data: dict[str, str] = one("ConfigMap")["data"]
    return data


def documented_settings() -> set[str]:
    """The names in README.md's Settings table: rows that start with "| `NAME` |"."""
    readme = (ROOT / "README.md").read_text()
    _, _, settings = readme.partition("\n## Settings\n")
    table, _, _ = settings.partition("\n## ")
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", table, flags=re.MULTILINE))


def test_the_kustomization_lists_every_manifest_once() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {path.name for path in MANIFESTS.iterdir() if path.suffix in {".yaml", ".yml"}}
    assert set(listed) == on_disk - {"kustomization.yaml"}
    assert {doc["kind"] for doc in resources()} == {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Job",
        "PodDisruptionBudget",
        "Service",
    }


@pytest.mark.parametrize("version", SUPPORTED)
def test_every_manifest_validates_strictly(version: str) -> None:
    for document in resources():
        validated = kubernetes_validate.validate(document, version, strict=True)
        # Not an older version's schema standing in for one the package lacks.
        assert validated == version, document["kind"]


def test_strict_validation_rejects_an_unknown_field() -> None:
    deployment = one("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, SUPPORTED[-1], strict=True)


def test_no_secret_is_committed() -> None:
    assert "Secret" not in {doc["kind"] for doc in resources()}
    generators = {"secretGenerator", "configMapGenerator"} & set(kustomization())
    assert not generators, "kustomize build must work from a clone, with nothing to fill in"
    assert not SECRET_SETTINGS & set(config()), "secrets belong in the Secret"


def test_the_job_and_the_deployment_read_the_same_settings() -> None:
    expected = [{"configMapRef": {"name": CONFIG_NAME}}, {"secretRef": {"name": SECRET_NAME}}]
    for kind in ("Deployment", "Job"):
        (container,) = pod_spec(kind)["containers"]
        assert container["envFrom"] == expected, kind
        assert "env" not in container, f"{kind}: every setting comes from the ConfigMap"
    assert one("ConfigMap")["metadata"]["name"] == CONFIG_NAME


def test_the_configmap_holds_only_settings_the_app_reads() -> None:
    settings = documented_settings()
    assert {"DATABASE_URL", "REDIS_URL", "WEB_CONCURRENCY"} <= settings, "the table was found"
    assert set(config()) <= settings
    assert config()["USERQL_ENV"] == "production"
    assert all(isinstance(value, str) for value in config().values())


def test_the_probes_ask_the_health_port() -> None:
    (container,) = pod_spec("Deployment")["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8000, "health": int(config().get("HEALTH_PORT", "8081"))}
    expected = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "health"}, probe
        # Longer than /readyz's own database timeouts (under 1 s).
        assert container[probe]["timeoutSeconds"] >= 2, probe


def test_gunicorn_drains_before_the_kubelet_kills() -> None:
    spec = pod_spec("Deployment")
    graceful = int(config().get("GUNICORN_GRACEFUL_TIMEOUT", GRACEFUL_TIMEOUT_DEFAULT))
    (container,) = spec["containers"]
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "python", "the image has no shell"
    sleep = re.fullmatch(r"import time; time\.sleep\((\d+)\)", pause[2])
    assert sleep, pause
    assert spec["terminationGracePeriodSeconds"] > int(sleep[1]) + graceful


def test_the_pods_pause_before_sigterm_instead_of_draining() -> None:
    """The preStop pause, not SHUTDOWN_DRAIN_SECONDS, keeps requests off a terminating pod
    (docs/deploy.md): a drain there would only lengthen every stop."""
    assert config()["SHUTDOWN_DRAIN_SECONDS"] == "0"


def test_pods_run_as_the_image_user_with_nothing_writable() -> None:
    for kind in ("Deployment", "Job"):
        spec = pod_spec(kind)
        assert spec["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }, kind
        assert spec["automountServiceAccountToken"] is False, kind
        for container in spec["containers"]:
            assert container["securityContext"] == {
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            }, kind
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), kind
            assert "memory" in resources["limits"], kind
    assert f'worker_tmp_dir = "{SHM}"' in (ROOT / "gunicorn.conf.py").read_text()
    (container,) = pod_spec("Deployment")["containers"]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == SHM
    (volume,) = pod_spec("Deployment")["volumes"]
    assert volume["name"] == mount["name"]
    assert volume["emptyDir"]["medium"] == "Memory"


def test_the_workers_match_the_cpu_request() -> None:
    (container,) = pod_spec("Deployment")["containers"]
    cpu = container["resources"]["requests"]["cpu"]
    cores = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    # gunicorn.conf.py's own rule, 2 per core, applied to the pod's share of the node.
    assert int(config()["WEB_CONCURRENCY"]) == max(1, round(2 * cores))


def test_the_migration_job_runs_once_and_is_cleaned_up() -> None:
    job = one("Job")["spec"]
    spec = job["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["userql", "migrate"]
    assert spec["restartPolicy"] in {"Never", "OnFailure"}
    assert job["backoffLimit"] > 0
    assert job["ttlSecondsAfterFinished"] > 0
    assert "ports" not in container


def test_selectors_find_the_api_pods_and_only_them() -> None:
    deployment = one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    service = one("Service")["spec"]
    assert service["selector"] == selector
    assert one("PodDisruptionBudget")["spec"]["selector"] == {"matchLabels": selector}
    job_labels = one("Job")["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= job_labels.items(), "the Job's pods serve nobody"
    target = one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "userql"}
    assert deployment["metadata"]["name"] == target["name"]


def test_the_service_reaches_the_api_port() -> None:
    service = one("Service")["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]


def test_rollouts_and_drains_keep_a_replica_serving() -> None:
    deployment = one("Deployment")["spec"]
    assert "replicas" not in deployment, "the autoscaler owns the count"
    assert deployment["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    hpa = one("HorizontalPodAutoscaler")["spec"]
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    pdb = one("PodDisruptionBudget")["spec"]
    assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable") == 1


def test_every_image_is_one_the_kustomization_sets() -> None:
    names = {image["name"] for image in kustomization()["images"]}
    for kind in ("Deployment", "Job"):
        for container in pod_spec(kind)["containers"]:
            name, _, _ = container["image"].partition(":")
            assert name in names, kind
