"""The Kubernetes manifests: schemas and cross-references.

Every manifest of deploy/k8s (namespace giftcard) and of its subdirectories
(one per other namespace: nats/, postgres/) is validated with
kubernetes-validate --strict against the oldest and the newest Kubernetes we
support, or, for the custom resources of cert-manager and the Prometheus
Operator, against the JSON schemas in deploy/validate/crds/. Then what a
schema cannot see: references between resources, env names the services
read, probes, security contexts, Secret placeholders and kustomization.yaml.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import jsonschema
import kubernetes_validate
from kubernetes_validate import utils as kv_utils

from common import PLACEHOLDER, Report, load_yaml_docs, rel

# Kubernetes versions every manifest must validate against: the oldest one we
# support (schemas shipped by kubernetes-validate) and the newest it ships.
K8S_MIN_VERSION = "1.30.0"

# Directory (under deploy/k8s) -> the namespace of its manifests.
NAMESPACE_DIRS = {".": "giftcard", "nats": "nats", "postgres": "postgres"}
# Manifests a directory's kustomization.yaml leaves out on purpose.
NOT_IN_KUSTOMIZATION = {
    ".": {
        "secret.example.yaml": "placeholders: operators fill in and apply their own copy",
        "migrate-job.yaml": "run once per release, before the services",
        "provision-job.yaml": "run once per release, before the services",
        "monitoring.yaml": "needs the Prometheus Operator's CRDs",
    },
    "nats": {"secret.example.yaml": "placeholders: operators fill in and apply their own copy"},
}
# Files that are not Kubernetes manifests.
NOT_MANIFESTS = {"kustomization.yaml", "nats-values.yaml"}
# ConfigMaps the pods mount that operators create (no file defines them).
EXTERNAL_CONFIGMAPS = {"giftcard-nats-ca": "the NATS CA, copied from namespace nats (nats/certificates.yaml)"}
# Custom resources -> their schema in deploy/validate/crds.
CRD_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")

BINARIES = ("giftcard-api", "giftcard-worker", "giftcard-migrate", "giftcardctl")

Resource = Tuple[Path, Dict[str, Any]]


def labels_match(selector: Dict[str, str], labels: Dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def crd_validate(repo: Path, doc: Dict[str, Any]) -> Optional[str]:
    group = str(doc.get("apiVersion", "")).split("/")[0]
    schema_path = repo / "deploy/validate/crds" / f"{group}_{doc.get('kind')}.json"
    if not schema_path.exists():
        return (f"no schema for {doc.get('apiVersion')} {doc.get('kind')} in deploy/validate/crds "
                "(add one, written from the CRD's reference)")
    errors = sorted(jsonschema.Draft202012Validator(json.loads(schema_path.read_text())).iter_errors(doc),
                    key=lambda e: list(e.path))
    return "; ".join(f"{'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}" for e in errors[:5]) or None


def k8s_validate(repo: Path, doc: Dict[str, Any], version: str) -> Optional[str]:
    if str(doc.get("apiVersion", "")).startswith(CRD_GROUPS):
        return crd_validate(repo, doc)
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kv_utils.SchemaNotFoundError:
        return (f"kubernetes {kv_utils.major_minor(version)} has no {doc.get('apiVersion')} "
                f"{doc.get('kind')} (unknown kind or apiVersion)")
    except kv_utils.ValidationError as e:
        where = ".".join(str(p) for p in e.path) or "(root)"
        return f"kubernetes {kv_utils.major_minor(version)}: {where}: {e.message}"
    return None


class Manifests:
    """Every resource of deploy/k8s and its namespace subdirectories, with
    the problems found per file."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.root = repo / "deploy/k8s"
        self.versions = [K8S_MIN_VERSION]
        latest = kv_utils.latest_version()
        if kv_utils.major_minor(latest) != kv_utils.major_minor(K8S_MIN_VERSION):
            self.versions.append(latest)
        self.files: List[Path] = []
        self.resources: List[Resource] = []
        self.problems: Dict[Path, List[str]] = {}
        for sub, namespace in NAMESPACE_DIRS.items():
            for path in sorted((self.root / sub).glob("*.yaml")):
                if path.name not in NOT_MANIFESTS:
                    self.load(path, namespace)

    def load(self, path: Path, namespace: str) -> None:
        self.files.append(path)
        docs, err = load_yaml_docs(path)
        problems = self.problems.setdefault(path, [err] if err else [])
        if not err and not docs:
            problems.append("no Kubernetes resource in the file")
        for doc in docs:
            if not isinstance(doc, dict) or "kind" not in doc:
                problems.append("a YAML document that is not a Kubernetes resource")
                continue
            name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            for msg in {k8s_validate(self.repo, doc, v) for v in self.versions} - {None}:
                problems.append(f"{name}: {msg}")
            meta = doc.get("metadata") or {}
            if doc["kind"] == "Namespace":
                if meta.get("name") != namespace:
                    problems.append(f"{name}: the namespace of this directory is {namespace}")
            elif meta.get("namespace") != namespace:
                problems.append(f"{name}: metadata.namespace must be {namespace} (this directory's namespace)")
            self.resources.append((path, doc))

    def add(self, path: Path, msg: str) -> None:
        self.problems.setdefault(path, []).append(msg)

    def of_kind(self, kind: str, namespace: Optional[str] = None) -> List[Resource]:
        return [(p, d) for p, d in self.resources if d["kind"] == kind
                and (namespace is None or (d.get("metadata") or {}).get("namespace") == namespace)]

    def named(self, kind: str, namespace: str = "giftcard") -> Dict[str, Dict[str, Any]]:
        return {(d.get("metadata") or {}).get("name"): d for _, d in self.of_kind(kind, namespace)}

    def path_of(self, doc: Dict[str, Any]) -> Path:
        return next(p for p, d in self.resources if d is doc)


