"""Checks of deploy/grafana/cada-gateway.json: every query uses only metrics and labels the
gateway registers (read from gateway/src/metrics/families.rs), the panels the dashboard is for
are there, and the queries parse as PromQL with promtool where it is installed."""

from __future__ import annotations

import copy
import json
import re
import subprocess

import pytest
import yaml

from .layout import DEPLOY, ROOT

DASHBOARD = DEPLOY / "grafana" / "cada-gateway.json"


@pytest.fixture
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def gateway_metrics() -> dict[str, tuple[str, set[str]]]:
    """name -> (type, label names), from the registrations in gateway/src/metrics/families.rs."""
    text = (ROOT / "gateway" / "src" / "metrics" / "families.rs").read_text()
    code = text[: text.index("#[cfg(test)]")]
    calls = {"counter(": "counter", "IntCounter::new(": "counter", "gauge(": "gauge",
             "info(": "gauge", "histogram(": "histogram", "HistogramOpts::new(": "histogram"}
    metrics = {}
    for m in re.finditer(r'"(cada_[a-z0-9_]+)"', code):
        end = code.index(")?", m.end())
        chunk = code[m.end():end]
        labels = set(re.findall(r'"([a-z_]+)"', chunk))
        before = code[max(0, m.start() - 300):m.start()]
        kind = max(calls, key=lambda c: before.rfind(c))
        metrics[m.group(1)] = (calls[kind], labels)
    return metrics


def histogram_base(name: str) -> str:
    """The metric a histogram series (_bucket, _sum, _count) belongs to; other names unchanged."""
    return re.sub(r"_(bucket|sum|count)$", "", name)


def bucket_labels(name: str) -> set[str]:
    """The label a _bucket series adds to its histogram's."""
    return {"le"} if name.endswith("_bucket") else set()


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    return out


def dashboard_problems(dashboard: dict) -> list[str]:
    metrics = gateway_metrics()
    sources = " ".join(p.read_text() for p in (ROOT / "gateway" / "src").rglob("*.rs"))
    problems = []
    if dashboard.get("schemaVersion", 0) < 36:
        problems.append("dashboard: schemaVersion must be 36 or later")
    variables = [v for v in dashboard.get("templating", {}).get("list", []) if v.get("type") == "datasource"]
    if [v.get("query") for v in variables] != ["prometheus"]:
        problems.append("dashboard: needs one Prometheus datasource variable")
    ds_var = "${%s}" % variables[0]["name"] if variables else None
    exprs = dashboard_exprs(dashboard)
    if not exprs:
        problems.append("dashboard: no queries")
    for title, expr in exprs:
        where = f"panel '{title}'"
        used = set(re.findall(r"\b(cada_[a-z0-9_]+)\b", expr))
        if not used:
            problems.append(f"{where}: queries no cada metric: {expr}")
        allowed_labels = set()
        for name in used:
            base = histogram_base(name)
            if name in metrics:
                allowed_labels |= metrics[name][1]
            elif base in metrics and metrics[base][0] == "histogram":
                allowed_labels |= metrics[base][1] | bucket_labels(name)
            else:
                problems.append(f"{where}: {name} is not a metric of gateway/src")
            if f'"{base}"' not in sources:
                problems.append(f"{where}: {base} does not appear in gateway/src")
        for name, selector in re.findall(r"\b(cada_[a-z0-9_]+)\{([^}]*)\}", expr):
            own = metrics.get(name, metrics.get(histogram_base(name), ("", set())))[1] | bucket_labels(name)
            for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", selector):
                if label not in own:
                    problems.append(f"{where}: {name} has no label '{label}'")
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in (l.strip() for l in group.split(",") if l.strip()):
                if label not in allowed_labels:
                    problems.append(f"{where}: grouping by '{label}', which {sorted(used)} do not have")
        if "histogram_quantile" in expr and "_bucket" not in expr:
            problems.append(f"{where}: histogram_quantile needs a _bucket series")
    for panel in dashboard.get("panels", []):
        if panel.get("type") != "row" and panel.get("datasource", {}).get("uid") != ds_var:
            problems.append(f"panel '{panel.get('title')}': datasource must be {ds_var}")
    joined = " ".join(e for _, e in exprs)
    for needed, why in (
        (r"histogram_quantile\(0\.\d+, sum by \([^)]*\) \(rate\(cada_request_duration_seconds_bucket", "request latency quantiles"),
        (r"cada_tokens_total", "tokens/s"),
        (r"by \(mode, verdict\)[^)]*cada_safety_decisions_total", "verdicts by label"),
        (r"cada_borderline_cases_total", "borderline rate"),
        (r'cada_feedback_total\{label="over_refusal"\}', "over-refusal feedback"),
        (r"by \(adapter\) \(cada_adapter_info\)", "served adapter version"),
        (r"count by \(adapter\) \(cada_adapter_info == 1\)", "replicas per adapter version"),
        (r'cada_cache_requests_total\{result="hit"\}', "cache hit ratio"),
        (r'status="429"', "429 rate"),
        (r'status="503"', "503 rate"),
    ):
        if not re.search(needed, joined):
            problems.append(f"dashboard: no panel for {why}")
    return problems


