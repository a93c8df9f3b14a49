"""The chart's alerts and Grafana dashboard, against the real tools.

- The PrometheusRule and the dashboard ConfigMap are rendered from
  charts/selfemo (helm-python-sdk), so what is tested is what the chart ships.
- `promtool check rules` and `promtool test rules` (tests/prometheus/alerts_test.yaml:
  each alert fires and stays quiet where it should).
- The dashboard JSON type-checks against Grafana's published schema
  (`@grafana/schema` with `tsc`, installed by `make setup` under tests/grafana/),
  uses the templated Prometheus data source everywhere, and names only
  metrics our code exports.
- A real Prometheus scrapes the real kopf operator (against the kmock API
  emulator, runs driven through their phases by a scripted kubelet) and a real
  generator rollout on the tiny model; every panel query, template variable
  and alert expression is run through its HTTP API, and the chart's alerts,
  loaded as rules, fire for the runs that should trigger them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from support.kubelet import Kubelet, commit, finish_job, run_doc, runs_path
from support.prometheus import PrometheusServer, free_port, promtool

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "selfemo"
DASHBOARD = CHART / "dashboards" / "selfemo.json"
ALERT_TESTS = REPO / "tests" / "prometheus" / "alerts_test.yaml"
GRAFANA = REPO / "tests" / "grafana"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ROWS = ["Run overview", "Per-round quality", "Flywheel", "Throughput", "Health"]
ALERTS = {"SelfEmoRunFailed", "SelfEmoRunPhaseStuck", "SelfEmoChildFailuresRising", "SelfEmoNoImprovement"}
NS = "default"
MONITORING_TEMPLATES = ("prometheusrule.yaml", "dashboard-configmap.yaml")

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- the chart's monitoring objects


def render(values: dict) -> dict[str, dict]:
    """The chart's objects by kind (one object per monitoring kind)."""
    import helm_python as helm

    out = helm.Chart.load(str(CHART)).render(values, name="selfemo", namespace="monitoring")
    docs = [d for name in MONITORING_TEMPLATES for d in yaml.safe_load_all(out.get(f"selfemo/templates/{name}", "")) if d]
    return {d["kind"]: d for d in docs}


def enabled(**overrides) -> dict:
    return {"monitoring": {"prometheusRule": {"enabled": True, **overrides.get("rule", {})},
                           "dashboard": {"enabled": True, **overrides.get("dashboard", {})}}}


def write_rules(directory: Path, **rule_values) -> Path:
    """The PrometheusRule's groups as a plain Prometheus rules file, ``directory/rules.yaml``."""
    rule = render(enabled(rule=rule_values))["PrometheusRule"]
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory) -> Path:
    """The rules with the chart's default thresholds."""
    return write_rules(tmp_path_factory.mktemp("rules"))


def alert_rules(path: Path) -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"] if "alert" in r}


def test_monitoring_objects_only_when_enabled_with_their_labels():
    assert render({}) == {}
    objs = render(enabled(rule={"labels": {"release": "kps"}, "phaseStuckMinutes": 45, "childFailuresIncrease": 7,
                                "noImprovementRounds": 5},
                          dashboard={"annotations": {"grafana_folder": "ML"}}))
    rule, cm = objs["PrometheusRule"], objs["ConfigMap"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kps"  # kube-prometheus-stack's ruleSelector
    assert rule["metadata"]["labels"]["app.kubernetes.io/part-of"] == "selfemo"
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(rules) == ALERTS
    assert rules["SelfEmoRunPhaseStuck"]["for"] == "45m"
    assert rules["SelfEmoChildFailuresRising"]["expr"].endswith(">= 7")
    assert ">= 5" in rules["SelfEmoNoImprovement"]["expr"]
    assert "{{ $labels.run }}" in rules["SelfEmoRunFailed"]["annotations"]["summary"]  # Prometheus' template, not Helm's
    # The dashboard ConfigMap: found by the Grafana sidecar's label, carrying the file as is.
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "ML"}
    assert json.loads(cm["data"]["selfemo.json"]) == json.loads(DASHBOARD.read_text())


