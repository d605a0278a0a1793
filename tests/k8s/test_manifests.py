"""k8s/: the manifests are valid Kubernetes, and what they ask of creditflow is what creditflow accepts.

No cluster is needed: every document is checked against the Kubernetes API schemas
(kubernetes-validate, strict: unknown fields fail), and every creditflow command in a
pod is parsed by the real CLI and turned into the settings the command would run with,
its paths resolved against the pod's volume mounts.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from creditflow.cli import build_parser, run_settings_from_args
from creditflow.config import TenantConfigs

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
"""The oldest Kubernetes k8s/README.md names and the newest the validator knows."""
NOT_DEPLOYED = {"loadtest-job.yaml"}
"""Manifests run by hand (``kubectl create -f``), not by ``kubectl apply -k k8s/``."""
SECRET_VALUES = {"pii-key": "00" * 32, "clickhouse-password": "s3cret"}
_ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def manifests() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return loaded


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    kind = doc["kind"]
    if kind in ("StatefulSet", "Deployment", "Job"):
        spec: dict[str, Any] = doc["spec"]["template"]["spec"]
        return spec
    if kind == "CronJob":
        spec = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    return None


def workloads() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(file, workload, pod spec) of every workload in k8s/."""
    return [(name, doc, spec) for name, docs in manifests().items() for doc in docs if (spec := pod_spec(doc))]


def creditflow_containers() -> dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """``{"<file>/<container>": (workload, pod spec, container)}`` of every container running the creditflow image."""
    found = {}
    for name, doc, spec in workloads():
        for container in spec["containers"]:
            if container["image"].partition(":")[0] == "creditflow":
                found[f"{name}/{container['name']}"] = (doc, spec, container)
    return found


def container(key: str) -> dict[str, Any]:
    return creditflow_containers()[key][2]


def expanded_args(c: dict[str, Any]) -> list[str]:
    """The container's args with ``$(VAR)`` expanded as the kubelet does (secrets by ``SECRET_VALUES``)."""
    env = {}
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            key = var["valueFrom"]["secretKeyRef"]["key"]
            assert key in SECRET_VALUES, f"{c['name']}: secret key {key!r} is not one k8s/README.md creates"
            env[var["name"]] = SECRET_VALUES[key]

    def value(m: re.Match[str]) -> str:
        assert m.group(1) in env, f"{c['name']}: $({m.group(1)}) is used in args but not set in env"
        return env[m.group(1)]

    return [_ENV_REF.sub(value, arg) for arg in c["args"]]


