#!/usr/bin/env python3
"""Validates the deployment files without a container engine or a cluster.

Run by scripts/check-deploy.sh inside .tools/venv (PyYAML, jsonschema,
kubernetes-validate, check-jsonschema and hadolint come from
deploy/validate/requirements.txt):

    python deploy/validate/check_deploy.py --repo . \
        --nats-server .tools/bin/nats-server --promtool /usr/bin/promtool

Prints one `OK` or `FAIL` line per checked file (with what is wrong) and
exits 1 if anything failed. This file checks the Dockerfile and compose;
nats_checks.py the NATS configurations, k8s_checks.py and netpol_checks.py
the Kubernetes manifests, monitoring_checks.py the alerts and the dashboard.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from common import PLACEHOLDER, Report, load_yaml_docs, rel, run, venv_tool
from k8s_checks import BINARIES, check_k8s
from monitoring_checks import check_monitoring
from nats_checks import check_nats_cluster_live, check_nats_configs, check_nats_values, password_vars, users
from netpol_checks import check_network_policies

# Environment variables read by something other than the project's code.
EXTERNAL_ENV = {"RUST_LOG"}

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
    provision = services.get("provision") or {}
    if str((provision.get("environment") or {}).get("GIFTCARD_STREAM_REPLICAS")) != "3":
        problems.append("services.provision.environment.GIFTCARD_STREAM_REPLICAS must be 3 (R3 streams; "
                        "giftcard-migrate nats creates them)")
    worker = services.get("worker") or {}
    replicas = ((worker.get("deploy") or {}).get("replicas")) or 1
    if replicas < 2:
        problems.append("services.worker.deploy.replicas must be at least 2")
    migrate = services.get("migrate") or {}
    if migrate.get("command") != ["giftcard-migrate", "up"]:
        problems.append("services.migrate.command must be [giftcard-migrate, up]")
    for name in ("api", "worker"):
        deps = (services.get(name) or {}).get("depends_on") or {}
        for step in ("migrate", "provision"):
            if (deps.get(step) or {}).get("condition") != "service_completed_successfully":
                problems.append(f"services.{name} must wait for {step} (service_completed_successfully)")
        if "/readyz" not in str((services.get(name) or {}).get("healthcheck")):
            problems.append(f"services.{name}.healthcheck must probe /readyz")
    problems += compose_nats_problems(repo, services, nats_nodes)

    report.result("compose", rel(repo, path), problems,
                  f"compose-spec schema; {len(services)} services; "
                  f"{len(nats_nodes)} NATS nodes, worker x{replicas}")
    return set(services), spec


def default_of(value: Any) -> str:
    """`${VAR:-default}` -> default; a plain value stays."""
    m = re.fullmatch(r"\$\{[A-Za-z0-9_]+:-(.*)\}", str(value))
    return m.group(1) if m else str(value)


def compose_nats_problems(repo: Path, services: Dict[str, Any], nats_nodes: List[str]) -> List[str]:
    """NATS in compose: TLS, one user per service, the provisioning step,
    passwords for every user, and nothing published that should not be."""
    problems = []
    provision = services.get("provision") or {}
    if provision.get("command") != ["giftcard-migrate", "nats"]:
        problems.append("services.provision.command must be [giftcard-migrate, nats] (streams and buckets)")
    wanted = {"api": "giftcard-api", "worker": "giftcard-worker", "provision": "giftcard-provisioner"}
    for name, user in wanted.items():
        env = (services.get(name) or {}).get("environment") or {}
        urls = str(env.get("NATS_URL", "")).split(",")
        if not all(u.startswith("tls://") for u in urls):
            problems.append(f"services.{name}.environment.NATS_URL must list tls:// URLs only, not {urls}")
        if not env.get("NATS_TLS_CA_FILE"):
            problems.append(f"services.{name}.environment.NATS_TLS_CA_FILE must name the CA of certs.sh")
        if default_of(env.get("NATS_USER")) != user:
            problems.append(f"services.{name}.environment.NATS_USER must be (default to) {user}")
    api = services.get("api") or {}
    metrics = str((api.get("environment") or {}).get("GIFTCARD_API_METRICS_LISTEN", ""))
    if not metrics:
        problems.append("services.api.environment.GIFTCARD_API_METRICS_LISTEN must be set (/metrics apart)")
    elif any(metrics.rsplit(":", 1)[-1] == str(p).rsplit(":", 1)[-1] for p in api.get("ports") or []):
        problems.append("services.api.ports must not publish the metrics listener")
    wanted_pw = set(password_vars(repo))
    for name in nats_nodes:
        node = services[name]
        if set((node.get("environment") or {})) != wanted_pw:
            problems.append(f"services.{name}.environment must set exactly the passwords of "
                            f"deploy/nats/accounts.conf: {sorted(wanted_pw)}")
        if node.get("ports"):
            problems.append(f"services.{name}.ports: NATS stays on the compose network")
        if ((node.get("depends_on") or {}).get("nats-certs") or {}).get("condition") != \
                "service_completed_successfully":
            problems.append(f"services.{name} must wait for nats-certs (service_completed_successfully)")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, type=Path)
    ap.add_argument("--nats-server", required=True)
    ap.add_argument("--promtool", required=True)
    args = ap.parse_args()
    repo = args.repo.resolve()

    report = Report()
    env_names = known_env_vars(repo)
    check_dockerfile(repo, report)
    compose_services, _ = check_compose(repo, report, env_names)
    check_nats_configs(repo, report, args.nats_server, compose_services)
    check_nats_cluster_live(repo, report, args.nats_server)
    manifests = check_k8s(repo, report, env_names, set(users(repo)))
    check_network_policies(manifests, report)
    check_nats_values(repo, report)
    check_monitoring(repo, report, args.promtool)

    if report.failed:
        print(f"check-deploy: {report.failed} of {report.ok + report.failed} files FAILED (see FAIL lines above)")
        return 1
    print(f"check-deploy: all {report.ok} files valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