def test_promtool_checks_the_rules_and_passes_the_alert_unit_tests(rules_file: Path):
    check = promtool("check", "rules", str(rules_file))
    assert check.returncode == 0 and "SUCCESS: 4 rules found" in check.stdout, check.stdout + check.stderr
    shutil.copy(ALERT_TESTS, rules_file.parent / ALERT_TESTS.name)
    tests = promtool("test", "rules", ALERT_TESTS.name, cwd=rules_file.parent)
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout, tests.stdout + tests.stderr
    # every alert the chart ships has unit tests, and each has a case where it fires
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing = {t["alertname"] for c in cases for t in c["alert_rule_test"] if t["exp_alerts"]}
    assert firing == set(alert_rules(rules_file)) == ALERTS


@pytest.mark.parametrize("values, alert", [({"childFailuresIncrease": 4}, "SelfEmoChildFailuresRising"),
                                           ({"noImprovementRounds": 4}, "SelfEmoNoImprovement"),
                                           ({"phaseStuckMinutes": 190}, "SelfEmoRunPhaseStuck")])
def test_promtool_unit_tests_catch_a_threshold_off_by_one(tmp_path: Path, values: dict, alert: str):
    """The unit tests are not vacuous: each alert's threshold is pinned by them."""
    write_rules(tmp_path, **values)
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    tests = promtool("test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert tests.returncode != 0 and f"alertname: {alert}" in tests.stdout + tests.stderr, tests.stdout + tests.stderr


# --------------------------------------------------------------------------- the dashboard, statically


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict) -> list[dict]:
    return [p for p in dash["panels"] if p["type"] != "row"]


