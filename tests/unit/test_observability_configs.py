"""configs/prometheus and configs/grafana: promtool accepts the config and the rules, the rules' unit tests pass, and
the dashboard and alerts read only metrics that exist (the filter's SPECS, Ray Serve's and Ray's own).

The promtool checks fail, never skip, without promtool: `make prometheus` installs it (`make test` runs that first).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from safepath.metrics import SPECS

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "configs" / "prometheus"
DASHBOARD = ROOT / "configs" / "grafana" / "safepath.json"
RAY_SD_FILE = "/tmp/ray/prom_metrics_service_discovery.json"
RAY_ROOT = Path(importlib.util.find_spec("ray").origin).parent  # read, not imported: importing ray is slow

# Metrics from outside the filter that the configs read: where each is defined, as the text that defines it.
# Ray exports its own metrics as `ray_<name>` with `_total` on counters; prometheus-client's process collector
# provides process_* in library mode.
EXTERNAL_METRICS = {
    "ray_serve_num_http_requests_total": ("serve/_private/request_ingress_metrics.py",
                                          'f"serve_num_{protocol_name}_requests"'),
    "ray_serve_num_http_error_requests_total": ("serve/_private/request_ingress_metrics.py",
                                                'f"serve_num_{protocol_name}_error_requests"'),
    "ray_serve_deployment_replica_healthy": ("serve/_private/deployment_state.py",
                                             '"serve_deployment_replica_healthy"'),
    "ray_component_rss_mb": ("dashboard/modules/reporter/reporter_agent.py", '"component_rss_mb"'),
    "process_resident_memory_bytes": None,
}

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not on the PATH: run `make prometheus` (Debian's prometheus package ships it; "
                    "`make test` runs that target first)")
    return subprocess.run([binary, *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=120)


def spec_metric_names() -> set[str]:
    names: set[str] = set()
    for spec in SPECS.values():
        if spec.kind == "counter":
            names.add(f"{spec.name}_total")
        elif spec.kind == "histogram":
            names.update(f"{spec.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        else:
            names.add(spec.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords, label names or values)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals: label values, regexes
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\{?\w+\}?", "5m", expr)  # Grafana variables ($__rate_interval)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations
    names = set()
    for match in re.finditer(r"(?<![\w$.])[a-zA-Z_:][\w:]*", expr):
        rest = expr[match.end():].lstrip()
        if not rest.startswith("(") and match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            panels.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
        else:
            panels.append(panel)
    return panels


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", []) if target.get("expr")]


# --- promtool


def test_promtool_checks_alert_rules():
    result = promtool("check", "rules", "--lint=all", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_rule_unit_tests_pass():
    result = promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_unit_tests_cover_each_rule_firing_and_quiet():
    cases = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fires, quiet = set(), set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names == fires == quiet


def test_promtool_checks_prometheus_config(tmp_path):
    # Ray writes the service-discovery file only on a running head node: check a copy of the config that points at
    # a file in Ray's format, so that promtool has nothing to warn about.
    text = (PROMETHEUS / "prometheus.yml").read_text()
    assert RAY_SD_FILE in text
    sd_file = tmp_path / "prom_metrics_service_discovery.json"
    sd_file.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": ["127.0.0.1:8080"]}]))
    (tmp_path / "prometheus.yml").write_text(text.replace(RAY_SD_FILE, str(sd_file)))
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert "SUCCESS: 1 rule files found" in output


def test_ray_discovery_file_name_matches_ray():
    constants = (RAY_ROOT / "_private" / "ray_constants.py").read_text()
    assert f'PROMETHEUS_SERVICE_DISCOVERY_FILE = "{Path(RAY_SD_FILE).name}"' in constants
    shipped = (RAY_ROOT / "dashboard" / "modules" / "metrics" / "export" / "prometheus" / "prometheus.yml").read_text()
    assert RAY_SD_FILE in shipped  # Ray's own Prometheus config reads the same file


def test_prometheus_config_strips_ray_prefix_and_loads_alerts():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "ray"]
    assert job["file_sd_configs"] == [{"files": [RAY_SD_FILE]}]
    (relabel,) = job["metric_relabel_configs"]
    pattern = re.compile(f"^(?:{relabel['regex']})$")  # Prometheus anchors relabel regexes
    match = pattern.match("ray_safepath_requests_total")
    assert match and match.expand(relabel["replacement"].replace("$1", r"\1")) == "safepath_requests_total"
    assert relabel["target_label"] == "__name__" and relabel["source_labels"] == ["__name__"]
    assert not pattern.match("ray_serve_num_http_requests_total") and not pattern.match("ray_component_rss_mb")


def test_dashboard_exprs_parse(tmp_path):
    # promtool has no PromQL checker of its own: load the dashboard's queries as recording rules.
    exprs = [expr.replace("$__rate_interval", "5m") for expr in dashboard_exprs()]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(tmp_path / "dashboard_rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


# --- dashboard and metric names


def test_dashboard_shape():
    dash = dashboard()
    assert dash["uid"] == "safepath"
    assert dash["schemaVersion"] >= 36
    variables = {var["name"]: var for var in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = dashboard_panels()
    assert len(panels) >= 15
    ids = [panel["id"] for panel in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel.get("title")
        assert [t for t in panel.get("targets", []) if t.get("expr", "").strip()], f"{panel['title']}: no query"
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_metric_name_extraction():
    assert metric_names('sum by (le) (rate(safepath_request_latency_seconds_bucket{profile="x"}[$__rate_interval]))'
                        ' / on (le) group_left (stage) foo_total > 0.06') == {
        "safepath_request_latency_seconds_bucket", "foo_total"}
    assert metric_names('deriv(ray_component_rss_mb{Component=~"ray::ServeReplica:safepath:.*"}[1h]) * 3600 > 10'
                        ' or process_resident_memory_bytes / 1e6') == {"ray_component_rss_mb",
                                                                      "process_resident_memory_bytes"}


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_configs_read_only_metrics_that_exist(source):
    exprs = dashboard_exprs() if source == "dashboard" else [rule["expr"] for rule in alert_rules()]
    known = spec_metric_names() | set(EXTERNAL_METRICS)
    used = set().union(*(metric_names(expr) for expr in exprs))
    assert used, source
    assert used <= known, f"{source} reads unknown metrics: {sorted(used - known)}"


def test_external_metrics_exist_in_installed_packages():
    for name, where in EXTERNAL_METRICS.items():
        if where is None:
            continue
        path, definition = where
        assert definition in (RAY_ROOT / path).read_text(), f"{name}: {definition} not in ray/{path}"
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    assert registry.get_sample_value("process_resident_memory_bytes") is not None


def test_every_spec_metric_on_the_dashboard():
    used = set().union(*(metric_names(expr) for expr in dashboard_exprs()))
    for spec in SPECS.values():
        exposed = {"counter": {f"{spec.name}_total"}, "gauge": {spec.name},
                   "histogram": {f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count"}}[spec.kind]
        assert exposed & used, f"{spec.name} is on no dashboard panel"
