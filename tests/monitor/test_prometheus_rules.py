"""The live score drift rules, checked and unit-tested by Prometheus' own `promtool` (Debian's
`prometheus` package; `.ci/run` installs it): scraped histograms shaped like the reference stay
quiet, histograms shaped like a drifted batch fire at the monitor's own PSI levels."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from commands import run

from reprokit.core.drift import psi
from reprokit.model.scoring import SCORE_BINS

PROMTOOL = shutil.which("promtool")


@pytest.fixture(scope="module")
def rules(project) -> Path:
    assert PROMTOOL, "promtool is missing: apt-get install prometheus (.ci/run does)"
    out = project / "reports/rules/prometheus-rules.yml"
    done = run(
        project,
        "reprokit.monitoring.monitor",
        "data/batches/numeric_location.parquet",
        "--rules-out",
        out,
        "--metrics-out",
        "reports/rules/monitor.json",
    )
    assert done.returncode == 0, done.stderr
    return out


def shares_of(project: Path, sample: str) -> list[float]:
    rows = json.loads((project / "reports/rules/distributions.json").read_text())
    return [r["share"] for r in rows if r["column"] == "prediction" and r["sample"] == sample]


def histogram_series(shares: list[float], per_minute: int) -> list[dict]:
    """Cumulative `reprokit_predicted_score` counters, as the service exposes them, growing by
    `per_minute` scores a minute distributed like `shares`, for two hours."""
    counts = [round(share * per_minute) for share in shares]
    series, cumulative = [], 0
    for bound, count in zip(SCORE_BINS, counts, strict=True):
        cumulative += count
        series.append(
            {
                "series": f'reprokit_predicted_score_bucket{{le="{float(bound)!r}",model_version="7"}}',
                "values": f"0+{cumulative}x120",
            }
        )
    series.append(
        {"series": 'reprokit_predicted_score_bucket{le="+Inf",model_version="7"}', "values": f"0+{cumulative}x120"}
    )
    series.append({"series": 'reprokit_predicted_score_count{model_version="7"}', "values": f"0+{cumulative}x120"})
    return series


def promtool_test(tmp_path: Path, rules: Path, series: list[dict], alerts: list[dict], psi_between=None):
    annotations = {
        rule["alert"]: rule["annotations"]
        for rule in yaml.safe_load(rules.read_text())["groups"][0]["rules"]
        if "alert" in rule
    }
    test = {"interval": "1m", "input_series": series, "alert_rule_test": [], "promql_expr_test": []}
    for name in ("ReprokitScoreDriftAlert", "ReprokitScoreDriftWarning"):
        expected = [a for a in alerts if a["exp_labels"]["alertname"] == name] if alerts else []
        test["alert_rule_test"].append(
            {
                "eval_time": "100m",
                "alertname": name,
                "exp_alerts": [
                    {"exp_labels": {"severity": a["exp_labels"]["severity"]}, "exp_annotations": annotations[name]}
                    for a in expected
                ],
            }
        )
    if psi_between:
        low, high = psi_between
        test["promql_expr_test"].append(
            {
                "expr": f"reprokit:predicted_score_psi:window > bool {low} and reprokit:predicted_score_psi:window < bool {high}",
                "eval_time": "100m",
                "exp_samples": [{"labels": "{}", "value": 1}],
            }
        )
    spec = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [test]}
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)


def test_the_rules_are_valid_prometheus_rules(rules):
    done = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 43 rules found" in done.stdout


def test_live_scores_like_the_reference_raise_no_alert(project, rules, tmp_path):
    series = histogram_series(shares_of(project, "reference"), per_minute=6000)
    done = promtool_test(tmp_path, rules, series, alerts=[], psi_between=(-0.001, 0.001))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("shape", ["numeric_location", "reversed"])
def test_live_scores_like_a_drifted_batch_fire_at_the_monitors_psi(project, rules, tmp_path, shape):
    """Scores shaped like the numeric-location batch's (the monitor's PSI between `psi_warn`
    and `psi_alert`: the warning alone) or like the reference's turned around (above
    `psi_alert`: both), and Prometheus computes the same PSI from the scraped buckets."""
    reference, current = shares_of(project, "reference"), shares_of(project, "current")
    if shape == "reversed":
        current = reference[::-1]
    expected = psi(np.array(reference), np.array(current))
    assert (0.1 <= expected < 0.25) if shape == "numeric_location" else (expected >= 0.25)
    series = histogram_series(current, per_minute=6000)
    fired = [{"exp_labels": {"alertname": "ReprokitScoreDriftWarning", "severity": "warning"}}]
    if expected >= 0.25:
        fired.append({"exp_labels": {"alertname": "ReprokitScoreDriftAlert", "severity": "critical"}})
    done = promtool_test(tmp_path, rules, series, fired, psi_between=(expected - 0.01, expected + 0.01))
    assert done.returncode == 0, done.stdout + done.stderr


def test_too_few_live_scores_raise_no_alert(project, rules, tmp_path):
    """Below `monitor.live_min_scores` (500) in the window, a drifted shape is noise."""
    series = histogram_series(shares_of(project, "current"), per_minute=6)
    done = promtool_test(tmp_path, rules, series, alerts=[])
    assert done.returncode == 0, done.stdout + done.stderr
