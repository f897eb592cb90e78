"""Monitoring as code: deploy/monitoring/{alerts.yaml, alerts.test.yaml,
dashboard.json} and the PrometheusRule of deploy/k8s/monitoring.yaml.

promtool (Debian's `prometheus` package, installed by
scripts/check-deploy.sh) checks the rules, runs their unit tests and parses
every query of the dashboard; this module adds what promtool does not know:
every alert tested firing and not firing, the PrometheusRule equal to the
rule file, the partition count of the alerts equal to the deployment's, and
the dashboard's structure.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

from common import Report, load_yaml_docs, rel, run

MONITORING = "deploy/monitoring"
# Grafana's interval variables, replaced by a duration for promtool.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
# What the dashboard must show (metric names it must query).
DASHBOARD_MUST_SHOW = {
    "throughput": ["giftcard_api_purchases_total", "giftcard_worker_purchases_total"],
    "latency": ["giftcard_api_purchase_seconds_bucket", "giftcard_worker_purchase_latency_seconds_bucket"],
    "backlog per partition": ["giftcard_worker_partition_backlog"],
    "dead letters": ["giftcard_worker_dead_letters_pending", "giftcard_worker_dead_lettered_total"],
    "conflicts and fenced batches": ["giftcard_worker_batch_conflicts_total", "giftcard_worker_fenced_batches_total"],
    "batch failures": ["giftcard_worker_batch_failures_total"],
    "process memory and CPU": ["process_resident_memory_bytes", "process_cpu_seconds_total"],
}


def alert_rules(groups: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {r["alert"]: r for g in groups for r in g.get("rules") or [] if "alert" in r}


def check_rules(repo: Path, report: Report, promtool: str) -> None:
    path = repo / MONITORING / "alerts.yaml"
    problems: List[str] = []
    code, out = run([promtool, "check", "rules", str(path)])
    if code != 0:
        problems.append(f"promtool check rules:\n{out.strip()}")
    docs, err = load_yaml_docs(path)
    groups = (docs[0] or {}).get("groups", []) if docs else []
    rules = alert_rules(groups)
    for name, rule in rules.items():
        if (rule.get("labels") or {}).get("severity") not in ("page", "ticket"):
            problems.append(f"{name}: labels.severity must be page or ticket")
        for key in ("summary", "description", "runbook"):
            if not (rule.get("annotations") or {}).get(key):
                problems.append(f"{name}: needs annotations.{key}")
        runbook = (rule.get("annotations") or {}).get("runbook", "")
        anchor = runbook.split("#", 1)[-1] if "#" in runbook else ""
        if anchor and anchor not in markdown_anchors(repo / "docs/operations.md"):
            problems.append(f"{name}: runbook {runbook} names no section of docs/operations.md")
    partitions = configured_partitions(repo)
    unowned = (rules.get("GiftcardPartitionsUnowned") or {}).get("expr", "")
    if partitions and not re.search(rf"<\s*{partitions}\b", str(unowned)):
        problems.append(f"GiftcardPartitionsUnowned must compare with GIFTCARD_PARTITIONS={partitions} "
                        "(deploy/k8s/configmap.yaml)")
    report.result("alerts", rel(repo, path), problems,
                  f"promtool check rules: {len(rules)} alerts in {len(groups)} groups")
    check_rule_tests(repo, report, promtool, rules)
    check_prometheus_rule(repo, report, groups)


def markdown_anchors(path: Path) -> set:
    anchors = set()
    for line in path.read_text().splitlines():
        m = re.match(r"^#+\s+(.*)$", line)
        if m:
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def configured_partitions(repo: Path) -> str:
    docs, _ = load_yaml_docs(repo / "deploy/k8s/configmap.yaml")
    return str(next((d.get("data") or {}).get("GIFTCARD_PARTITIONS", "") for d in docs) if docs else "")


def check_rule_tests(repo: Path, report: Report, promtool: str, rules: Dict[str, Any]) -> None:
    path = repo / MONITORING / "alerts.test.yaml"
    problems: List[str] = []
    code, out = run([promtool, "test", "rules", str(path)], cwd=path.parent)
    if code != 0:
        problems.append(f"promtool test rules:\n{out.strip()}")
    docs, err = load_yaml_docs(path)
    cases = [c for t in ((docs[0] or {}).get("tests") or [] if docs else [])
             for c in t.get("alert_rule_test") or []]
    for name in rules:
        mine = [c for c in cases if c.get("alertname") == name]
        if not any(c.get("exp_alerts") for c in mine):
            problems.append(f"{name}: no test where it fires")
        if not any(not c.get("exp_alerts") for c in mine):
            problems.append(f"{name}: no test where it stays quiet")
    for c in cases:
        if c.get("alertname") not in rules:
            problems.append(f"a test of {c.get('alertname')}, which alerts.yaml does not define")
    report.result("alert-tests", rel(repo, path), problems,
                  f"promtool test rules: {len(cases)} evaluations; every alert fires and stays quiet")


def check_prometheus_rule(repo: Path, report: Report, groups: List[Dict[str, Any]]) -> None:
    path = repo / "deploy/k8s/monitoring.yaml"
    docs, err = load_yaml_docs(path)
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    problems = [err] if err else []
    if len(rules) != 1:
        problems.append(f"expected one PrometheusRule, found {len(rules)}")
    elif (rules[0].get("spec") or {}).get("groups") != groups:
        problems.append(f"PrometheusRule/{rules[0]['metadata']['name']}: spec.groups must equal the groups of "
                        f"{MONITORING}/alerts.yaml: copy them over")
    report.result("alerts-k8s", rel(repo, path), problems,
                  f"PrometheusRule spec.groups = {MONITORING}/alerts.yaml")


def dashboard_queries(dash: Dict[str, Any]) -> List[Tuple[str, str]]:
    out = []
    for panel in dash.get("panels") or []:
        for t in panel.get("targets") or []:
            out.append((f"panel {panel.get('id')} ({panel.get('title')}) {t.get('refId')}", t.get("expr", "")))
    return out


def check_dashboard(repo: Path, report: Report, promtool: str) -> None:
    path = repo / MONITORING / "dashboard.json"
    try:
        dash = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        report.result("dashboard", rel(repo, path), [f"not valid JSON: {e}"])
        return
    problems: List[str] = []
    panels = [p for p in dash.get("panels") or [] if p.get("type") != "row"]
    if len(panels) < 6:
        problems.append(f"at least six panels, found {len(panels)}")
    if int(dash.get("schemaVersion") or 0) < 36:
        problems.append(f"schemaVersion {dash.get('schemaVersion')}: export it from Grafana 9 or later")
    ids = [p.get("id") for p in dash.get("panels") or []]
    if len(ids) != len(set(ids)):
        problems.append("panel ids must be unique")
    if not any(v.get("name") == "DS_PROMETHEUS" and v.get("type") == "datasource"
               for v in (dash.get("templating") or {}).get("list") or []):
        problems.append("needs a datasource variable DS_PROMETHEUS (templating.list)")
    for p in panels:
        for holder in [p] + list(p.get("targets") or []):
            if (holder.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}":
                problems.append(f"panel {p.get('id')} ({p.get('title')}): datasource must be ${{DS_PROMETHEUS}}")
                break
        if not p.get("targets") or not p.get("gridPos"):
            problems.append(f"panel {p.get('id')} ({p.get('title')}): needs targets and a gridPos")
    queries = dashboard_queries(dash)
    text = " ".join(q for _, q in queries)
    for what, metrics in DASHBOARD_MUST_SHOW.items():
        missing = [m for m in metrics if not re.search(rf"\b{m}\b", text)]
        if missing:
            problems.append(f"must show {what}: no query of {', '.join(missing)}")
    problems += promql_problems(promtool, queries)
    report.result("dashboard", rel(repo, path), problems,
                  f"{len(panels)} panels, {len(queries)} queries parsed by promtool")


def promql_problems(promtool: str, queries: List[Tuple[str, str]]) -> List[str]:
    """Parses each query by checking it as a recording rule."""
    rules = []
    for i, (_, expr) in enumerate(queries):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="dashboard-queries-") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        f.flush()
        code, out = run([promtool, "check", "rules", f.name])
    if code == 0:
        return []
    # Name the panel of each failing query.
    named = re.sub(r"dashboard:query_(\d+)", lambda m: queries[int(m.group(1))][0], out)
    return [f"promtool cannot parse a query:\n{named.strip()}"]


def check_monitoring(repo: Path, report: Report, promtool: str) -> None:
    check_rules(repo, report, promtool)
    check_dashboard(repo, report, promtool)
