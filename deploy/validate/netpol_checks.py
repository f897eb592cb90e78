"""What the NetworkPolicies actually allow.

A small evaluator of Kubernetes NetworkPolicy semantics (a connection needs
the source's egress and the destination's ingress to allow it; a pod no
policy selects is not isolated) runs the connections of the deployment
against the policies of deploy/k8s, deploy/k8s/nats and deploy/k8s/postgres:
each connection the system needs must be allowed, and each one it must not
have must be denied.

The pods are the Deployments and Jobs of deploy/k8s plus stand-ins for what
runs elsewhere, labelled as the policies assume (the NATS chart's pods,
Prometheus, the ingress controller, DNS, PostgreSQL) and two intruders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from common import Report, rel
from k8s_checks import Manifests, pod_labels

# The labels the NATS chart gives its server pods (nats.selectorLabels);
# a nats-box pod has component nats-box.
NATS = {"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats", "app.kubernetes.io/component": "nats"}


@dataclass
class Pod:
    name: str
    namespace: str
    labels: Dict[str, str]
    ports: Dict[str, int] = field(default_factory=dict)


def stand_ins() -> List[Pod]:
    return [
        Pod("nats", "nats", NATS, {"nats": 4222, "cluster": 6222, "monitor": 8222}),
        Pod("operator-tooling", "nats", {"giftcard-nats-operator": "true"}),
        Pod("nats-box", "nats", {**NATS, "app.kubernetes.io/component": "nats-box"}),
        Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}),
        Pod("ingress-controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
        Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53}),
        Pod("postgresql", "postgres", {"app.kubernetes.io/name": "postgresql"}, {"postgresql": 5432}),
        Pod("intruder-in-giftcard", "giftcard", {"app.kubernetes.io/name": "intruder"}),
        Pod("intruder-elsewhere", "default", {"run": "intruder"}),
    ]


def selects(selector: Optional[Dict[str, Any]], labels: Dict[str, str]) -> bool:
    """A LabelSelector; an empty one selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, False)
        if not ok:
            return False
    return True


