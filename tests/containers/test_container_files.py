"""compose.yaml and k8s/ validate offline, and a deliberately broken copy of either fails validation."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from .validation import (
    REPO,
    compose_reference_errors,
    compose_schema_errors,
    file_schema_errors,
    kustomize,
    manifest_files,
    reference_errors,
    schema_errors,
)

OVERLAY = Path("k8s/overlays/provider")
# The base deliberately leaves the node's keys to the overlay (they are the node's identity).
BASE_EXTERNAL = {("Secret", "avadios-node-keys")}


def _copy_with_keys(dest: Path) -> Path:
    """A copy of the repo's container files, with throwaway node keys made by k8s/make-keys.sh."""
    for name in ("compose.yaml", ".env.example"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "k8s", dest / "k8s", ignore=shutil.ignore_patterns("keys"))
    subprocess.run(["bash", str(dest / "k8s/make-keys.sh"), str(dest / OVERLAY / "keys")], check=True, timeout=30)
    return dest


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    root = _copy_with_keys(tmp_path_factory.mktemp("k8s"))
    return {"base": kustomize(root / "k8s/base"), "provider": kustomize(root / OVERLAY)}


def _all_errors(root: Path, parts: tuple[str, ...] = ("compose", "k8s")) -> list[str]:
    """Every check CI runs on the container files under `root` (the compose ones, the Kubernetes ones, or both)."""
    errors: list[str] = []
    if "compose" in parts:
        errors += compose_schema_errors(root / "compose.yaml")
        errors += compose_reference_errors((root / "compose.yaml").read_text(), (root / ".env.example").read_text())
    if "k8s" not in parts:
        return errors
    for path in manifest_files(root / "k8s"):
        errors += schema_errors([d for d in yaml.safe_load_all(path.read_text()) if d], path.name)
    try:
        base, provider = kustomize(root / "k8s/base"), kustomize(root / OVERLAY)
    except ValueError as exc:
        return [*errors, str(exc)]
    errors += schema_errors(base, "kustomize base") + schema_errors(provider, "kustomize provider")
    errors += reference_errors(base, BASE_EXTERNAL) + reference_errors(provider)
    return errors


# --- the files as committed ------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec() -> None:
    assert compose_schema_errors(REPO / "compose.yaml") == []


def test_compose_references_and_env_example_are_consistent() -> None:
    errors = compose_reference_errors((REPO / "compose.yaml").read_text(), (REPO / ".env.example").read_text())
    assert errors == []


def test_compose_runs_every_service_with_a_healthcheck_and_publishes_the_api_on_loopback() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert {"nats", "gateway", "inference", "cache"} <= set(services)
    for name, svc in services.items():
        assert svc["healthcheck"]["test"], name
        assert "container_name" not in svc, f"{name}: a fixed container name breaks --scale"
    assert services["gateway"]["ports"] == ["${AVADIOS_API_BIND:-127.0.0.1}:${AVADIOS_API_PUBLISH_PORT:-8740}:8740/tcp"]
    assert all("ports" not in s for n, s in services.items() if n != "gateway"), "only the gateway is published"
    assert compose["networks"]["internal"]["internal"] is True


@pytest.mark.parametrize("path", manifest_files(REPO / "k8s"), ids=lambda p: str(p.relative_to(REPO)))
def test_every_manifest_file_passes_strict_kubernetes_validation(path: Path) -> None:
    assert file_schema_errors(path) == []


@pytest.mark.parametrize("target", ["base", "provider"])
def test_kustomize_output_passes_strict_validation_and_every_reference_resolves(
    rendered: dict[str, list[dict]], target: str
) -> None:
    docs = rendered[target]
    assert schema_errors(docs, target) == []
    assert reference_errors(docs, BASE_EXTERNAL if target == "base" else ()) == []


