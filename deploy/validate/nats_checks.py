"""The NATS server configurations we ship, checked three ways.

* `nats-server -t` on every configuration (deploy/nats, deploy/compose/nats),
  with throwaway passwords in the environment and throwaway certificates
  from deploy/compose/certs.sh in place of the deployment's own paths; and
  what each must say: the users of accounts.conf (no anonymous access), TLS
  and mutual-TLS routes on a cluster, fsync before acknowledging.
* A live run of the compose cluster's three configurations on loopback
  ports: the nodes form a cluster over TLS routes, every user of
  accounts.conf gets in over TLS, nobody gets in without TLS, a user or a
  password, and only the api may publish purchases.
* The Helm values (deploy/k8s/nats-values.yaml): copies of accounts.conf and
  permissions.conf, TLS from the cert-manager Secret, passwords from the
  Kubernetes Secret, no nats-box.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from common import Report, load_yaml_docs, rel, run

CONF_DIRS = ("deploy/nats", "deploy/compose/nats")
ACCOUNTS = "deploy/nats/accounts.conf"
PERMISSIONS = "deploy/nats/permissions.conf"
CERTS_SCRIPT = "deploy/compose/certs.sh"
# Certificate file names the configurations may use, and where certs.sh
# puts a file of that role.
CERT_FILES = {"server.crt": "server/server.crt", "server.key": "server/server.key", "ca.crt": "server/ca.crt"}
PASSWORD_SECRET = "giftcard-nats-passwords"


def strip_comments(text: str) -> str:
    return re.sub(r"(?m)(^|\s)(#|//).*$", "", text)


def includes(conf: Path) -> List[Path]:
    """Files a NATS configuration includes (relative to the including file)."""
    names = re.findall(r"(?m)^\s*include\s+[\"']?([^\"'\s;]+)", strip_comments(conf.read_text()))
    return [(conf.parent / n).resolve() for n in names]


def closure(conf: Path) -> List[Path]:
    """The configuration and everything it includes, transitively."""
    out, todo = [], [conf.resolve()]
    while todo:
        c = todo.pop(0)
        if c in out or not c.exists():
            continue
        out.append(c)
        todo.extend(includes(c))
    return out


def password_vars(repo: Path) -> List[str]:
    return sorted(set(re.findall(r"\$(GIFTCARD_NATS_[A-Z_]+_PASSWORD)",
                                 strip_comments((repo / ACCOUNTS).read_text()))))


def users(repo: Path) -> Dict[str, str]:
    """User name -> the environment variable holding its password."""
    text = strip_comments((repo / ACCOUNTS).read_text())
    return dict(re.findall(r"user:\s*([\w.-]+)\s*,\s*password:\s*\$([A-Z0-9_]+)", text))


def throwaway_env(repo: Path) -> Dict[str, str]:
    # Start with a letter: the server parses the value (accounts.conf).
    return {v: "n" + secrets.token_hex(16) for v in password_vars(repo)}


def make_certs(repo: Path, dest: Path) -> Optional[str]:
    code, out = run(["bash", str(repo / CERTS_SCRIPT), "ensure", str(dest)])
    return None if code == 0 else f"{CERTS_SCRIPT} failed:\n{out.strip()}"


def adapt_cert_paths(text: str, certs: Path) -> Tuple[str, List[str]]:
    """Points cert_file/key_file/ca_file at the throwaway certificates."""
    problems: List[str] = []

    def swap(m: "re.Match[str]") -> str:
        name = Path(m.group(3)).name
        if name not in CERT_FILES:
            problems.append(f"{m.group(1)} {m.group(3)}: use one of the file names {', '.join(CERT_FILES)} "
                            "(scripts/check-deploy.sh substitutes throwaway certificates by name)")
            return m.group(0)
        return f'{m.group(1)}{m.group(2)}"{certs / CERT_FILES[name]}"'

    text = re.sub(r"(cert_file|key_file|ca_file)(\s*:\s*)\"?([^\"\s]+)\"?", swap, text)
    return text, problems


def mirror(repo: Path, confs: List[Path], dest: Path, certs: Path) -> Dict[Path, List[str]]:
    """Copies the configurations under dest (same relative paths), with the
    throwaway certificates; returns the problems per configuration."""
    problems: Dict[Path, List[str]] = {}
    for conf in confs:
        text, p = adapt_cert_paths(conf.read_text(), certs)
        target = dest / conf.relative_to(repo)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        problems[conf] = p
    return problems


def policy_problems(repo: Path, conf: Path) -> List[str]:
    """What every configuration we ship must (not) say."""
    files = closure(conf)
    text = "\n".join(strip_comments(f.read_text()) for f in files)
    problems = []
    if (repo / ACCOUNTS).resolve() not in files:
        problems.append(f"must include {ACCOUNTS} (directly or through another file): without it "
                        "anyone may connect")
    for forbidden, why in (("no_auth_user", "anonymous access"), ("allow_non_tls", "clients without TLS"),
                           ("authorization", "users outside accounts.conf")):
        if re.search(rf"(?m)^\s*{forbidden}\b", text):
            problems.append(f"{forbidden}: not in a configuration we ship ({why})")
    tls_blocks = len(re.findall(r"(?m)^\s*tls\s*\{", text))
    if re.search(r"(?m)^\s*cluster\s*\{", text):
        if tls_blocks < 2 or "ca_file" not in text:
            problems.append("a cluster needs TLS for clients (top-level tls {}) and for its routes "
                            "(cluster { tls { … ca_file … } }): mutual TLS between nodes")
        if not re.search(r"no_advertise:\s*true", text):
            problems.append("cluster.no_advertise must be true: clients verify the certificate against the "
                            "names in NATS_URL, not against advertised IP addresses")
        if "jetstream" in text and not re.search(r"sync_interval:\s*always", text):
            problems.append("a JetStream cluster config must set sync_interval: always")
    elif tls_blocks == 0 and not re.search(r"(?m)^\s*host:\s*127\.0\.0\.1\b", text):
        problems.append("without TLS, a server must listen on the loopback interface only (host: 127.0.0.1)")
    return problems


def compose_problems(conf: Path, compose_services: Set[str]) -> List[str]:
    problems = []
    text = conf.read_text()
    m = re.match(r"nats-(\d+)\.conf$", conf.name)
    if m and not re.search(rf"^server_name:\s*nats-{m.group(1)}\b", text, re.M):
        problems.append(f"server_name must be nats-{m.group(1)} (the compose service)")
    for host in re.findall(r"nats-route://([^:/\s]+)", text):
        if compose_services and host not in compose_services:
            problems.append(f"route to {host}, which is not a compose service")
    return problems


def check_nats_configs(repo: Path, report: Report, nats_server: str, compose_services: Set[str]) -> None:
    confs = sorted(p for d in CONF_DIRS for p in (repo / d).glob("*.conf"))
    if not confs:
        report.result("nats-config", "deploy/**/*.conf", ["no NATS config files found"])
        return
    included_by: Dict[Path, List[Path]] = {}
    for conf in confs:
        for inc in includes(conf):
            included_by.setdefault(inc, []).append(conf)
    env = throwaway_env(repo)
    results: Dict[Path, List[str]] = {}
    with tempfile.TemporaryDirectory(prefix="check-deploy-nats-") as tmp:
        certs = Path(tmp) / "tls"
        cert_error = make_certs(repo, certs)
        mirrored = mirror(repo, confs, Path(tmp) / "repo", certs)
        for conf in confs:
            if conf.resolve() in included_by:
                continue
            problems = list(mirrored[conf]) + ([cert_error] if cert_error else [])
            for part in closure(conf)[1:]:
                problems += mirrored.get(Path(part), [])
            code, out = run([nats_server, "-t", "-c", str(Path(tmp) / "repo" / conf.relative_to(repo))],
                            cwd=Path(tmp), env=env)
            if code != 0:
                problems.append(f"nats-server -t: {out.strip()}")
            problems += policy_problems(repo, conf)
            if conf.parent == repo / "deploy/compose/nats":
                problems += compose_problems(conf, compose_services)
            results[conf] = problems
            report.result("nats-config", rel(repo, conf), problems,
                          f"nats-server -t with throwaway passwords ({len(env)}) and certificates: valid")
    for conf in confs:
        parents = included_by.get(conf.resolve())
        if not parents:
            continue
        entry = [c for c in confs if conf.resolve() in closure(c) and c in results]
        bad = [rel(repo, c) for c in entry if results[c]]
        report.result("nats-config", rel(repo, conf),
                      [f"included by {', '.join(bad)}, which failed"] if bad else
                      ([] if entry else ["included by no configuration that is checked"]),
                      f"fragment, valid in {', '.join(rel(repo, c) for c in entry)}")


# ---------------------------------------------------------------------------
# A live run of the compose cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def substitute(text: str, pattern: str, repl: Any, expect: int, what: str, problems: List[str]) -> str:
    new, n = re.subn(pattern, repl, text, flags=re.M)
    if n != expect:
        problems.append(f"the live check expects {expect} × {what} in the compose NATS configuration, "
                        f"found {n}: adapt deploy/validate/nats_checks.py")
    return new


def live_node_configs(repo: Path, tmp: Path, certs: Path,
                      ports: List[Tuple[int, int, int]]) -> Tuple[List[Path], List[str]]:
    """The three compose node configurations, moved to loopback ports and
    temporary paths. Each node gets its own tree because the shared
    cluster.conf carries the ports."""
    problems: List[str] = []
    compose_dir = repo / "deploy/compose/nats"
    entries = []
    for i, (client, route, http) in enumerate(ports, start=1):
        root = tmp / f"node{i}"
        shutil.copytree(repo / "deploy/nats", root / "nats")
        shutil.copytree(compose_dir, root / "compose/nats")
        cluster = root / "compose/nats/cluster.conf"
        text, p = adapt_cert_paths(cluster.read_text(), certs)
        problems += p
        text = substitute(text, r"^port: 4222$", f"host: 127.0.0.1\nport: {client}", 1, "`port: 4222`", problems)
        text = substitute(text, r"^http_port: 8222$", f"http_port: {http}", 1, "`http_port: 8222`", problems)
        text = substitute(text, r"^(\s+)port: 6222$", rf"\g<1>listen: 127.0.0.1:{route}", 1, "`  port: 6222`", problems)
        text = substitute(text, r"nats-route://nats-(\d):6222",
                          lambda m: f"nats-route://localhost:{ports[int(m.group(1)) - 1][1]}", 3,
                          "`nats-route://nats-N:6222`", problems)
        text = substitute(text, r'store_dir: "/data/jetstream"', f'store_dir: "{root / "js"}"', 1,
                          '`store_dir: "/data/jetstream"`', problems)
        cluster.write_text(text)
        entries.append(root / f"compose/nats/nats-{i}.conf")
    return entries, problems


def wait_for_cluster(ports: List[Tuple[int, int, int]], procs: List[subprocess.Popen], within: float) -> Optional[str]:
    deadline = time.monotonic() + within
    last = ""
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return "a node exited"
        try:
            for _, _, http in ports:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=2) as r:
                    if r.status != 200:
                        raise OSError(f"/healthz {r.status}")
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/routez", timeout=2) as r:
                    peers = {rt.get("remote_name") for rt in json.load(r).get("routes", [])}
                    if len(peers - {None}) < 2:
                        raise OSError(f"routes to {sorted(peers - {None})} only")
            return None
        except (OSError, ValueError) as e:
            last = str(e)
        time.sleep(0.3)
    return f"the cluster did not form within {within:.0f} s ({last})"


class NatsClient:
    """Just enough of the NATS protocol to log in and be told no."""

    def __init__(self, port: int, ca: Path, user: Optional[str], password: Optional[str], tls: bool = True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        f = self.sock.makefile("rb")
        info = json.loads(f.readline()[len(b"INFO "):])
        self.tls_required = bool(info.get("tls_required"))
        if tls:
            ctx = ssl.create_default_context(cafile=str(ca))
            # The name the compose services use; the certificate must carry it.
            self.sock = ctx.wrap_socket(self.sock, server_hostname="nats-1")
        self.file = self.sock.makefile("rb")
        connect: Dict[str, Any] = {"verbose": False, "pedantic": False, "headers": True}
        if user:
            connect.update({"user": user, "pass": password})
        self.answer = self.send(b"CONNECT " + json.dumps(connect).encode())

    def send(self, line: bytes) -> str:
        try:
            self.sock.sendall(line + b"\r\nPING\r\n")
            return self.file.readline().decode(errors="replace").strip()
        except OSError as e:
            return f"connection closed ({e})"

    def close(self) -> None:
        self.sock.close()


def client_problems(port: int, ca: Path, env: Dict[str, str], accounts: Dict[str, str]) -> Tuple[List[str], str]:
    problems: List[str] = []
    refused = {
        "anonymous": (None, None, True),
        "a wrong password": ("giftcard-api", "n-wrong", True),
        "no TLS": ("giftcard-api", env.get("GIFTCARD_NATS_API_PASSWORD"), False),
    }
    for what, (user, password, tls) in refused.items():
        c = NatsClient(port, ca, user, password, tls)
        if c.answer == "PONG":
            problems.append(f"a client with {what} got in")
        c.close()
    for user, var in sorted(accounts.items()):
        c = NatsClient(port, ca, user, env[var])
        if not c.tls_required:
            problems.append("the server does not require TLS from clients")
        if c.answer != "PONG":
            problems.append(f"{user} (password ${var}) could not log in over TLS: {c.answer}")
        elif user != "sys":
            # Nobody but the api may publish purchases (permissions.conf).
            answer = c.send(b"PUB purchases.0.check 0\r\n")
            may = user.startswith("giftcard-api")
            if (answer == "PONG") != may:
                problems.append(f"{user} {'could not' if may else 'could'} publish to purchases.0.check: {answer}")
        c.close()
    return problems, f"{len(accounts)} users in over TLS, anonymous, wrong-password and plain-TCP clients refused"


def check_nats_cluster_live(repo: Path, report: Report, nats_server: str) -> None:
    where = "deploy/compose/nats"
    env = throwaway_env(repo)
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    procs: List[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="check-deploy-live-") as tmp_name:
        tmp = Path(tmp_name)
        certs = tmp / "tls"
        error = make_certs(repo, certs)
        if error:
            report.result("nats-live", where, [error])
            return
        entries, problems = live_node_configs(repo, tmp, certs, ports)
        if problems:
            report.result("nats-live", where, problems)
            return
        detail = ""
        try:
            for i, conf in enumerate(entries, start=1):
                log = (tmp / f"nats-{i}.log").open("w")
                procs.append(subprocess.Popen([nats_server, "-c", str(conf)], cwd=tmp, stdout=log,
                                              stderr=subprocess.STDOUT, env={**env, "PATH": "/usr/bin:/bin"}))
            failure = wait_for_cluster(ports, procs, within=30)
            if failure:
                problems.append(failure)
            else:
                problems, detail = client_problems(ports[0][0], certs / "public/ca.crt", env, users(repo))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if problems:
            for i in range(1, 4):
                tail = (tmp / f"nats-{i}.log").read_text(errors="replace").splitlines()[-8:]
                problems.append(f"nats-{i} log (last lines):\n" + "\n".join(tail))
    report.result("nats-live", where, problems,
                  f"3 nodes on loopback with certs.sh certificates: mutual-TLS routes formed; {detail}; "
                  "only the api publishes purchases")


# ---------------------------------------------------------------------------
# Helm values


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
        (("config", "nats", "tls", "enabled"), lambda x: x is True, "true (clients use TLS)"),
        (("config", "cluster", "tls", "enabled"), lambda x: x is True, "true (mutual-TLS routes)"),
        (("config", "cluster", "tls", "merge", "ca_file"), lambda x: x == "/etc/nats-ca-cert/ca.crt",
         "the trust bundle of tlsCA (/etc/nats-ca-cert/ca.crt)"),
        (("tlsCA", "enabled"), lambda x: x is True, "true (the trust bundle)"),
        (("tlsCA", "configMapName"), lambda x: x == "giftcard-nats-ca",
         "giftcard-nats-ca (the bundle the clients trust too)"),
        (("config", "merge", "$include"), lambda x: x == "accounts.conf", "accounts.conf (users and permissions)"),
        (("natsBox", "enabled"), lambda x: x is False, "false"),
    ]
    for keys, ok, want in expect:
        got = get(*keys)
        if not ok(got):
            problems.append(f"{'.'.join(keys)} must be {want}, not {got!r}")

    data = get("configMap", "merge", "data") or {}
    for name, source in (("accounts.conf", ACCOUNTS), ("permissions.conf", PERMISSIONS)):
        if data.get(name) != (repo / source).read_text():
            problems.append(f"configMap.merge.data.{name} must be a byte-for-byte copy of {source}: "
                            "copy the file into the block (its permission sets and users must not drift)")

    env = get("container", "env") or {}
    wanted = set(password_vars(repo))
    if set(env) != wanted:
        problems.append(f"container.env must map exactly the passwords accounts.conf reads: "
                        f"missing {sorted(wanted - set(env))}, extra {sorted(set(env) - wanted)}")
    secret_keys = nats_secret_keys(repo)
    for name, value in env.items():
        ref = ((value or {}).get("valueFrom") or {}).get("secretKeyRef") or {} if isinstance(value, dict) else {}
        if ref.get("name") != PASSWORD_SECRET or ref.get("key") != name:
            problems.append(f"container.env.{name} must come from Secret {PASSWORD_SECRET}, key {name}")
        elif name not in secret_keys:
            problems.append(f"container.env.{name}: deploy/k8s/nats/secret.example.yaml has no key {name}")

    cert_secrets = certificate_secrets(repo)
    for keys in (("config", "nats", "tls", "secretName"), ("config", "cluster", "tls", "secretName")):
        if get(*keys) not in cert_secrets:
            problems.append(f"{'.'.join(keys)} = {get(*keys)!r} is no Certificate's secretName in "
                            f"deploy/k8s/nats/certificates.yaml ({sorted(cert_secrets)})")
    report.result("helm-values", rel(repo, path), problems,
                  "cluster of 3, JetStream file store, sync_interval always; accounts.conf and "
                  "permissions.conf copied verbatim; TLS for clients and routes; passwords from "
                  f"Secret {PASSWORD_SECRET}; no nats-box")


def nats_secret_keys(repo: Path) -> Set[str]:
    docs, _ = load_yaml_docs(repo / "deploy/k8s/nats/secret.example.yaml")
    return {k for d in docs if (d.get("metadata") or {}).get("name") == PASSWORD_SECRET
            for k in (d.get("stringData") or {})}


def certificate_secrets(repo: Path) -> Dict[str, Dict[str, Any]]:
    docs, _ = load_yaml_docs(repo / "deploy/k8s/nats/certificates.yaml")
    return {d["spec"]["secretName"]: d for d in docs
            if d.get("kind") == "Certificate" and (d.get("spec") or {}).get("secretName")}