def panel_queries(dash: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(dash) for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(selfemo_[a-z0-9_]+)\b", expr))


def test_dashboard_rows_and_templated_prometheus_everywhere():
    dash = dashboard()
    assert [p["title"] for p in dash["panels"] if p["type"] == "row"] == ROWS
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "run"]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "run"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == DATASOURCE
    assert "$namespace" in variables["run"]["query"]["query"]
    for p in panels(dash):
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE, p["title"]
            # every selector of our metrics is narrowed to the chosen namespaces and runs
            selectors = re.findall(r"selfemo_[a-z0-9_]+(\{[^}]*\})?", t["expr"])
            assert selectors and all('namespace=~"$namespace"' in s and 'run=~"$run"' in s for s in selectors), t["expr"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def exported_metric_names() -> set[str]:
    """Every sample name the operator's collector and the generator and trainer
    exporters produce, read from the live registries (not from a list)."""
    from prometheus_client import CollectorRegistry

    from selfemo.operator.collector import RunCollector, RunRegistry
    from selfemo.status import Phase, RoundStatus, RunStatus
    from selfemo.telemetry import GeneratorMetrics, TrainerMetrics

    runs = RunRegistry()
    runs.update("ns", "r", None, RunStatus(
        phase=Phase.training, round=2, best_round=1, best_weighted_f1=50.0, phase_started_at="2025-01-01T00:00:00Z",
        rounds=[RoundStatus(round=1, eval={"mean": 50.0}, expression_consistency={"mean": 0.5}, samples_generated=8,
                            samples_kept=2, mean_reward=0.5, durations={"Generating": 1.0})]))
    operator = CollectorRegistry()
    operator.register(RunCollector(runs))
    gen, trainer = GeneratorMetrics(), TrainerMetrics()
    gen.prompts.labels(task="recognition").inc()
    trainer.steps.labels(phase="grpo").inc()
    trainer.loss.labels(phase="grpo").set(1.0)
    return {s.name for reg in (operator, gen.registry, trainer.registry) for m in reg.collect() for s in m.samples}


def test_every_metric_in_panels_and_alerts_is_exported(rules_file: Path):
    exported = exported_metric_names()
    used = {name: where for where, expr in panel_queries(dashboard()) for name in metric_names(expr)}
    used |= {name: alert for alert, expr in alert_rules(rules_file).items() for name in metric_names(expr)}
    assert used, "no metric found in the dashboard or the alerts"
    unknown = {name: where for name, where in used.items() if name not in exported}
    assert not unknown, f"not exported by operator/collector.py or selfemo/telemetry.py: {unknown}"
    # what the issue asks for is on the dashboard
    wanted = {"selfemo_run_phase", "selfemo_run_round", "selfemo_run_best_weighted_f1", "selfemo_round_weighted_f1",
              "selfemo_round_expression_consistency", "selfemo_flywheel_samples", "selfemo_flywheel_mean_reward",
              "selfemo_generator_tokens_total", "selfemo_trainer_samples_total", "selfemo_trainer_loss", "selfemo_trainer_kl",
              "selfemo_child_failures_total", "selfemo_reconcile_errors_total", "selfemo_phase_duration_seconds"}
    assert wanted <= {n for _, expr in panel_queries(dashboard()) for n in metric_names(expr)}


# Panel plugin → the option types @grafana/schema publishes for it.
PANEL_OPTIONS = {"stat": "stat/panelcfg/x/StatPanelCfg_types.gen", "timeseries": "timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen",
                 "barchart": "barchart/panelcfg/x/BarChartPanelCfg_types.gen", "bargauge": "bargauge/panelcfg/x/BarGaugePanelCfg_types.gen"}


def typescript_check(dash: dict, workdir: Path) -> subprocess.CompletedProcess:
    """tsc over the dashboard as a typed literal: `Dashboard` from @grafana/schema
    (object literals get excess-property checks, so a misspelt field fails) and
    each panel's options as its plugin's `Partial<Options>`."""
    tsc = GRAFANA / "node_modules" / "typescript" / "bin" / "tsc"
    assert tsc.is_file(), "tests/grafana/node_modules missing: run `make setup` (npm ci in tests/grafana)"
    lines = ['import type { Dashboard } from "@grafana/schema";',
             "// JSON holds an enum's value, not the enum: check against the values (`${E}`), all else as is.",
             "type Json<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T",
             "  : T extends ReadonlyArray<infer U> ? Array<Json<U>> : T extends object ? { [K in keyof T]: Json<T[K]> } : T;"]
    for i, kind in enumerate(PANEL_OPTIONS):
        lines.append(f'import type {{ Options as Options{i} }} from "@grafana/schema/dist/esm/raw/composable/{PANEL_OPTIONS[kind]}";')
    lines.append(f"export const dashboard: Json<Dashboard> = {json.dumps(dash, indent=1)};")
    kinds = list(PANEL_OPTIONS)
    for n, p in enumerate(panels(dash)):
        assert p["type"] in PANEL_OPTIONS, f"panel type {p['type']}: add its options type to PANEL_OPTIONS"
        lines.append(f"export const options{n}: Partial<Json<Options{kinds.index(p['type'])}>> = {json.dumps(p.get('options', {}))};")
    (workdir / "dashboard.check.ts").write_text("\n".join(lines) + "\n")
    shutil.copy(GRAFANA / "tsconfig.json", workdir / "tsconfig.json")
    link = workdir / "node_modules"
    if not link.exists():
        link.symlink_to(GRAFANA / "node_modules")
    return subprocess.run(["node", str(tsc), "-p", str(workdir / "tsconfig.json")], capture_output=True, text=True, timeout=300)


def test_dashboard_type_checks_against_grafana_schema(tmp_path: Path):
    ok = typescript_check(dashboard(), tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # The check bites: a misspelt panel field and a wrong option value are errors.
    broken = dashboard()
    broken["panels"][1]["gridpos"] = broken["panels"][1].pop("gridPos")
    panels(broken)[0]["options"]["textMode"] = "names"
    bad = typescript_check(broken, tmp_path)
    assert bad.returncode != 0 and "gridpos" in bad.stdout and "names" in bad.stdout, bad.stdout + bad.stderr