def option(args: list[str], name: str) -> str | None:
    for arg in args:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def mount_of(c: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume mount ``path`` lies on (the longest matching mount path)."""
    mounts = [m for m in c.get("volumeMounts", []) if Path(path).is_relative_to(m["mountPath"])]
    assert mounts, f"{c['name']}: {path} is on no volume mount; add one or the data is lost with the pod"
    return max(mounts, key=lambda m: len(m["mountPath"]))


def pod_path(c: dict[str, Any], spec: dict[str, Any], path: str, tmp: Path) -> Path:
    """Where ``path`` of the pod is in this test: config maps are k8s/ itself, other volumes a temp directory."""
    mount = mount_of(c, path)
    volume = next((v for v in spec.get("volumes", []) if v["name"] == mount["name"]), {})  # {}: a claim template
    rest = Path(path).relative_to(mount["mountPath"])
    if "configMap" in volume:
        return K8S / rest
    return tmp / mount["name"] / rest


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_kubernetes(version: str) -> None:
    errors = []
    for name, docs in manifests().items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{name} {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


def test_a_manifest_with_an_unknown_field_is_refused() -> None:
    """The check above can fail: a misspelt field is caught, as a cluster's API server would refuse it."""
    doc = next(d for d in manifests()["flow.yaml"] if d["kind"] == "StatefulSet")
    doc["spec"]["template"]["spec"]["terminationGraceSeconds"] = 10
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_deploys_every_manifest_but_the_hand_run_ones() -> None:
    k = kustomization()
    assert sorted(k["resources"]) == sorted(set(manifests()) - NOT_DEPLOYED)
    for generator in k["configMapGenerator"]:
        for file in generator["files"]:
            assert (K8S / file).is_file(), f"kustomization.yaml generates {generator['name']} from missing {file}"
    namespaces = {doc["metadata"]["name"] for doc in manifests()["namespace.yaml"]}
    assert namespaces == {k["namespace"]}


def test_every_creditflow_command_is_accepted_by_the_cli() -> None:
    parser = build_parser()
    commands = {}
    for key, (_doc, _spec, c) in creditflow_containers().items():
        try:
            commands[key] = parser.parse_args(expanded_args(c))
        except SystemExit:
            pytest.fail(f"{key}: `creditflow {shlex.join(c['args'])}` is refused by the CLI (see the error above)")
    assert {args.command for args in commands.values()} == {"run", "retrain", "loadtest"}


WRITTEN_PATHS = ("--data-dir", "--recovery-dir", "--out")


def test_every_path_a_command_writes_is_on_a_writable_volume() -> None:
    checked = 0
    for key, (_doc, _spec, c) in creditflow_containers().items():
        for name in WRITTEN_PATHS:
            path = option(expanded_args(c), name)
            if path is not None:
                assert not mount_of(c, path).get("readOnly"), f"{key}: {name} {path} is on a read-only mount"
                checked += 1
    assert checked >= 3


def test_the_flow_pod_runs_with_its_tenants_and_keeps_its_state_on_its_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ((doc, spec, c),) = [v for k, v in creditflow_containers().items() if k.startswith("flow.yaml/")]
    args = build_parser().parse_args(expanded_args(c))
    settings = run_settings_from_args(args, args.source)

    assert settings.recovery_dir is not None, "the flow must run with recovery on (a restart would replay the source)"
    assert settings.archive_uri is not None and not mount_of(c, settings.archive_uri).get("readOnly")
    claims = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
    assert mount_of(c, settings.recovery_dir)["name"] in claims, "the recovery store must outlive the pod"
    assert doc["spec"]["replicas"] == 1, "one pod owns the recovery store and the single ClickHouse writer"
    assert settings.recovery_partitions >= settings.processes

    env = {var["name"] for var in c["env"]}
    assert "CREDITFLOW_PII_KEY" in env, "the PII key must come from the secret, not a file a new volume loses"
    monkeypatch.setenv("CREDITFLOW_PII_KEY", SECRET_VALUES["pii-key"])
    assert settings.tenants_file is not None
    tenants_file = pod_path(c, spec, settings.tenants_file, tmp_path)
    assert tenants_file.is_file(), f"--tenants {settings.tenants_file} is not in the mounted config map"
    live = dataclasses.replace(settings, tenants_file=str(tenants_file), recovery_dir=str(tmp_path / "recovery"))
    flow = live.flow_settings(live=False)  # loads and checks the tenant config, the PII key and the state store
    assert flow.configs == TenantConfigs.load(tenants_file)
    assert set(tomllib.loads(tenants_file.read_text())["tenants"]) <= set(flow.configs.tenants)


def test_retraining_reads_the_archive_the_flow_writes_and_publishes_where_the_flow_listens() -> None:
    flow, retrain = container("flow.yaml/flow"), container("retrain.yaml/retrain")
    flow_args, retrain_args = expanded_args(flow), expanded_args(retrain)
    archive = option(flow_args, "--archive")
    assert archive is not None and archive == option(retrain_args, "--archive")
    claims = {}
    for key in ("flow.yaml/flow", "retrain.yaml/retrain"):
        _doc, spec, c = creditflow_containers()[key]
        mount = mount_of(c, archive)
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        claims[key] = volume["persistentVolumeClaim"]["claimName"]
    assert len(set(claims.values())) == 1, claims
    pvc = next(d for d in manifests()["flow.yaml"] if d["kind"] == "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == claims["flow.yaml/flow"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "two pods mount the archive"
    assert option(flow_args, "--weights") == option(retrain_args, "--redis")


def test_every_host_a_command_names_is_a_service_with_that_port() -> None:
    services = {
        (doc["metadata"]["name"], port["port"])
        for docs in manifests().values()
        for doc in docs
        if doc["kind"] == "Service"
        for port in doc["spec"].get("ports", [])
    }
    for key, (_doc, _spec, c) in creditflow_containers().items():
        for arg in expanded_args(c):
            value = arg.split("=", 1)[-1]
            if re.match(r"^(redis|http|https)://", value):
                url = urlsplit(value)
                assert (url.hostname, url.port) in services, f"{key}: {url.hostname}:{url.port} is no Service"


def test_every_secret_a_pod_reads_is_made_by_the_readme_command() -> None:
    readme = (K8S / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "create secret generic" in line)
    made = set(re.findall(r"--from-literal=([a-z-]+)=", command))
    secret_name = command.split("create secret generic", 1)[1].split()[0]
    for name, _doc, spec in workloads():
        for c in spec["containers"]:
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret_name, f"{name}/{c['name']} reads secret {ref['name']}"
                    assert ref["key"] in made, f"{name}/{c['name']} reads key {ref['key']} the README never creates"
    assert made == set(SECRET_VALUES)


def test_images_are_this_release_and_the_dockerfile_runs_creditflow() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for key, (_doc, _spec, c) in creditflow_containers().items():
        assert c["image"] == f"creditflow:{version}", key
    (image,) = kustomization()["images"]
    assert image["newTag"] == version
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["creditflow"]' in dockerfile
    base = re.search(r"^FROM python:(\d+)\.(\d+)", dockerfile, re.M)
    assert base is not None and (3, 11) <= (int(base[1]), int(base[2])) <= (3, 12), "bytewax 0.21.1 wheels: 3.11-3.12"
    assert "redis-server" in dockerfile, "creditflow loadtest (k8s/loadtest-job.yaml) starts its own redis-server"
    assert f"creditflow:{version}" in dockerfile