def pod_labels(doc: Dict[str, Any]) -> Dict[str, str]:
    return ((doc["spec"]["template"].get("metadata") or {}).get("labels")) or {}


def check_config_and_secrets(m: Manifests, env_names: Set[str], nats_users: Set[str]) -> None:
    for name, cm in m.named("ConfigMap").items():
        for key in (cm.get("data") or {}):
            if key not in env_names:
                m.add(m.path_of(cm), f"ConfigMap/{name}: {key} is not a variable the services read (typo?)")
    for path, sec in m.of_kind("Secret"):
        for key, value in (sec.get("stringData") or {}).items():
            if key.endswith("_NATS_USER"):
                # Not a secret: which NATS user a service connects as.
                if value not in nats_users:
                    m.add(path, f"Secret/{sec['metadata']['name']}: stringData.{key} = {value!r} is not a "
                                f"user of deploy/nats/accounts.conf ({', '.join(sorted(nats_users))})")
            elif PLACEHOLDER not in str(value):
                m.add(path, f"Secret/{sec['metadata']['name']}: stringData.{key} must be a placeholder "
                            f"containing {PLACEHOLDER}, never a real value")
        if sec.get("data"):
            m.add(path, f"Secret/{sec['metadata']['name']}: use stringData placeholders, not data")


def check_container(m: Manifests, path: Path, kind: str, cname: str, c: Dict[str, Any],
                    annotations: Dict[str, str], env_names: Set[str], volumes: Set[str]) -> None:
    configmaps, secrets = m.named("ConfigMap"), m.named("Secret")
    cmd = c.get("command") or []
    if not cmd or cmd[0] not in BINARIES:
        m.add(path, f"{cname}: command must start with one of {', '.join(BINARIES)}")
    sc = c.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
        m.add(path, f"{cname}: securityContext needs readOnlyRootFilesystem: true and "
                    "allowPrivilegeEscalation: false")
    resources = c.get("resources") or {}
    if "memory" not in (resources.get("limits") or {}) or "memory" not in (resources.get("requests") or {}):
        m.add(path, f"{cname}: resources need memory requests and limits")
    for ef in c.get("envFrom") or []:
        ref = (ef.get("configMapRef") or {}).get("name")
        if ref and ref not in configmaps:
            m.add(path, f"{cname}: envFrom ConfigMap {ref} is not defined in deploy/k8s")
        sref = (ef.get("secretRef") or {}).get("name")
        if sref and sref not in secrets:
            m.add(path, f"{cname}: envFrom Secret {sref} is not defined in deploy/k8s")
    for e in c.get("env") or []:
        if e.get("name") not in env_names:
            m.add(path, f"{cname}: env {e.get('name')} is not a variable the services read")
        skr = ((e.get("valueFrom") or {}).get("secretKeyRef")) or {}
        if skr:
            sec = secrets.get(skr.get("name"))
            if sec is None:
                m.add(path, f"{cname}: env {e['name']}: Secret {skr.get('name')} is not defined")
            elif skr.get("key") not in (sec.get("stringData") or {}) and not skr.get("optional"):
                m.add(path, f"{cname}: env {e['name']}: Secret {skr['name']} has no key {skr.get('key')}")
    for vm in c.get("volumeMounts") or []:
        if vm.get("name") not in volumes:
            m.add(path, f"{cname}: volumeMount {vm.get('name')} is no volume of the pod")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    for probe in ("readinessProbe", "livenessProbe"):
        pr = c.get(probe)
        if kind == "Deployment" and not pr:
            m.add(path, f"{cname}: needs a {probe}")
            continue
        port = ((pr or {}).get("httpGet") or {}).get("port")
        if isinstance(port, str) and port not in ports:
            m.add(path, f"{cname}: {probe} uses port {port}, which the container does not name")
    if kind == "Deployment":
        for probe, want in {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}.items():
            got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
            if got != want:
                m.add(path, f"{cname}: {probe} must GET {want}, not {got}")
        if annotations.get("prometheus.io/port") not in {str(v) for v in ports.values()}:
            m.add(path, f"{cname}: prometheus.io/port is not one of the container's ports")


