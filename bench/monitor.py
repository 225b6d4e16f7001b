"""Measure the drift monitor into bench/monitor_results.json: false-alarm rate per batch size,
detection power per kind of shift and size (the smallest shift caught in 90% of trials),
and time and peak RSS of `reprokit monitor` on a 1M-row batch.

Run from the repository after `dvc repro`: `.venv/bin/python bench/monitor.py [--quick]`.
Trials: `reprokit.monitoring.drift_trials` (a reference and a batch drawn from one pool of rows).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import commit, machine

REPO = Path(__file__).resolve().parent.parent
LADDERS = {
    "location": [0.02, 0.05, 0.1, 0.2, 0.4],  # standard deviations
    "scale": [1.05, 1.1, 1.2, 1.4, 1.8],  # spread factor
    "category": [0.02, 0.05, 0.1, 0.2, 0.4],  # share of rows set to the rarest category
    "nulls": [0.02, 0.05, 0.1, 0.2, 0.4],  # share of rows nulled
}


def false_alarms(model, pop, params, sizes: list[int], trials: int) -> dict:
    from reprokit.monitoring.drift_trials import run

    out = {}
    for n in sizes:
        started = time.perf_counter()
        result = run(model, pop, [n], trials, params)[str(n)]
        out[str(n)] = result | {"seconds": round(time.perf_counter() - started, 1)}
        print(f"false alarms at {n} rows: {result}", file=sys.stderr)
    return out


def power(model, pop, params, sizes: list[int], trials: int) -> dict:
    from reprokit.monitoring.drift_trials import run

    out: dict = {}
    for kind, ladder in LADDERS.items():
        out[kind] = {}
        for n in sizes:
            rates = {}
            for size in ladder:
                rates[str(size)] = run(model, pop, [n], trials, params, shift=(kind, size), first_seed=10_000)[str(n)][
                    "rate"
                ]
            caught = [float(size) for size, rate in rates.items() if rate >= 0.9]
            out[kind][str(n)] = {"detection_rate": rates, "smallest_caught_in_90_percent": min(caught, default=None)}
            print(f"power {kind} at {n} rows: {rates}", file=sys.stderr)
    return out


def monitor_1m(rows: int) -> dict:
    import numpy as np
    import pandas as pd

    batch = pd.read_parquet(REPO / "data/batches/no_drift.parquet")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batch.parquet"
        batch.iloc[np.random.default_rng(0).integers(0, len(batch), rows)].reset_index(drop=True).to_parquet(
            path, index=False
        )
        del batch
        runs = []
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "reprokit.monitoring.monitor",
                    str(path),
                    "--metrics-out",
                    f"{tmp}/out/monitor.json",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            wall = time.perf_counter() - started
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            inside = float(re.search(r"\(([0-9.]+) s\)$", done.stderr.strip().splitlines()[-1]).group(1))
            runs.append(
                {
                    "wall_s": round(wall, 2),
                    "command_s": inside,
                    "peak_rss_mib_max_so_far": round(max(peak, before) / 1024),
                }
            )
    return {
        "rows": rows,
        "runs": runs,
        "best_wall_s": min(r["wall_s"] for r in runs),
        "peak_rss_mib": runs[-1]["peak_rss_mib_max_so_far"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few trials, small sizes: a smoke run")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    os.chdir(REPO)
    import pandas as pd

    from reprokit.core.config import load_section
    from reprokit.core.threads import thread_budget
    from reprokit.model.loading import load_model
    from reprokit.monitoring.drift_trials import population

    params = load_section("monitor")
    train, test = pd.read_parquet("data/prepared/train.parquet"), pd.read_parquet("data/prepared/test.parquet")
    with thread_budget(load_section("base").n_threads):
        model = load_model("models/package")
        pop = population(model, [train, test], len(train))
        sizes = [500, 5_000] if args.quick else [500, 5_000, 50_000, 1_000_000]
        results = {
            "machine": machine(),
            "commit": commit(),
            "settings": {"alpha": params.alpha, "correction": params.correction, "psi_warn": params.psi_warn},
            "false_alarms": false_alarms(model, pop, params, sizes, 20 if args.quick else 200),
            "power": power(
                model, pop, params, [500, 5_000] if args.quick else [500, 5_000, 50_000], 4 if args.quick else 20
            ),
        }
    results["monitor_command"] = monitor_1m(100_000 if args.quick else 1_000_000)
    out = REPO / "bench" / ("monitor_results.quick.json" if args.quick else "monitor_results.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