def test_provider_overlay_has_the_promised_shape(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["provider"]
    kinds = {
        (d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "Secret" else d["metadata"]["name"])
        for d in docs
    }
    assert {
        ("StatefulSet", "nats"),
        ("StatefulSet", "cache"),
        ("Deployment", "gateway"),
        ("Deployment", "inference"),
        ("HorizontalPodAutoscaler", "inference"),
        ("Secret", "avadios-node-keys"),
    } <= kinds
    assert all(d["metadata"].get("namespace") == "avadios" for d in docs if d["kind"] != "Namespace")
    # Services expose nothing to the outside until the P2P port exists.
    assert all(d["spec"].get("type", "ClusterIP") == "ClusterIP" for d in docs if d["kind"] == "Service")
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            pod = d["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            for c in pod["containers"]:
                assert c["image"] == "registry.example.com/avadios:0.1.0"
                assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
                if d["kind"] == "Deployment":
                    assert c["readinessProbe"] and c["livenessProbe"], c["name"]


def test_make_keys_writes_owner_only_keys_and_refuses_to_overwrite(tmp_path: Path) -> None:
    script = REPO / "k8s/make-keys.sh"
    subprocess.run(["bash", str(script), str(tmp_path / "keys")], check=True, timeout=30)
    for name, size in (("node.key", 32), ("api.key", 52)):
        path = tmp_path / "keys" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.stat().st_size == size
    again = subprocess.run(["bash", str(script), str(tmp_path / "keys")], capture_output=True, timeout=30)
    assert again.returncode != 0


# --- deliberately broken copies must fail ---------------------------------------------------------------

BROKEN = [
    # (file, text in it, replacement, words expected in the error)
    pytest.param(
        "compose.yaml",
        '    <<: *avadios-service\n    command: ["python", "-m", "services.inference"]',
        '    <<: *avadios-service\n    replicaz: 2\n    command: ["python", "-m", "services.inference"]',
        "replicaz",
        id="compose-unknown-key",
    ),
    pytest.param(
        "compose.yaml",
        "      inference:\n        condition: service_healthy",
        "      inferense:\n        condition: service_healthy",
        "no service 'inferense'",
        id="compose-depends-on-missing-service",
    ),
    pytest.param(
        "compose.yaml",
        "      - cache:/var/lib/avadios/cache",
        "      - cahce:/var/lib/avadios/cache",
        "no volume 'cahce'",
        id="compose-missing-volume",
    ),
    pytest.param(
        "compose.yaml",
        "AVADIOS_CONTEXT_LENGTH: $",
        "AVADIOS_CONTEXT_LENGHT: $",
        "AVADIOS_CONTEXT_LENGHT is not an AVADIOS setting",
        id="compose-misspelt-setting",
    ),
    pytest.param(
        "compose.yaml",
        "${AVADIOS_LOG_LEVEL:-INFO}",
        "${AVADIOS_LOGLEVEL:-INFO}",
        "does not document AVADIOS_LOGLEVEL",
        id="compose-undocumented-variable",
    ),
    pytest.param("k8s/base/inference.yaml", "  minReplicas: 2", "  minReplica: 2", "minReplica", id="k8s-unknown-key"),
    pytest.param(
        "k8s/base/nats.yaml",
        "  serviceName: nats-headless",
        "  serviceName: nats-headles",
        "no Service named 'nats-headles'",
        id="k8s-statefulset-missing-service",
    ),
    pytest.param(
        "k8s/base/kustomization.yaml",
        "  - gateway.yaml",
        "  - gateways.yaml",
        "gateways.yaml",
        id="k8s-kustomization-missing-file",
    ),
    pytest.param(
        "k8s/base/cache.yaml",
        "secretName: avadios-node-keys",
        "secretName: avadios-node-key",
        "no Secret named 'avadios-node-key'",
        id="k8s-missing-secret",
    ),
    pytest.param(
        "k8s/base/gateway.yaml",
        "              - key: api.key",
        "              - key: apikey",
        "has no key 'apikey'",
        id="k8s-missing-secret-key",
    ),
    pytest.param(
        "k8s/base/gateway.yaml",
        "                name: avadios-config",
        "                name: avadios-confg",
        "no ConfigMap named 'avadios-confg'",
        id="k8s-missing-configmap",
    ),
    pytest.param(
        "k8s/base/inference.yaml",
        "    kind: Deployment\n    name: inference",
        "    kind: Deployment\n    name: inferance",
        "no Deployment named 'inferance'",
        id="k8s-hpa-missing-target",
    ),
    pytest.param(
        "k8s/base/inference.yaml",
        "            - name: tmp\n              mountPath: /tmp",
        "            - name: temp\n              mountPath: /tmp",
        "mounts volume 'temp'",
        id="k8s-missing-volume",
    ),
    pytest.param(
        "k8s/base/avadios.env",
        "AVADIOS_CONTEXT_LENGTH=",
        "AVADIOS_CONTEXT_LENGHT=",
        "AVADIOS_CONTEXT_LENGHT is not an AVADIOS setting",
        id="k8s-misspelt-setting",
    ),
    pytest.param(
        "k8s/base/network-policies.yaml",
        "              app.kubernetes.io/component: nats\n      ports",
        "              app.kubernetes.io/component: natz\n      ports",
        "matches no pod",
        id="k8s-networkpolicy-selects-nothing",
    ),
]


def test_the_committed_files_pass_every_check(tmp_path: Path) -> None:
    assert _all_errors(_copy_with_keys(tmp_path)) == []


@pytest.mark.parametrize(("file", "old", "new", "expected"), BROKEN)
def test_a_broken_copy_fails_validation(tmp_path: Path, file: str, old: str, new: str, expected: str) -> None:
    root = _copy_with_keys(tmp_path)
    path = root / file
    text = path.read_text()
    assert text.count(old) >= 1, f"{file} no longer contains {old!r}: update this test"
    path.write_text(text.replace(old, new, 1))
    errors = _all_errors(root, ("k8s",) if file.startswith("k8s/") else ("compose",))
    assert errors, f"breaking {file} went unnoticed"
    assert any(expected in e for e in errors), errors