def check_pods(m: Manifests, env_names: Set[str]) -> None:
    configmaps = m.named("ConfigMap")
    hpa_targets = {((d.get("spec") or {}).get("scaleTargetRef") or {}).get("name")
                   for _, d in m.of_kind("HorizontalPodAutoscaler")}
    for kind in ("Deployment", "Job"):
        for path, doc in m.of_kind(kind):
            name = f"{kind}/{doc['metadata']['name']}"
            tmpl = (doc.get("spec") or {}).get("template") or {}
            pod = tmpl.get("spec") or {}
            if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
                m.add(path, f"{name}: pod securityContext.runAsNonRoot must be true")
            annotations = (tmpl.get("metadata") or {}).get("annotations") or {}
            if kind == "Deployment":
                sel = ((doc["spec"].get("selector") or {}).get("matchLabels")) or {}
                if not labels_match(sel, pod_labels(doc)):
                    m.add(path, f"{name}: spec.selector does not match the pod template's labels")
                if annotations.get("prometheus.io/scrape") != "true":
                    m.add(path, f"{name}: pod template needs prometheus.io/scrape: \"true\"")
                if doc["metadata"]["name"] in hpa_targets and "replicas" in doc["spec"]:
                    m.add(path, f"{name}: scaled by a HorizontalPodAutoscaler, so it must not set "
                                "spec.replicas (kubectl apply would reset the autoscaler's choice)")
            volumes = set()
            for vol in pod.get("volumes") or []:
                volumes.add(vol.get("name"))
                ref = (vol.get("configMap") or {}).get("name")
                if ref and ref not in configmaps and ref not in EXTERNAL_CONFIGMAPS:
                    m.add(path, f"{name}: volume {vol.get('name')}: ConfigMap {ref} is neither defined in "
                                "deploy/k8s nor a documented operator-made one")
            for c in pod.get("containers") or []:
                check_container(m, path, kind, f"{name} container {c.get('name')}", c, annotations,
                                env_names, volumes)


def service_port_names(svc: Dict[str, Any]) -> Set[str]:
    return {p.get("name") for p in (svc.get("spec") or {}).get("ports") or []}