def test_metric_parser_reads_the_registrations():
    metrics = gateway_metrics()
    assert len(metrics) >= 20, metrics
    assert metrics["cada_requests_total"] == ("counter", {"endpoint", "status"})
    assert metrics["cada_request_duration_seconds"] == ("histogram", {"endpoint"})
    assert metrics["cada_adapter_info"] == ("gauge", {"adapter"})
    assert metrics["cada_case_store_errors_total"] == ("counter", set())


def test_dashboard_uses_only_metrics_and_labels_of_the_gateway(dashboard):
    assert dashboard_problems(dashboard) == []


def test_dashboard_checks_can_fail(dashboard):
    broken = copy.deepcopy(dashboard)
    panel = next(p for p in broken["panels"] if p.get("targets"))
    panel["targets"][0]["expr"] = 'sum by (route) (rate(cada_request_total{path="/v1"}[5m]))'
    problems = dashboard_problems(broken)
    assert any("cada_request_total is not a metric" in p for p in problems)
    assert any("'route'" in p for p in problems)
    wrong_label = copy.deepcopy(dashboard)
    panel = next(p for p in wrong_label["panels"] if p.get("targets"))
    panel["targets"][0]["expr"] = 'sum(rate(cada_feedback_total{verdict="refuse"}[5m]))'
    assert any("has no label 'verdict'" in p for p in dashboard_problems(wrong_label))


def replicas_panel_problems(dashboard: dict) -> list[str]:
    """A fleet's rollout progress: how many replicas serve each adapter version, over time."""
    panels = [p for p in dashboard.get("panels", []) if p.get("title") == "Replicas per adapter version"]
    if len(panels) != 1:
        return [f"dashboard: expected one panel 'Replicas per adapter version', found {len(panels)}"]
    (panel,) = panels
    problems = []
    exprs = [t["expr"] for t in panel.get("targets", [])]
    if exprs != ["count by (adapter) (cada_adapter_info == 1)"]:
        problems.append(f"panel 'Replicas per adapter version': unexpected queries {exprs}")
    if panel.get("type") != "timeseries" or any(t.get("instant") for t in panel.get("targets", [])):
        problems.append("panel 'Replicas per adapter version': a time series (range query), to show a rollout")
    if any("{{adapter}}" != t.get("legendFormat") for t in panel.get("targets", [])):
        problems.append("panel 'Replicas per adapter version': legend must name the adapter")
    return problems


def test_dashboard_shows_replicas_per_adapter_version(dashboard):
    assert replicas_panel_problems(dashboard) == []
    grid = [(p["gridPos"]["x"], p["gridPos"]["y"], p["gridPos"]["w"], p["gridPos"]["h"]) for p in dashboard["panels"]]
    cells = [(x + i, y + j) for x, y, w, h in grid for i in range(w) for j in range(h)]
    assert len(cells) == len(set(cells)), "panels overlap"
    assert all(x + w <= 24 for x, _, w, _ in grid)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"]), "panel ids repeat"


def test_replicas_panel_checks_can_fail(dashboard):
    gone = copy.deepcopy(dashboard)
    gone["panels"] = [p for p in gone["panels"] if p.get("title") != "Replicas per adapter version"]
    assert replicas_panel_problems(gone) == ["dashboard: expected one panel 'Replicas per adapter version', found 0"]
    assert any("replicas per adapter version" in p for p in dashboard_problems(gone))
    instant = copy.deepcopy(dashboard)
    panel = next(p for p in instant["panels"] if p.get("title") == "Replicas per adapter version")
    panel["type"] = "stat"
    panel["targets"][0]["expr"] = "max by (adapter) (cada_adapter_info)"
    assert len(replicas_panel_problems(instant)) == 2


def test_dashboard_queries_are_valid_promql(tmp_path, tool, dashboard):
    promtool = tool("promtool", "Debian package prometheus")
    rules = [{"record": f"cada:dashboard:{i}", "expr": e.replace("$__rate_interval", "5m")}
             for i, (_, e) in enumerate(dashboard_exprs(dashboard))]
    path = tmp_path / "rules.yml"

    def check() -> subprocess.CompletedProcess:
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)

    out = check()
    assert out.returncode == 0, out.stdout + out.stderr
    rules[0]["expr"] = "sum(rate(cada_tokens_total[5m])"
    assert check().returncode != 0
