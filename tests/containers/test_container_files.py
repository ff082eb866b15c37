"""compose.yaml and k8s/ validate offline, and a deliberately broken copy of either fails validation."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .validation import (
    REPO,
    compose_reference_errors,
    compose_schema_errors,
    coverage_errors,
    exposure_errors,
    file_schema_errors,
    kustomize,
    manifest_files,
    reference_errors,
    schema_errors,
)

OVERLAY = Path("k8s/overlays/provider")
# The base deliberately leaves the node's keys to the overlay (they are the node's identity).
BASE_EXTERNAL = {("Secret", "avadios-node-keys")}
# make-keys.sh makes the wallet with the avadios CLI: this venv's.
MAKE_KEYS_ENV = {**os.environ, "AVADIOS": str(Path(sys.executable).parent / "avadios")}


def _make_keys(dest: Path) -> subprocess.CompletedProcess[bytes]:
    script = REPO / "k8s/make-keys.sh"
    return subprocess.run(["bash", str(script), str(dest)], capture_output=True, env=MAKE_KEYS_ENV, timeout=30)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Throwaway node keys and wallet made once by k8s/make-keys.sh (the CLI start is the slow part)."""
    dest = tmp_path_factory.mktemp("keys") / "keys"
    made = _make_keys(dest)
    assert made.returncode == 0, made.stderr
    return dest


def _copy_with_keys(dest: Path, keys: Path | None) -> Path:
    """A copy of the repo's container files; with `keys`, also k8s/ with those keys in the overlay."""
    for name in ("compose.yaml", ".env.example"):
        shutil.copy(REPO / name, dest / name)
    if keys is not None:
        shutil.copytree(REPO / "k8s", dest / "k8s", ignore=shutil.ignore_patterns("keys"))
        shutil.copytree(keys, dest / OVERLAY / "keys")
    return dest


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> dict[str, list[dict]]:
    root = _copy_with_keys(tmp_path_factory.mktemp("k8s"), keys)
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
    errors += exposure_errors(base) + exposure_errors(provider)
    errors += coverage_errors(base, "kustomize base") + coverage_errors(provider, "kustomize provider")
    return errors


# --- the files as committed ------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec() -> None:
    assert compose_schema_errors(REPO / "compose.yaml") == []


def test_compose_references_and_env_example_are_consistent() -> None:
    errors = compose_reference_errors((REPO / "compose.yaml").read_text(), (REPO / ".env.example").read_text())
    assert errors == []