def peer_matches(peer: Dict[str, Any], policy_ns: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # cluster-external addresses: no pod here
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns_sel is None:
        in_ns = pod.namespace == policy_ns
    else:
        in_ns = selects(ns_sel, {"kubernetes.io/metadata.name": pod.namespace})
    return in_ns and selects(pod_sel, pod.labels)


def port_matches(ports: Optional[List[Dict[str, Any]]], dst: Pod, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None or want == port or (isinstance(want, str) and dst.ports.get(want) == port):
            return True
    return False


class Policies:
    def __init__(self, m: Manifests) -> None:
        self.items = [d for _, d in m.of_kind("NetworkPolicy")]

    def _allowed(self, pod: Pod, direction: str, peer: Pod, dst: Pod, port: int, protocol: str) -> bool:
        kind = "Ingress" if direction == "ingress" else "Egress"
        isolating = [p for p in self.items if p["metadata"]["namespace"] == pod.namespace
                     and kind in (p["spec"].get("policyTypes") or ["Ingress"])
                     and selects(p["spec"].get("podSelector"), pod.labels)]
        if not isolating:
            return True
        peers_key = "from" if direction == "ingress" else "to"
        for p in isolating:
            for rule in p["spec"].get(direction) or []:
                peers = rule.get(peers_key)
                if (not peers or any(peer_matches(x, p["metadata"]["namespace"], peer) for x in peers)) and \
                        port_matches(rule.get("ports"), dst, port, protocol):
                    return True
        return False

    def allows(self, src: Pod, dst: Pod, port: int, protocol: str = "TCP") -> bool:
        return self._allowed(src, "egress", dst, dst, port, protocol) and \
            self._allowed(dst, "ingress", src, dst, port, protocol)


def workload_pods(m: Manifests) -> Dict[str, Pod]:
    pods = {}
    for kind in ("Deployment", "Job"):
        for _, doc in m.of_kind(kind, "giftcard"):
            labels = pod_labels(doc)
            ports = {p.get("name"): p.get("containerPort") for c in doc["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports") or []}
            pods[labels.get("app.kubernetes.io/name", doc["metadata"]["name"])] = \
                Pod(doc["metadata"]["name"], "giftcard", labels, ports)
    return pods


# (source, destination, port[, protocol]): what the system needs.
MUST_ALLOW = [
    ("ingress-controller", "giftcard-api", 8080), ("prometheus", "giftcard-api", 9091),
    ("prometheus", "giftcard-worker", 9090), ("prometheus", "nats", 8222),
    ("giftcard-api", "nats", 4222), ("giftcard-worker", "nats", 4222), ("giftcard-provision", "nats", 4222),
    ("operator-tooling", "nats", 4222), ("nats", "nats", 6222),
    ("giftcard-api", "postgresql", 5432), ("giftcard-worker", "postgresql", 5432),
    ("giftcard-migrate", "postgresql", 5432),
] + [(p, "kube-dns", 53, "UDP") for p in ("giftcard-api", "giftcard-worker", "giftcard-migrate",
                                         "giftcard-provision", "nats")]
# What nobody may do.
MUST_DENY = [
    ("ingress-controller", "giftcard-api", 9091), ("ingress-controller", "giftcard-worker", 9090),
    ("giftcard-api", "giftcard-worker", 9090), ("giftcard-worker", "giftcard-api", 8080),
    ("giftcard-migrate", "nats", 4222), ("giftcard-provision", "postgresql", 5432),
    ("prometheus", "nats", 4222), ("prometheus", "nats", 6222), ("giftcard-api", "nats", 6222),
    ("giftcard-api", "nats", 8222), ("nats", "giftcard-api", 8080), ("operator-tooling", "nats", 6222),
    ("operator-tooling", "postgresql", 5432), ("nats-box", "nats", 4222),
] + [(intruder, dst, port) for intruder in ("intruder-in-giftcard", "intruder-elsewhere")
     for dst, port in (("giftcard-api", 8080), ("giftcard-api", 9091), ("giftcard-worker", 9090),
                       ("nats", 4222), ("nats", 6222), ("nats", 8222), ("postgresql", 5432))]


def check_network_policies(m: Manifests, report: Report) -> None:
    pods = {p.name: p for p in stand_ins()}
    pods.update(workload_pods(m))
    policies = Policies(m)
    problems: List[str] = []

    def lookup(name: str) -> Optional[Pod]:
        if name not in pods:
            problems.append(f"no pod {name} in deploy/k8s (or among the stand-ins)")
        return pods.get(name)

    def verdicts(cases: List[Tuple[Any, ...]], want: bool) -> None:
        for src_name, dst_name, port, *proto in cases:
            src, dst = lookup(src_name), lookup(dst_name)
            if src and dst and policies.allows(src, dst, port, *(proto or ["TCP"])) != want:
                problems.append(f"{src_name} ({src.namespace}) -> {dst_name} ({dst.namespace}):{port} "
                                f"is {'denied' if want else 'allowed'}; it must be {'allowed' if want else 'denied'}")

    verdicts(MUST_ALLOW, True)
    verdicts(MUST_DENY, False)
    for ns in ("giftcard", "nats"):
        if not any(d["metadata"]["namespace"] == ns and not (d["spec"].get("podSelector") or {})
                   and set(d["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
                   and not d["spec"].get("ingress") and not d["spec"].get("egress") for d in policies.items):
            problems.append(f"namespace {ns} needs a default-deny NetworkPolicy (podSelector {{}}, Ingress and Egress)")
    files = sorted({rel(m.repo, p) for p, _ in m.of_kind("NetworkPolicy")})
    report.result("network", " + ".join(files) or "deploy/k8s", problems,
                  f"{len(MUST_ALLOW)} needed connections allowed, {len(MUST_DENY)} others denied")
