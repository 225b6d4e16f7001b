"""The monitor stage with the real `dvc` CLI: point it at another batch in params.yaml, only
the monitor re-runs, `dvc metrics diff` shows the drift, and enforce mode stops the pipeline."""

from __future__ import annotations

import json

import pytest

from dvcclone import ran_stages

pytestmark = pytest.mark.e2e


def test_a_new_batch_reruns_only_the_monitor_and_the_diff_shows_the_drift(copy_of):
    clone = copy_of("monitor-batch")
    assert json.loads((clone.root / "metrics/monitor.json").read_text())["verdict"] == "ok"
    clone.write_params(lambda p: p["monitor"].update(batch="data/batches/numeric_location.parquet"))
    done = clone.dvc("repro")
    assert ran_stages(done.stdout) == ["monitor"]
    diff = clone.dvc("metrics", "diff", "--json").stdout
    changed = json.loads(diff)["metrics/monitor.json"]
    assert changed["level"] == {"old": 0, "new": 2, "diff": 2}
    assert changed["features.tenure.psi"]["new"] > 0.25
    images = sorted(p.name for p in (clone.root / "metrics/monitor_images").iterdir())
    assert images == ["monthly_charges.png", "prediction.png", "tenure.png", "total_charges.png"]
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout


def test_enforce_mode_stops_the_pipeline_on_an_alert(copy_of):
    clone = copy_of("monitor-enforce")
    clone.write_params(lambda p: p["monitor"].update(batch="data/batches/concept_shift.parquet", enforce=True))
    done = clone.dvc("repro", check=False)
    assert done.returncode != 0 and ran_stages(done.stdout) == ["monitor"]
    assert "alert" in done.stderr and "enforced" in done.stderr and "Traceback" not in done.stderr
    assert "monitor" in clone.dvc("status").stdout  # not recorded in dvc.lock