def _defaults(text: str) -> str:
    """A compose string as it reads with every ${VAR:-default} left at its default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", text)


def test_compose_runs_every_service_with_a_healthcheck_and_only_the_edge_is_published() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert {"nats", "cache", "ledger", "inference", "discovery", "verifier", "storage", "voice", "gateway"} <= set(
        services
    )
    for name, svc in services.items():
        assert svc["healthcheck"]["test"], name
        assert "container_name" not in svc, f"{name}: a fixed container name breaks --scale"
    # The API on loopback; P2P (TCP) and DHT (UDP) open to peers, on the same port inside and out, since
    # the node tells peers the port it listens on.
    assert [_defaults(p) for p in services["gateway"]["ports"]] == ["127.0.0.1:8740:8740/tcp", "0.0.0.0:4001:4001/tcp"]
    assert [_defaults(p) for p in services["discovery"]["ports"]] == ["0.0.0.0:4002:4002/udp"]
    assert {n for n, s in services.items() if "ports" in s} == {"gateway", "discovery"}
    assert compose["networks"]["internal"]["internal"] is True
    assert {n for n, s in services.items() if "edge" in s.get("networks", [])} == {"gateway", "discovery"}
    # Each single writer has a volume of its own that no other service mounts.
    for name in ("cache", "ledger", "discovery", "verifier", "storage"):
        mounts = {n for n, s in services.items() for v in s.get("volumes", []) if v.split(":")[0] == name}
        assert mounts == {name}, (name, mounts)
        assert f"{name}:/var/lib/avadios/{name}" in services[name]["volumes"]
    gateway_needs = services["gateway"]["depends_on"]
    for needed in ("cache", "ledger", "inference", "discovery", "verifier", "storage", "voice"):
        assert gateway_needs[needed]["condition"] == "service_healthy", needed
    # The gateway refuses an upload over the voice service's own limit: both read the one setting.
    assert "AVADIOS_VOICE_MAX_AUDIO_BYTES" in services["gateway"]["environment"]
    assert "voice" not in {n for n, s in services.items() if "edge" in s.get("networks", [])}


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
        ("StatefulSet", "ledger"),
        ("StatefulSet", "discovery"),
        ("StatefulSet", "verifier"),
        ("StatefulSet", "storage"),
        ("Deployment", "gateway"),
        ("Deployment", "inference"),
        ("HorizontalPodAutoscaler", "inference"),
        ("Deployment", "voice"),
        ("HorizontalPodAutoscaler", "voice"),
        ("PodDisruptionBudget", "gateway"),
        ("PodDisruptionBudget", "inference"),
        ("PodDisruptionBudget", "voice"),
        ("Secret", "avadios-node-keys"),
    } <= kinds
    assert all(d["metadata"].get("namespace") == "avadios" for d in docs if d["kind"] != "Namespace")
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    # One Service leaves the cluster: P2P over TCP and the DHT over UDP, keeping client addresses.
    public = [d for d in docs if d["kind"] == "Service" and d["spec"].get("type", "ClusterIP") != "ClusterIP"]
    assert [d["metadata"]["name"] for d in public] == ["p2p"]
    p2p = public[0]["spec"]
    assert p2p["type"] == "LoadBalancer" and p2p["externalTrafficPolicy"] == "Local"
    ports = {(p["port"], p["protocol"], p["targetPort"]) for p in p2p["ports"]}
    assert ports == {(4001, "TCP", "p2p"), (4002, "UDP", "dht")}
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("avadios-config"))
    assert config["data"]["AVADIOS_P2P_PORT"] == "4001" and config["data"]["AVADIOS_DHT_PORT"] == "4002"
    assert config["data"]["AVADIOS_ADVERTISE_HOST"], "the overlay must tell peers an address"
    # Single writers: one replica, their data on a PVC of their own; the ledger's PVC is its whole home, so the
    # genesis it made stays with the database.
    homes = {
        "cache": "/var/lib/avadios/cache",
        "ledger": "/var/lib/avadios",
        "discovery": "/var/lib/avadios/discovery",
        "verifier": "/var/lib/avadios/verifier",
        "storage": "/var/lib/avadios/storage",
    }
    for name, mount in homes.items():
        sts = by_name[("StatefulSet", name)]["spec"]
        assert sts["replicas"] == 1
        assert [t["metadata"]["name"] for t in sts["volumeClaimTemplates"]] == [name]
        container = sts["template"]["spec"]["containers"][0]
        assert {"name": name, "mountPath": mount} in container["volumeMounts"], name
    # Who signs ledger blocks with the wallet gets wallet.seed from the Secret, copied into its home at start.
    for kind, name in (
        ("StatefulSet", "ledger"),
        ("StatefulSet", "verifier"),
        ("StatefulSet", "storage"),
        ("Deployment", "gateway"),
    ):
        pod = by_name[(kind, name)]["spec"]["template"]["spec"]
        keys = next(v["secret"] for v in pod["volumes"] if v["name"] == "keys")
        assert {i["key"] for i in keys["items"]} >= {"node.key", "wallet.seed"}, name
        assert "/etc/avadios/keys/wallet.seed" in " ".join(pod["initContainers"][0]["command"]), name
    # Voice: replicas on NATS only, with threads that match the CPU limit.
    voice = by_name[("Deployment", "voice")]["spec"]["template"]
    assert voice["metadata"]["labels"].get("avadios.dev/nats-client") == "true"
    assert "avadios.dev/edge" not in voice["metadata"]["labels"]
    voice_env = {e["name"]: e["value"] for e in voice["spec"]["containers"][0]["env"]}
    assert voice_env["AVADIOS_VOICE_THREADS"] == voice["spec"]["containers"][0]["resources"]["limits"]["cpu"]
    # The verifier and storage reach peers only through the gateway: NATS, no edge.
    for name in ("verifier", "storage"):
        labels = by_name[("StatefulSet", name)]["spec"]["template"]["metadata"]["labels"]
        assert labels.get("avadios.dev/nats-client") == "true" and "avadios.dev/edge" not in labels, name
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            pod = d["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            for c in pod["containers"]:
                assert c["image"] == "registry.example.com/avadios:0.1.0"
                assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
                if d["kind"] == "Deployment":
                    assert c["readinessProbe"] and c["livenessProbe"], c["name"]


def test_make_keys_writes_owner_only_keys_and_a_wallet_and_refuses_to_overwrite(tmp_path: Path) -> None:
    made = _make_keys(tmp_path / "keys")
    assert made.returncode == 0, made.stderr
    assert any(len(line.split()) == 24 for line in made.stdout.decode().splitlines())  # the phrase, shown once
    for name, size in (("node.key", 32), ("api.key", 52), ("wallet.seed", 32)):
        path = tmp_path / "keys" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.stat().st_size == size
    assert _make_keys(tmp_path / "keys").returncode != 0


# --- deliberately broken copies must fail ---------------------------------------------------------------

BROKEN = [
    # (file, text in it, replacement, words expected in the error)
    pytest.param(
        "compose.yaml",
        '    <<: *avadios-service\n    command: ["python", "-m", "avadios.services.inference"]',
        '    <<: *avadios-service\n    replicaz: 2\n    command: ["python", "-m", "avadios.services.inference"]',
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


BROKEN += [
    pytest.param(
        "compose.yaml",
        "      - ledger:/var/lib/avadios/ledger",
        "      - ledgr:/var/lib/avadios/ledger",
        "no volume 'ledgr'",
        id="compose-ledger-missing-volume",
    ),
    pytest.param(
        "compose.yaml",
        'command: ["python", "-m", "avadios.services.discovery"]',
        'command: ["python", "-m", "avadios.services.discovery_v2"]',
        "no container runs avadios.services.discovery",
        id="compose-service-of-avadios-up-missing",
    ),
    pytest.param(
        "compose.yaml",
        "    AVADIOS_DHT_PORT: ${AVADIOS_DHT_PORT:-4002}\n",
        "",
        "AVADIOS_DHT_PORT is set nowhere",
        id="compose-setting-not-passed",
    ),
    pytest.param(
        "compose.yaml",
        '    command: ["python", "-m", "avadios.services.ledger"]\n',
        '    command: ["python", "-m", "avadios.services.ledger"]\n    networks: [internal, edge]\n',
        "services.ledger.networks: 'edge' has a route out",
        id="compose-ledger-on-the-edge",
    ),
    pytest.param(
        "k8s/base/ledger.yaml",
        "    - metadata:\n        name: ledger",
        "    - metadata:\n        name: ledger-data",
        "mounts volume 'ledger'",
        id="k8s-ledger-claim-misnamed",
    ),
    pytest.param(
        "k8s/base/public.yaml",
        "      targetPort: dht\n      protocol: UDP",
        "      targetPort: dht\n      protocol: TCP",
        "'dht' is UDP",
        id="k8s-dht-port-wrong-protocol",
    ),
    pytest.param(
        "k8s/base/public.yaml",
        "    - name: p2p\n      port: 4001",
        "    - name: p2p\n      port: 8740",
        "exposes 8740/TCP, not a public port",
        id="k8s-public-service-exposes-the-api",
    ),
    pytest.param(
        "k8s/base/ledger.yaml",
        '        avadios.dev/nats-client: "true"\n',
        '        avadios.dev/nats-client: "true"\n        avadios.dev/edge: "true"\n',
        "opens egress to the outside for ['ledger']",
        id="k8s-ledger-on-the-edge",
    ),
    pytest.param(
        "k8s/base/kustomization.yaml",
        "  - discovery.yaml\n",
        "",
        "no container runs avadios.services.discovery",
        id="k8s-service-of-avadios-up-missing",
    ),
    pytest.param(
        "k8s/base/avadios.env",
        "AVADIOS_BOOTSTRAP=\n",
        "",
        "AVADIOS_BOOTSTRAP is set nowhere",
        id="k8s-setting-not-passed",
    ),
    pytest.param(
        "compose.yaml",
        'command: ["python", "-m", "avadios.services.verifier"]',
        'command: ["python", "-m", "avadios.services.verifyer"]',
        "no container runs avadios.services.verifier",
        id="compose-verifier-missing",
    ),
    pytest.param(
        "compose.yaml",
        "      - verifier:/var/lib/avadios/verifier",
        "      - verifer:/var/lib/avadios/verifier",
        "no volume 'verifer'",
        id="compose-verifier-missing-volume",
    ),
    pytest.param(
        "compose.yaml",
        '    command: ["python", "-m", "avadios.services.verifier"]\n',
        '    command: ["python", "-m", "avadios.services.verifier"]\n    networks: [internal, edge]\n',
        "services.verifier.networks: 'edge' has a route out",
        id="compose-verifier-on-the-edge",
    ),
    pytest.param(
        "k8s/base/kustomization.yaml",
        "  - verifier.yaml\n",
        "",
        "no container runs avadios.services.verifier",
        id="k8s-verifier-missing",
    ),
    pytest.param(
        "k8s/base/verifier.yaml",
        '        avadios.dev/nats-client: "true"\n',
        '        avadios.dev/nats-client: "true"\n        avadios.dev/edge: "true"\n',
        "opens egress to the outside for ['verifier']",
        id="k8s-verifier-on-the-edge",
    ),
    pytest.param(
        "compose.yaml",
        "    AVADIOS_NETWORK_TIER: ${AVADIOS_NETWORK_TIER:-auto}\n",
        "    AVADIOS_NETWORK_TIER: ${AVADIOS_NETWORK_TIER:-auto}\n    AVADIOS_DEVNET_FAULT: random\n",
        "AVADIOS_DEVNET_FAULT is not for containers",
        id="compose-test-knob-set",
    ),
    pytest.param(
        "k8s/base/avadios.env",
        "AVADIOS_NETWORK_TIER=auto\n",
        "AVADIOS_NETWORK_TIER=auto\nAVADIOS_DEVNET_FAULT=random\n",
        "AVADIOS_DEVNET_FAULT is not for containers",
        id="k8s-test-knob-set",
    ),
]


def test_the_committed_files_pass_every_check(tmp_path: Path, keys: Path) -> None:
    assert _all_errors(_copy_with_keys(tmp_path, keys)) == []


@pytest.mark.parametrize(("file", "old", "new", "expected"), BROKEN)
def test_a_broken_copy_fails_validation(
    tmp_path: Path, keys: Path, file: str, old: str, new: str, expected: str
) -> None:
    root = _copy_with_keys(tmp_path, keys if file.startswith("k8s/") else None)
    path = root / file
    text = path.read_text()
    assert text.count(old) >= 1, f"{file} no longer contains {old!r}: update this test"
    path.write_text(text.replace(old, new, 1))
    errors = _all_errors(root, ("k8s",) if file.startswith("k8s/") else ("compose",))
    assert errors, f"breaking {file} went unnoticed"
    assert any(expected in e for e in errors), errors
