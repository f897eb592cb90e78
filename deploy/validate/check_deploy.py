#!/usr/bin/env python3
"""Validates the deployment files without a container engine or a cluster.

Run by scripts/check-deploy.sh inside .tools/venv (PyYAML, jsonschema,
kubernetes-validate, check-jsonschema and hadolint come from
deploy/validate/requirements.txt):

    python deploy/validate/check_deploy.py --repo . --nats-server .tools/bin/nats-server

Prints one `OK` or `FAIL` line per checked file (with what is wrong) and
exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

import yaml

import kubernetes_validate
from kubernetes_validate import utils as kv_utils

# Kubernetes versions every manifest must validate against: the oldest one we
# support (schemas shipped by kubernetes-validate) and the newest it ships.
K8S_MIN_VERSION = "1.30.0"

# The four binaries of the image (deploy/docker/Dockerfile).
BINARIES = ("giftcard-api", "giftcard-worker", "giftcard-migrate", "giftcardctl")

# Manifests of deploy/k8s that kustomization.yaml leaves out on purpose.
K8S_NOT_IN_KUSTOMIZATION = {
    "secret.example.yaml": "placeholders: operators fill in and apply their own copy",
    "migrate-job.yaml": "run once per release, before the services",
}
# Files of deploy/k8s that are not Kubernetes manifests.
K8S_NOT_MANIFESTS = {"kustomization.yaml", "nats-values.yaml"}

# Environment variables read by something other than the project's code.
EXTERNAL_ENV = {"RUST_LOG"}

# Marker that Secret templates and .env.example use instead of real values.
PLACEHOLDER = "REPLACE-ME"


class Report:
    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0

    def result(self, what: str, path: str, problems: List[str], detail: str = "") -> None:
        if problems:
            self.failed += 1
            print(f"FAIL {what:<11} {path}")
            for p in problems:
                for i, line in enumerate(str(p).rstrip().splitlines()):
                    print(f"       {'- ' if i == 0 else '  '}{line}")
        else:
            self.ok += 1
            print(f"OK   {what:<11} {path}{f'  ({detail})' if detail else ''}")
        sys.stdout.flush()


def rel(repo: Path, p: Path) -> str:
    try:
        return str(p.relative_to(repo))
    except ValueError:
        return str(p)


def run(cmd: List[str], cwd: Optional[Path] = None) -> Tuple[int, str]:
    proc = subprocess.run(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    return proc.returncode, proc.stdout


def venv_tool(name: str) -> str:
    """A console script installed next to this interpreter (the venv's bin)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed: run scripts/check-deploy.sh (it installs it)")
    return found


def load_yaml_docs(path: Path) -> Tuple[List[Any], Optional[str]]:
    try:
        with path.open() as f:
            return [d for d in yaml.safe_load_all(f) if d is not None], None
    except yaml.YAMLError as e:
        return [], f"not valid YAML: {e}"


# ---------------------------------------------------------------------------
# What the project's code defines


def known_env_vars(repo: Path) -> Set[str]:
    """Every environment variable name the Rust code mentions as a literal."""
    names: Set[str] = set(EXTERNAL_ENV)
    pattern = re.compile(r'"((?:GIFTCARD_|DATABASE_|NATS_)[A-Z0-9_]*)"')
    for crate in ("shared", "api", "worker", "migrations", "ctl"):
        for src in (repo / crate / "src").rglob("*.rs"):
            names.update(pattern.findall(src.read_text(errors="replace")))
    return names


def workspace_members(repo: Path) -> List[str]:
    text = (repo / "Cargo.toml").read_text()
    m = re.search(r"^members\s*=\s*\[(.*?)\]", text, re.S | re.M)
    return re.findall(r'"([^"]+)"', m.group(1)) if m else []


def workspace_binaries(repo: Path) -> Set[str]:
    bins: Set[str] = set()
    for member in workspace_members(repo):
        manifest = repo / member / "Cargo.toml"
        if not manifest.exists():
            continue
        for block in re.findall(r"^\[\[bin\]\](.*?)(?=^\[|\Z)", manifest.read_text(), re.S | re.M):
            m = re.search(r'^name\s*=\s*"([^"]+)"', block, re.M)
            if m:
                bins.add(m.group(1))
    return bins


# ---------------------------------------------------------------------------
# Dockerfile and its ignore file


def dockerignore_patterns(path: Path) -> List[str]:
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def ignored_by(patterns: Iterable[str], path: str) -> Optional[str]:
    """The pattern that excludes `path` (or one of its parents), if any."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        if pat.startswith("!"):
            continue
        p = pat.rstrip("/")
        anywhere = p.startswith("**/")
        p = p[3:] if anywhere else p.lstrip("/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, p):
                return pat
            if anywhere and any(
                fnmatch.fnmatchcase("/".join(prefix.split("/")[i:]), p)
                for i in range(len(prefix.split("/")))
            ):
                return pat
    return None


def check_dockerfile(repo: Path, report: Report) -> None:
    dockerfile = repo / "deploy/docker/Dockerfile"
    problems: List[str] = []
    if not dockerfile.exists():
        report.result("dockerfile", rel(repo, dockerfile), ["missing"])
        return

    code, out = run([venv_tool("hadolint"), "--no-color", "--config",
                     str(repo / "deploy/docker/hadolint.yaml"), str(dockerfile)])
    if code != 0:
        problems.append("hadolint:\n" + out.strip())

    text = dockerfile.read_text()
    # Join continuation lines, drop comments.
    logical = re.sub(r"\\\n", " ", "\n".join(
        l for l in text.splitlines() if not l.lstrip().startswith("#")))
    instructions = [(l.split(None, 1) + [""])[:2] for l in logical.splitlines() if l.strip()]
    instructions = [(k.upper(), v.strip()) for k, v in instructions]
    froms = [v for k, v in instructions if k == "FROM"]
    if len(froms) < 2:
        problems.append("expected a multi-stage build (a builder stage and a runtime stage)")
    else:
        if not re.match(r"rust:\S*bookworm\S*\s+AS\s+builder", froms[0].replace("${RUST_VERSION}", "1"), re.I):
            problems.append(f"the first stage should be `rust:<version>-bookworm AS builder`, not `{froms[0]}`")
        if not froms[-1].startswith("debian:bookworm-slim"):
            problems.append(f"the runtime stage should be debian:bookworm-slim, not `{froms[-1]}`")
    if not re.search(r"cargo build --release --locked", logical):
        problems.append("the builder must run `cargo build --release --locked`")
    if any(k == "ENTRYPOINT" for k, _ in instructions):
        problems.append("no ENTRYPOINT: compose and Kubernetes choose the command")
    users = [v for k, v in instructions if k == "USER"]
    if not users or not re.match(r"^[1-9][0-9]*(:[0-9]+)?$", users[-1]):
        problems.append("the runtime stage must end with a numeric non-root USER "
                        "(Kubernetes' runAsNonRoot cannot check a user name)")
    if "ca-certificates" not in logical:
        problems.append("the runtime image must install ca-certificates")
    declared = workspace_binaries(repo)
    for b in BINARIES:
        if b not in declared:
            problems.append(f"binary {b} is not a [[bin]] of the workspace")
        if not re.search(rf"target/release/{re.escape(b)}\b", logical):
            problems.append(f"the image does not copy target/release/{b}")

    ignore = repo / "deploy/docker/Dockerfile.dockerignore"
    if not ignore.exists():
        problems.append(f"{rel(repo, ignore)} is missing")
    else:
        patterns = dockerignore_patterns(ignore)
        for needed in ["Cargo.toml", "Cargo.lock"] + [f"{m}/Cargo.toml" for m in workspace_members(repo)] \
                + [f"{m}/src" for m in workspace_members(repo)]:
            pat = ignored_by(patterns, needed)
            if pat:
                problems.append(f"{rel(repo, ignore)}: pattern `{pat}` excludes {needed}, "
                                "which the build needs")
        for heavy in ("target", ".tools", ".run", ".git"):
            if not ignored_by(patterns, heavy):
                problems.append(f"{rel(repo, ignore)}: {heavy}/ should be excluded from the build context")

    report.result("dockerfile", rel(repo, dockerfile), problems,
                  f"hadolint clean; {len(froms)} stages; {', '.join(BINARIES)}; USER {users[-1] if users else '?'}")


# ---------------------------------------------------------------------------
# Compose


def env_example_vars(path: Path) -> Tuple[Dict[str, str], List[str]]:
    """KEY=VALUE lines of .env.example (commented `# KEY=...` ones count as
    documented, with an empty value)."""
    values: Dict[str, str] = {}
    problems: List[str] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = re.match(r"^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if not m:
            continue
        key, value = m.group(2), m.group(3).split("#", 1)[0].strip()
        values[key] = "" if m.group(1) else value
        secretish = any(w in key for w in ("SECRET", "PASSWORD", "TOKEN", "KEY"))
        if secretish and not m.group(1) and value and PLACEHOLDER not in value:
            problems.append(f"{path.name}:{n}: {key} has a value; an example must hold a "
                            f"placeholder (empty or containing {PLACEHOLDER}), never a secret")
    return values, problems


def check_compose(repo: Path, report: Report, env_names: Set[str]) -> Tuple[Set[str], Dict[str, Any]]:
    compose_dir = repo / "deploy/compose"
    path = compose_dir / "compose.yaml"
    schema = repo / "deploy/validate/compose-spec.json"
    problems: List[str] = []

    code, out = run([venv_tool("check-jsonschema"), "--color", "never", "--schemafile",
                     str(schema), str(path)])
    if code != 0:
        problems.append("compose-spec schema (deploy/validate/compose-spec.json):\n" + out.strip())

    docs, err = load_yaml_docs(path)
    if err or len(docs) != 1 or not isinstance(docs[0], dict):
        report.result("compose", rel(repo, path), problems + [err or "expected one YAML mapping"])
        return set(), {}
    spec = docs[0]
    services: Dict[str, Any] = spec.get("services") or {}
    volumes_declared = set((spec.get("volumes") or {}).keys())

    # ${VAR} references must be documented in .env.example.
    example = compose_dir / ".env.example"
    if not example.exists():
        problems.append(f"{rel(repo, example)} is missing")
        documented: Dict[str, str] = {}
    else:
        documented, p = env_example_vars(example)
        problems += p
    for var in sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))):
        if var not in documented:
            problems.append(f"${{{var}}} is used but not documented in .env.example")

    giftcard_services = []
    for name, svc in services.items():
        where = f"services.{name}"
        for dep in (svc.get("depends_on") or {}):
            if dep not in services:
                problems.append(f"{where}.depends_on: no service named {dep}")
        mounts: List[Tuple[Path, str]] = []
        for v in svc.get("volumes") or []:
            if not isinstance(v, str):
                continue
            src, _, rest = v.partition(":")
            dst = rest.split(":", 1)[0]
            if src.startswith((".", "/")):
                host = (compose_dir / src).resolve()
                if not host.exists():
                    problems.append(f"{where}.volumes: bind source {src} does not exist ({host})")
                mounts.append((host, dst))
            elif src not in volumes_declared:
                problems.append(f"{where}.volumes: named volume {src} is not declared under volumes:")
        # Container paths in the command that come from a bind mount must exist.
        cmd = svc.get("command") or []
        if isinstance(cmd, str):
            cmd = cmd.split()
        for arg in cmd:
            for host, dst in mounts:
                if isinstance(arg, str) and arg.startswith(dst.rstrip("/") + "/"):
                    target = host / arg[len(dst.rstrip("/")) + 1:]
                    if not target.exists():
                        problems.append(f"{where}.command: {arg} maps to {target}, which does not exist")
        build = svc.get("build")
        if build:
            ctx = (compose_dir / (build.get("context", ".") if isinstance(build, dict) else build)).resolve()
            dockerfile = ctx / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            if not dockerfile.exists():
                problems.append(f"{where}.build: {dockerfile} does not exist")
        if build or "giftcard" in str(svc.get("image", "")):
            giftcard_services.append(name)
            if not cmd or cmd[0] not in BINARIES:
                problems.append(f"{where}.command must start with one of {', '.join(BINARIES)}")
            for key in (svc.get("environment") or {}):
                if key not in env_names:
                    problems.append(f"{where}.environment: {key} is not a variable the services read "
                                    "(typo? see README.md, Configuration)")

    # What this deployment promises.
    nats_nodes = [n for n, s in services.items() if str(s.get("image", "")).startswith("nats:2.12")]
    if len(nats_nodes) != 3:
        problems.append(f"expected 3 NATS nodes (image nats:2.12*), found {len(nats_nodes)}")
    api = services.get("api") or {}
    if str((api.get("environment") or {}).get("GIFTCARD_STREAM_REPLICAS")) != "3":
        problems.append("services.api.environment.GIFTCARD_STREAM_REPLICAS must be 3 (R3 streams)")
    worker = services.get("worker") or {}
    replicas = ((worker.get("deploy") or {}).get("replicas")) or 1
    if replicas < 2:
        problems.append("services.worker.deploy.replicas must be at least 2")
    migrate = services.get("migrate") or {}
    if migrate.get("command") != ["giftcard-migrate", "up"]:
        problems.append("services.migrate.command must be [giftcard-migrate, up]")
    for name in ("api", "worker"):
        deps = (services.get(name) or {}).get("depends_on") or {}
        if (deps.get("migrate") or {}).get("condition") != "service_completed_successfully":
            problems.append(f"services.{name} must wait for migrate (service_completed_successfully)")
        if "/readyz" not in str((services.get(name) or {}).get("healthcheck")):
            problems.append(f"services.{name}.healthcheck must probe /readyz")

    report.result("compose", rel(repo, path), problems,
                  f"compose-spec schema; {len(services)} services; "
                  f"{len(nats_nodes)} NATS nodes, worker x{replicas}")
    return set(services), spec


# ---------------------------------------------------------------------------
# NATS configs


def check_nats_configs(repo: Path, report: Report, nats_server: str, compose_services: Set[str]) -> None:
    configs = sorted((repo / "deploy/nats").glob("*.conf")) + sorted((repo / "deploy/compose/nats").glob("*.conf"))
    if not configs:
        report.result("nats-config", "deploy/**/*.conf", ["no NATS config files found"])
    for conf in configs:
        problems: List[str] = []
        code, out = run([nats_server, "-t", "-c", str(conf)], cwd=repo)
        if code != 0:
            problems.append(f"nats-server -t: {out.strip()}")
        text = conf.read_text()
        if conf.parent.name == "nats" and conf.parent.parent.name == "compose":
            m = re.match(r"nats-(\d+)\.conf$", conf.name)
            if m and not re.search(rf"^server_name:\s*nats-{m.group(1)}\b", text, re.M):
                problems.append(f"server_name must be nats-{m.group(1)} (the compose service)")
            for host in re.findall(r"nats-route://([^:/\s]+)", text):
                if compose_services and host not in compose_services:
                    problems.append(f"route to {host}, which is not a compose service")
        if "cluster" in text and "jetstream" in text and not re.search(r"sync_interval:\s*always", text):
            problems.append("a JetStream cluster config must set sync_interval: always")
        report.result("nats-config", rel(repo, conf), problems, "nats-server -t: valid")


# ---------------------------------------------------------------------------
# Kubernetes


def labels_match(selector: Dict[str, str], labels: Dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def k8s_validate(doc: Dict[str, Any], version: str) -> Optional[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kv_utils.SchemaNotFoundError:
        return (f"kubernetes {kv_utils.major_minor(version)} has no {doc.get('apiVersion')} "
                f"{doc.get('kind')} (unknown kind or apiVersion)")
    except kv_utils.ValidationError as e:
        where = ".".join(str(p) for p in e.path) or "(root)"
        return f"kubernetes {kv_utils.major_minor(version)}: {where}: {e.message}"
    return None


def check_k8s(repo: Path, report: Report, env_names: Set[str]) -> None:
    k8s = repo / "deploy/k8s"
    versions = [K8S_MIN_VERSION]
    latest = kv_utils.latest_version()
    if kv_utils.major_minor(latest) != kv_utils.major_minor(K8S_MIN_VERSION):
        versions.append(latest)
    vlabel = " and ".join(kv_utils.major_minor(v) for v in versions)

    manifests = sorted(p for p in k8s.glob("*.yaml") if p.name not in K8S_NOT_MANIFESTS)
    resources: List[Tuple[Path, Dict[str, Any]]] = []
    per_file: Dict[Path, List[str]] = {}
    for path in manifests:
        docs, err = load_yaml_docs(path)
        problems = [err] if err else []
        if not err and not docs:
            problems.append("no Kubernetes resource in the file")
        for doc in docs:
            if not isinstance(doc, dict) or "kind" not in doc:
                problems.append("a YAML document that is not a Kubernetes resource")
                continue
            name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            for v in versions:
                msg = k8s_validate(doc, v)
                if msg:
                    problems.append(f"{name}: {msg}")
            if doc.get("kind") != "Namespace" and (doc.get("metadata") or {}).get("namespace") != "giftcard":
                problems.append(f"{name}: metadata.namespace must be giftcard")
            resources.append((path, doc))
        per_file[path] = problems

    def add(path: Path, msg: str) -> None:
        per_file.setdefault(path, []).append(msg)

    by_kind: Dict[str, List[Tuple[Path, Dict[str, Any]]]] = {}
    for path, doc in resources:
        by_kind.setdefault(doc["kind"], []).append((path, doc))

    def named(kind: str) -> Dict[str, Dict[str, Any]]:
        return {(d.get("metadata") or {}).get("name"): d for _, d in by_kind.get(kind, [])}

    configmaps = named("ConfigMap")
    secrets = named("Secret")
    deployments = named("Deployment")

    for name, cm in configmaps.items():
        for key in (cm.get("data") or {}):
            if key not in env_names:
                add(next(p for p, d in resources if d is cm),
                    f"ConfigMap/{name}: {key} is not a variable the services read (typo?)")
    for path, sec in by_kind.get("Secret", []):
        for key, value in (sec.get("stringData") or {}).items():
            if PLACEHOLDER not in str(value):
                add(path, f"Secret/{sec['metadata']['name']}: stringData.{key} must be a placeholder "
                          f"containing {PLACEHOLDER}, never a real value")
        if sec.get("data"):
            add(path, f"Secret/{sec['metadata']['name']}: use stringData placeholders, not data")

    hpa_targets = {((d.get("spec") or {}).get("scaleTargetRef") or {}).get("name")
                   for _, d in by_kind.get("HorizontalPodAutoscaler", [])}

    # Pod templates: references to ConfigMaps/Secrets, env names, probes, security.
    for kind in ("Deployment", "Job"):
        for path, doc in by_kind.get(kind, []):
            name = f"{kind}/{doc['metadata']['name']}"
            tmpl = (doc.get("spec") or {}).get("template") or {}
            pod = tmpl.get("spec") or {}
            if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
                add(path, f"{name}: pod securityContext.runAsNonRoot must be true")
            annotations = (tmpl.get("metadata") or {}).get("annotations") or {}
            if kind == "Deployment":
                sel = ((doc["spec"].get("selector") or {}).get("matchLabels")) or {}
                if not labels_match(sel, (tmpl.get("metadata") or {}).get("labels") or {}):
                    add(path, f"{name}: spec.selector does not match the pod template's labels")
                if annotations.get("prometheus.io/scrape") != "true":
                    add(path, f"{name}: pod template needs prometheus.io/scrape: \"true\"")
                if doc["metadata"]["name"] in hpa_targets and "replicas" in doc["spec"]:
                    add(path, f"{name}: scaled by a HorizontalPodAutoscaler, so it must not set "
                              "spec.replicas (kubectl apply would reset the autoscaler's choice)")
            for c in pod.get("containers") or []:
                cname = f"{name} container {c.get('name')}"
                cmd = c.get("command") or []
                if not cmd or cmd[0] not in BINARIES:
                    add(path, f"{cname}: command must start with one of {', '.join(BINARIES)}")
                sc = c.get("securityContext") or {}
                if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
                    add(path, f"{cname}: securityContext needs readOnlyRootFilesystem: true and "
                              "allowPrivilegeEscalation: false")
                limits = ((c.get("resources") or {}).get("limits") or {})
                requests = ((c.get("resources") or {}).get("requests") or {})
                if "memory" not in limits or "memory" not in requests:
                    add(path, f"{cname}: resources need memory requests and limits")
                for ef in c.get("envFrom") or []:
                    ref = (ef.get("configMapRef") or {}).get("name")
                    if ref and ref not in configmaps:
                        add(path, f"{cname}: envFrom ConfigMap {ref} is not defined in deploy/k8s")
                    sref = (ef.get("secretRef") or {}).get("name")
                    if sref and sref not in secrets:
                        add(path, f"{cname}: envFrom Secret {sref} is not defined in deploy/k8s")
                for e in c.get("env") or []:
                    if e.get("name") not in env_names:
                        add(path, f"{cname}: env {e.get('name')} is not a variable the services read")
                    skr = ((e.get("valueFrom") or {}).get("secretKeyRef")) or {}
                    if skr:
                        sec = secrets.get(skr.get("name"))
                        if sec is None:
                            add(path, f"{cname}: env {e['name']}: Secret {skr.get('name')} is not defined")
                        elif skr.get("key") not in (sec.get("stringData") or {}) and not skr.get("optional"):
                            add(path, f"{cname}: env {e['name']}: Secret {skr['name']} has no key {skr.get('key')}")
                ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
                for probe in ("readinessProbe", "livenessProbe"):
                    pr = c.get(probe)
                    if kind == "Deployment" and not pr:
                        add(path, f"{cname}: needs a {probe}")
                        continue
                    port = ((pr or {}).get("httpGet") or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        add(path, f"{cname}: {probe} uses port {port}, which the container does not name")
                if kind == "Deployment":
                    want = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
                    for probe, p in want.items():
                        got = (((c.get(probe) or {}).get("httpGet") or {}).get("path"))
                        if got != p:
                            add(path, f"{cname}: {probe} must GET {p}, not {got}")
                    if annotations.get("prometheus.io/port") not in {str(v) for v in ports.values()}:
                        add(path, f"{cname}: prometheus.io/port is not one of the container's ports")

    # Services, PDBs and HPAs must point at something that exists.
    for path, svc in by_kind.get("Service", []):
        sel = (svc.get("spec") or {}).get("selector") or {}
        matches = [d for d in deployments.values()
                   if labels_match(sel, ((d["spec"]["template"].get("metadata") or {}).get("labels") or {}))]
        if not matches:
            add(path, f"Service/{svc['metadata']['name']}: selector matches no Deployment's pods")
        for port in (svc.get("spec") or {}).get("ports") or []:
            tp = port.get("targetPort")
            if isinstance(tp, str) and not any(
                    tp == p.get("name") for d in matches
                    for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []):
                add(path, f"Service/{svc['metadata']['name']}: targetPort {tp} is no container port name")
    for path, pdb in by_kind.get("PodDisruptionBudget", []):
        sel = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not any(labels_match(sel, ((d["spec"]["template"].get("metadata") or {}).get("labels") or {}))
                   for d in deployments.values()):
            add(path, f"PodDisruptionBudget/{pdb['metadata']['name']}: selector matches no Deployment's pods")
    for path, hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind") != "Deployment" or ref.get("name") not in deployments:
            add(path, f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: scaleTargetRef "
                      f"{ref.get('kind')}/{ref.get('name')} is not a Deployment in deploy/k8s")
    worker_pdbs = [d for _, d in by_kind.get("PodDisruptionBudget", []) if "worker" in d["metadata"]["name"]]
    if not worker_pdbs:
        add(k8s / "worker.yaml", "the worker needs a PodDisruptionBudget")

    # kustomization.yaml lists every manifest but the deliberate exceptions.
    kpath = k8s / "kustomization.yaml"
    kproblems: List[str] = []
    kdocs, err = load_yaml_docs(kpath) if kpath.exists() else ([], "missing")
    if err:
        kproblems.append(err)
    else:
        listed = set((kdocs[0] or {}).get("resources") or [])
        for r in sorted(listed):
            if not (k8s / r).exists():
                kproblems.append(f"resources: {r} does not exist")
        for m in manifests:
            if m.name not in listed and m.name not in K8S_NOT_IN_KUSTOMIZATION:
                kproblems.append(f"{m.name} is neither in resources nor a documented exception")
        for m in K8S_NOT_IN_KUSTOMIZATION:
            if m in listed:
                kproblems.append(f"{m} must not be in resources ({K8S_NOT_IN_KUSTOMIZATION[m]})")

    for path in manifests:
        kinds = [f"{d['kind']}/{d['metadata']['name']}" for p, d in resources if p == path]
        report.result("k8s", rel(repo, path), per_file.get(path, []),
                      f"{', '.join(kinds)}; kubernetes {vlabel}, strict")
    report.result("kustomize", rel(repo, kpath), kproblems,
                  f"{len(manifests) - len(K8S_NOT_IN_KUSTOMIZATION)} resources listed")


def check_nats_values(repo: Path, report: Report) -> None:
    path = repo / "deploy/k8s/nats-values.yaml"
    docs, err = load_yaml_docs(path)
    if err or len(docs) != 1:
        report.result("helm-values", rel(repo, path), [err or "expected one YAML mapping"])
        return
    v = docs[0]

    def get(*keys: str) -> Any:
        cur = v
        for k in keys:
            cur = (cur or {}).get(k) if isinstance(cur, dict) else None
        return cur

    problems = []
    expect: List[Tuple[Tuple[str, ...], Callable[[Any], bool], str]] = [
        (("config", "cluster", "enabled"), lambda x: x is True, "true"),
        (("config", "cluster", "replicas"), lambda x: x == 3, "3"),
        (("config", "jetstream", "enabled"), lambda x: x is True, "true"),
        (("config", "jetstream", "fileStore", "enabled"), lambda x: x is True, "true"),
        (("config", "jetstream", "fileStore", "pvc", "enabled"), lambda x: x is True, "true"),
        (("config", "jetstream", "merge", "sync_interval"), lambda x: x == "always", "always"),
        (("container", "image", "tag"), lambda x: str(x).startswith("2.12"), "2.12.*"),
    ]
    for keys, ok, want in expect:
        got = get(*keys)
        if not ok(got):
            problems.append(f"{'.'.join(keys)} must be {want}, not {got!r}")
    report.result("helm-values", rel(repo, path), problems,
                  "NATS chart: cluster of 3, JetStream file store, sync_interval always")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, type=Path)
    ap.add_argument("--nats-server", required=True)
    args = ap.parse_args()
    repo = args.repo.resolve()

    report = Report()
    env_names = known_env_vars(repo)
    check_dockerfile(repo, report)
    compose_services, _ = check_compose(repo, report, env_names)
    check_nats_configs(repo, report, args.nats_server, compose_services)
    check_k8s(repo, report, env_names)
    check_nats_values(repo, report)

    if report.failed:
        print(f"check-deploy: {report.failed} of {report.ok + report.failed} files FAILED (see FAIL lines above)")
        return 1
    print(f"check-deploy: all {report.ok} files valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
