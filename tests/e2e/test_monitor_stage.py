"""The monitor stage with the real `dvc` CLI: point it at another batch in params.yaml, only
the monitor re-runs, `dvc metrics diff` shows the drift, and enforce mode stops the pipeline."""

from __future__ import annotations

import json

import pytest
from dvcclone import ran_stages
from hostile import ORDINARY

pytestmark = pytest.mark.e2e


def test_a_new_batch_reruns_only_the_monitor_and_the_diff_shows_the_drift(copy_of):
    clone = copy_of("monitor-batch")
    assert json.loads((clone.root / "metrics/monitor.json").read_text())["verdict"] == "ok"
    clone.write_params(lambda p: p["monitor"].update(batch="data/batches/numeric_location.parquet"))
    done = clone.dvc("repro")
    assert ran_stages(done.stdout) == ["monitor"]
    # detail, not a headline metric: its own target (`dvc metrics show` keeps to metrics.json)
    assert "metrics/monitor.json" not in json.loads(clone.dvc("metrics", "show", "--json").stdout)[""]["data"]
    diff = clone.dvc("metrics", "diff", "--json", "--targets", "metrics/monitor.json").stdout
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


# The most hostile names of the corpus: each runs exactly as a name, through the real `dvc repro`.
HOSTILE = [name for name in ORDINARY if any(ch in name for ch in '$`"é')]


def test_a_batch_name_with_shell_syntax_runs_nothing_and_is_checked_exactly(copy_of):
    """`monitor.batch` used to be spliced into the stage's shell line: a name with `$(...)`, `;` or
    backticks ran commands on every `dvc repro`. The stage now reads it from params."""
    import pandas as pd

    from reprokit.monitoring.retrain import set_batch

    clone = copy_of("monitor-hostile")
    batch = pd.read_parquet(clone.root / "data/batches/no_drift.parquet")
    for name in HOSTILE:
        path = clone.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        batch.to_csv(path, index=False) if name.endswith(".csv") else batch.to_parquet(path)
        params = clone.root / "params.yaml"
        params.write_text(set_batch(params.read_text(), name))
        done = clone.dvc("repro")
        assert ran_stages(done.stdout) == ["monitor"], name
        figures = json.loads((clone.root / "metrics/monitor.json").read_text())
        assert figures["batch"] == name and figures["rows"] == len(batch) and figures["verdict"] == "ok"
        assert name in [dep["path"] for dep in clone.lock()["stages"]["monitor"]["deps"]]  # DVC tracks the file
    assert not list(clone.root.rglob("PWNED*")) and not list(clone.root.parent.rglob("PWNED*"))


def test_a_batch_that_is_no_plain_path_stops_the_stage_with_one_line(copy_of):
    """A newline in monitor.batch (written into params.yaml by hand): DVC finds no such dep, and
    the stage's own command, run as dvc.yaml gives it, refuses the value in one line."""
    import shlex

    import yaml

    clone = copy_of("monitor-refused")
    clone.write_params(lambda p: p["monitor"].update(batch="data/batches/no_drift.parquet\n; touch PWNED"))
    done = clone.dvc("repro", check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    command = yaml.safe_load((clone.root / "dvc.yaml").read_text())["stages"]["monitor"]["cmd"]
    done = clone.run(*shlex.split(command), check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "params.yaml: monitor.batch: " in done.stderr and "control character" in done.stderr
    assert not list(clone.root.rglob("PWNED*"))