def check_services(m: Manifests) -> None:
    deployments = m.named("Deployment")
    for path, svc in m.of_kind("Service", "giftcard"):
        sel = (svc.get("spec") or {}).get("selector") or {}
        matches = [d for d in deployments.values() if labels_match(sel, pod_labels(d))]
        if not matches:
            m.add(path, f"Service/{svc['metadata']['name']}: selector matches no Deployment's pods")
        for port in (svc.get("spec") or {}).get("ports") or []:
            tp = port.get("targetPort")
            if isinstance(tp, str) and not any(
                    tp == p.get("name") for d in matches
                    for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []):
                m.add(path, f"Service/{svc['metadata']['name']}: targetPort {tp} is no container port name")
    for path, pdb in m.of_kind("PodDisruptionBudget"):
        sel = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not any(labels_match(sel, pod_labels(d)) for d in deployments.values()):
            m.add(path, f"PodDisruptionBudget/{pdb['metadata']['name']}: selector matches no Deployment's pods")
    for path, hpa in m.of_kind("HorizontalPodAutoscaler"):
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind") != "Deployment" or ref.get("name") not in deployments:
            m.add(path, f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: scaleTargetRef "
                        f"{ref.get('kind')}/{ref.get('name')} is not a Deployment in deploy/k8s")
    if not [d for _, d in m.of_kind("PodDisruptionBudget") if "worker" in d["metadata"]["name"]]:
        m.add(m.root / "worker.yaml", "the worker needs a PodDisruptionBudget")
    # /metrics of the api is on its own Service port, which no Ingress may route to.
    for path, ing in m.of_kind("Ingress"):
        for backend in re.findall(r"'port': \{'(?:name|number)': '?([\w-]+)", str(ing.get("spec"))):
            if backend in ("metrics", "9091", "9090"):
                m.add(path, f"Ingress/{ing['metadata']['name']}: routes to port {backend}: metrics stay internal")


def check_monitoring_targets(m: Manifests) -> None:
    services = m.named("Service")
    for path, sm in m.of_kind("ServiceMonitor"):
        sel = ((sm.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        targets = [s for s in services.values() if labels_match(sel, (s.get("metadata") or {}).get("labels") or {})]
        name = f"ServiceMonitor/{sm['metadata']['name']}"
        if len(targets) != 1:
            m.add(path, f"{name}: selector must match exactly one Service, matches {len(targets)}")
            continue
        for ep in (sm.get("spec") or {}).get("endpoints") or []:
            if ep.get("port") not in service_port_names(targets[0]):
                m.add(path, f"{name}: endpoint port {ep.get('port')} is no port of Service/"
                            f"{targets[0]['metadata']['name']}")
    monitored = {((sm.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                 for _, sm in m.of_kind("ServiceMonitor")}
    for want in ("giftcard-api", "giftcard-worker"):
        if want not in monitored:
            m.add(m.root / "monitoring.yaml", f"no ServiceMonitor scrapes {want}")


def check_kustomizations(m: Manifests, report: Report) -> None:
    for sub, exceptions in NOT_IN_KUSTOMIZATION.items():
        directory = m.root / sub
        kpath = directory / "kustomization.yaml"
        manifests = [p for p in m.files if p.parent == directory.resolve() or p.parent == directory]
        problems: List[str] = []
        kdocs, err = load_yaml_docs(kpath) if kpath.exists() else ([], "missing")
        if err:
            problems.append(err)
        else:
            listed = set((kdocs[0] or {}).get("resources") or [])
            for r in sorted(listed):
                if not (directory / r).exists():
                    problems.append(f"resources: {r} does not exist")
            for path in manifests:
                if path.name not in listed and path.name not in exceptions:
                    problems.append(f"{path.name} is neither in resources nor a documented exception")
            for name, why in exceptions.items():
                if name in listed:
                    problems.append(f"{name} must not be in resources ({why})")
            if (kdocs[0] or {}).get("namespace") != NAMESPACE_DIRS[sub]:
                problems.append(f"namespace must be {NAMESPACE_DIRS[sub]}")
        report.result("kustomize", rel(m.repo, kpath), problems,
                      f"{len(manifests) - len(exceptions)} resources listed")


def check_k8s(repo: Path, report: Report, env_names: Set[str], nats_users: Set[str]) -> Manifests:
    m = Manifests(repo)
    check_config_and_secrets(m, env_names, nats_users)
    check_pods(m, env_names)
    check_services(m)
    check_monitoring_targets(m)
    vlabel = " and ".join(kv_utils.major_minor(v) for v in m.versions)
    for path in m.files:
        kinds = [f"{d['kind']}/{d['metadata']['name']}" for p, d in m.resources if p == path]
        crd = any(str(d.get("apiVersion", "")).startswith(CRD_GROUPS) for p, d in m.resources if p == path)
        report.result("k8s", rel(repo, path), m.problems.get(path, []),
                      f"{', '.join(kinds)}; " + ("CRD schemas of deploy/validate/crds" if crd else
                                                 f"kubernetes {vlabel}, strict"))
    check_kustomizations(m, report)
    return m
