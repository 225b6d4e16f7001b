"""The monitor on a partitioned batch with `--engine dask` on a real Dask cluster: every
figure, plot file and image is what the in-memory monitor writes for the same rows in one
file, byte for byte; the drifts, nulls, rejected rows, labels and the scores' sample included."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

# A partitioned dataset's rows are in its files' sorted order (`reprokit.core.batchfiles.partition_files`).
PARTS = ("day=1/part-0.parquet", "day=1/part-1.parquet", "day=2/part-2.parquet", "day=3/part-3.parquet")


def monitor(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reprokit.monitoring.monitor", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory, repo, telco_splits):
    """The contract, params (a scores' sample smaller than the batch) and the splits as files."""
    root = tmp_path_factory.mktemp("monitor")
    _, train, test, _ = telco_splits
    train.to_parquet(root / "train.parquet")
    test.to_parquet(root / "test.parquet")
    (root / "dataset.yaml").write_text((repo / "dataset.yaml").read_text())
    params = (repo / "params.yaml").read_text()
    assert "  max_score_rows: 100000 " in params
    (root / "params.yaml").write_text(params.replace("  max_score_rows: 100000 ", "  max_score_rows: 5000 "))
    return root


@pytest.fixture(scope="module")
def batch(project, telco_splits):
    """7,043 raw rows with drift (longer tenure in half of them, a category never seen),
    nulls, a row breaking the contract and labels; as one file and as four partitions (one
    of them empty)."""
    raw = telco_splits[0].copy()
    rng = np.random.default_rng(3)
    shifted = rng.random(len(raw)) < 0.5
    raw.loc[shifted, "tenure"] = np.minimum(raw.loc[shifted, "tenure"] + 12, 72)
    raw["contract"] = raw["contract"].astype(object)
    raw.loc[raw.index[rng.random(len(raw)) < 0.05], "contract"] = "Four year"
    raw.loc[raw.index[rng.random(len(raw)) < 0.1], "total_charges"] = np.nan  # nullable: scored
    raw.iloc[17, raw.columns.get_loc("contract")] = None  # a required value missing: rejected
    raw = raw.reset_index(drop=True)
    raw.to_parquet(project / "batch.parquet", index=False)
    cuts = [raw.iloc[:2500], raw.iloc[2500:2500], raw.iloc[2500:5200], raw.iloc[5200:]]
    for name, part in zip(PARTS, cuts, strict=True):
        (project / "parts" / name).parent.mkdir(parents=True, exist_ok=True)
        part.to_parquet(project / "parts" / name, index=False)
    return raw


def outputs(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_the_dask_monitor_writes_what_the_in_memory_monitor_writes(project, batch, telco_package, cluster):
    common = ["--model", telco_package, "--reference", "train.parquet", "--holdout", "test.parquet"]
    local = monitor("batch.parquet", *common, "--metrics-out", "local/monitor.json", cwd=project)
    assert local.returncode == 0, local.stderr
    on_dask = monitor(
        "parts", *common, "--engine", "dask", "--scheduler", cluster.scheduler_address,
        "--metrics-out", "dask/monitor.json", cwd=project,
    )  # fmt: skip
    assert on_dask.returncode == 0, on_dask.stderr
    figures = json.loads((project / "local" / "monitor.json").read_text())
    dask_figures = json.loads((project / "dask" / "monitor.json").read_text())
    assert (figures.pop("batch"), dask_figures.pop("batch")) == ("batch.parquet", "parts")
    # Byte for byte also because a row's probability does not depend on the rows scored with it.
    assert dask_figures == figures
    assert outputs(project / "dask") == {
        **outputs(project / "local"),
        "monitor.json": outputs(project / "dask")["monitor.json"],
    }
    # The batch is what the test says it is: a drift, a new category, nulls, a rejected row, a sample.
    assert figures["rows"] == len(batch) and figures["rejected_rows"] == 1
    assert {"tenure", "contract"} <= set(figures["drifted_columns"]) and "total_charges" in figures["missing_changed"]
    assert figures["prediction"]["scored_rows"] == 5000 and figures["labels"]["labelled_rows"] == 5000
    assert figures["features"]["tenure"]["test"] == "kolmogorov_smirnov"


def test_labels_in_some_partitions_count_as_the_same_rows_unlabelled_in_one_file(
    project, batch, telco_package, cluster
):
    """Partitions whose labels have not arrived yet (no target column) are monitored as
    their rows with empty labels in one file would be, not refused."""
    labelled, unlabelled = batch.iloc[:4000], batch.iloc[4000:].drop(columns=["churn"])
    (project / "late").mkdir()
    labelled.to_parquet(project / "late" / "a.parquet", index=False)
    unlabelled.to_parquet(project / "late" / "b.parquet", index=False)
    one = pd.concat([labelled, unlabelled.assign(churn=None)], ignore_index=True)
    one.to_parquet(project / "late.parquet", index=False)
    common = ["--model", telco_package, "--reference", "train.parquet", "--holdout", "test.parquet"]
    local = monitor("late.parquet", *common, "--metrics-out", "late_local/monitor.json", cwd=project)
    on_dask = monitor(
        "late", *common, "--engine", "dask", "--scheduler", cluster.scheduler_address,
        "--metrics-out", "late_dask/monitor.json", cwd=project,
    )  # fmt: skip
    assert local.returncode == 0 and on_dask.returncode == 0, local.stderr + on_dask.stderr
    figures = json.loads((project / "late_local" / "monitor.json").read_text())
    dask_figures = json.loads((project / "late_dask" / "monitor.json").read_text())
    figures.pop("batch"), dask_figures.pop("batch")
    assert dask_figures == figures and 0 < figures["labels"]["labelled_rows"] < figures["prediction"]["scored_rows"]


def test_the_dask_engine_needs_a_directory_and_a_scheduler(project, batch, telco_package, cluster):
    done = monitor("batch.parquet", "--engine", "dask", "--model", telco_package, cwd=project)
    assert done.returncode == 2 and "--engine dask needs --scheduler" in done.stderr
    done = monitor(
        "batch.parquet", "--engine", "dask", "--scheduler", cluster.scheduler_address, "--model", telco_package,
        "--reference", "train.parquet", "--holdout", "test.parquet", "--metrics-out", "x/monitor.json", cwd=project,
    )  # fmt: skip
    assert done.returncode == 1 and "a directory of .parquet files" in done.stderr
    assert "Traceback" not in done.stderr and not (project / "x").exists()


def test_counted_ks_equals_scipys_on_values(telco_splits):
    """The KS test and PSI from partition counts equal those from the values: ties, nulls,
    values below and above the reference, the exact test on small samples."""
    from reprokit.core.drift import NumberCounts, compare_numbers, compare_numbers_counted, reference_grid

    rng = np.random.default_rng(0)
    cases = []
    for trial in range(60):
        n1, n2 = int(rng.integers(2001, 6000)), int(rng.integers(2001, 20000))
        if trial % 3 == 0:
            ref, cur = rng.normal(0, 1, n1), rng.normal(rng.uniform(-0.2, 0.2), 1, n2)
        elif trial % 3 == 1:
            ref, cur = rng.integers(0, 30, n1).astype(float), rng.integers(-2, 32, n2).astype(float)
        else:
            ref, cur = np.round(rng.exponential(2, n1), 1), np.round(rng.exponential(2.1, n2) - 0.5, 1)
        cur[rng.random(n2) < 0.05] = np.nan
        cases.append((ref, cur))
    train = telco_splits[1]
    cases.append((train["tenure"].to_numpy(float), np.minimum(train["tenure"].to_numpy(float) + 3, 72)))
    cases.append((rng.normal(0, 1, 500), rng.normal(0.2, 1, 700)))  # small: the exact test, from the values
    for ref, cur in cases:
        grid, edges = reference_grid(ref, 10)
        parts = [NumberCounts.of(part, grid, edges) for part in np.array_split(cur, 3)]
        counted = parts[0] + parts[1] + parts[2]
        assert compare_numbers_counted(ref, counted, 10) == compare_numbers(ref, cur, 10)
    # Thousands of small partitions: the values are kept only while the exact test needs them.
    ref, cur = rng.normal(0, 1, 3000), rng.normal(0, 1, 30_000)
    grid, edges = reference_grid(ref, 10)
    counted = NumberCounts.of(cur[:10], grid, edges)
    for start in range(10, len(cur), 10):
        counted = counted + NumberCounts.of(cur[start : start + 10], grid, edges)
    assert counted.values is None and len(counted.slots[0]) <= len(grid) + 1
    assert compare_numbers_counted(ref, counted, 10) == compare_numbers(ref, cur, 10)
