"""Measure the scoring service against MLflow's, and batch scoring, into bench/serving_results.json.

Side by side in one run, same package (`models/package`, so run `make repro` first), same
payloads, with `hey` (Debian package) on loopback and bounded request counts:
the HTTP-stack floor (bench/floor_app.py: the same FastAPI + uvicorn answering a constant),
`mlflow models serve --env-manager local` and `reprokit serve` (one worker process,
and two), each alone on the machine, for single records at concurrency 1 and 8 and
100-record batches at concurrency 8.
Also: each service's start-up to ready, and `reprokit score` on a 1M-row Parquet
file (the default data resampled) at thread budgets 1 and 2: rows per second, peak RSS, the time
from launch to the first chunk written, and the whole command against scikit-learn's
`predict_proba` alone on the same rows (read, checked and transformed beforehand), same threads.

Run with `uv run python bench/serving.py` (about 5 minutes). Timings, never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from provenance import commit, machine  # noqa: E402
from servers import free_port, stop  # noqa: E402

BIN = Path(sys.executable).parent


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 180) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(url)


def hey(url: str, payload: Path, requests: int, concurrency: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "hey",
            "-n",
            str(requests),
            "-c",
            str(concurrency),
            "-m",
            "POST",
            "-T",
            "application/json",
            "-D",
            str(payload),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def pct(p: str) -> float | None:  # hey omits a percentile it has too few requests for
        found = re.search(rf"\s{p}% in ([0-9.]+) secs", out)
        return round(float(found.group(1)) * 1000, 2) if found else None

    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    return {
        "requests": requests,
        "concurrency": concurrency,
        "req_per_s": round(float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)), 1),
        "p50_ms": pct("50"),
        "p95_ms": pct("95"),
        "p99_ms": pct("99"),
        "non_200": requests - statuses.get(200, 0),  # error answers and failed connections
    }


def payloads(root: Path, package: Path) -> dict[str, Path]:
    """Single-record and 100-record `dataframe_split` bodies from the prepared test split."""
    import pandas as pd

    from reprokit.core.contract import load_contract
    from reprokit.model.scoring import signature_inputs

    contract = load_contract(REPO / "dataset.yaml")
    test = pd.read_parquet(REPO / "data/prepared/test.parquet")
    frame = signature_inputs(test, contract)
    out = {}
    for name, rows in (("single", 1), ("batch100", 100)):
        body = json.loads(frame.head(rows).to_json(orient="split", index=False))
        path = root / f"{name}.json"
        path.write_text(json.dumps({"dataframe_split": {"columns": body["columns"], "data": body["data"]}}))
        out[name] = path
    return out


def serve(kind: str, package: Path, log: Path) -> tuple[subprocess.Popen, str, float]:
    """Start one service (`mlflow`, `reprokit` or `reprokit-2`: two worker processes); return
    the process, its scoring URL and its start-up time until every worker is ready."""
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    base = f"http://127.0.0.1:{port}"
    workers = 2 if kind.endswith("-2") else 1
    if kind.startswith("floor"):
        args = [sys.executable, str(REPO / "bench" / "floor_app.py"), "--port", str(port), "--workers", str(workers)]
        ready = f"{base}/health/ready"
    elif kind == "mlflow":
        args = [str(BIN / "mlflow"), "models", "serve", "-m", str(package), "--env-manager", "local"]
        args += ["-h", "127.0.0.1", "-p", str(port)]
        ready = f"{base}/health"
    else:
        args = [
            sys.executable,
            "-m",
            "reprokit.serving.serve",
            str(package),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
        ready = f"{base}/health/ready"
    process = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    started = time.perf_counter()
    wait_ready(ready, process)
    while kind.startswith("reprokit"):  # every worker answers for itself: wait until all have loaded the model
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
            if answer.read().decode().count("reprokit_model_info{") >= workers:
                break
        time.sleep(0.05)
    return process, f"{base}/invocations", time.perf_counter() - started


def measure_services(root: Path, package: Path, quick: bool) -> dict:
    bodies = payloads(root, package)
    scale = 0.2 if quick else 1.0
    ours = [("single", 3000, 1), ("single", 6000, 8), ("batch100", 1000, 8)]
    plan = {
        "floor": ours,  # the HTTP stack answering a constant: the ceiling of any service on it
        "floor-2": ours,
        "mlflow": [("single", 500, 1), ("single", 1000, 8), ("batch100", 200, 8)],
        "reprokit": ours,
        "reprokit-2": ours,
    }
    results = {}
    for kind, runs in plan.items():
        process, url, startup = serve(kind, package, root / f"{kind}.log")
        try:
            hey(url, bodies["single"], 50, 1)  # warm-up
            figures = {"startup_to_ready_s": round(startup, 2)}
            for body, requests, concurrency in runs:
                figures[f"{body}_c{concurrency}"] = hey(url, bodies[body], max(20, int(requests * scale)), concurrency)
            results[kind] = figures
        finally:
            stop(process)
    return results


def measure_batch(root: Path, package: Path, rows: int) -> dict:
    import numpy as np

    from reprokit.core.contract import load_contract
    from reprokit.core.sources import load_source

    contract = load_contract(REPO / "dataset.yaml")
    raw = load_source(contract.source)
    picked = np.random.default_rng(0).integers(0, len(raw), rows)
    source = root / "batch.parquet"
    raw.iloc[picked].reset_index(drop=True).to_parquet(source)
    del raw
    results = {"rows": rows}
    for threads in (1, 2):
        # The time to the first chunk written counts from the launch (interpreter start-up,
        # imports and loading the model included): the wrapper only notes when it happens.
        code = (
            "import os, resource, sys, time\n"
            "import reprokit.serving.score as score\n"
            "first = []\n"
            "write = score.AtomicParquet.write\n"
            "def noted(self, table):\n"
            "    write(self, table)\n"
            "    first or first.append(time.time() - float(os.environ['BENCH_LAUNCHED']))\n"
            "score.AtomicParquet.write = noted\n"
            "score.main(sys.argv[1:])\n"
            "print('FIRST', first[0], file=sys.stderr)\n"
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        )
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                str(source),
                str(root / f"out-{threads}.parquet"),
                "--model",
                str(package),
                "--threads",
                str(threads),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env={**os.environ, "BENCH_LAUNCHED": repr(time.time())},
        )
        wall = time.perf_counter() - started
        seconds = float(re.search(r"\(([0-9.]+) s\)$", done.stderr.strip().splitlines()[-3]).group(1))
        scoring = float(re.search(r"; ([0-9.]+) s after loading the model", done.stderr).group(1))
        first = float(done.stderr.split("FIRST ")[1].split()[0])
        peak = int(done.stderr.split("PEAK ")[1].split()[0]) / 1024
        alone = predict_proba_alone(source, package, threads)
        results[f"threads_{threads}"] = {
            "wall_s": round(wall, 2),
            "command_s": round(seconds, 2),
            "scoring_s_after_model_load": round(scoring, 2),
            "first_chunk_written_s": round(first, 2),
            "predict_proba_alone_s": alone,
            "wall_ratio_to_predict_proba": round(wall / alone, 2),
            "rows_per_s_after_model_load": round(rows / scoring),
            "rows_per_s_end_to_end": round(rows / wall),
            "peak_rss_mib": round(peak),
        }
    return results


def predict_proba_alone(source: Path, package: Path, threads: int) -> float:
    """scikit-learn's `predict_proba` of the packaged model alone on the same rows, already read,
    checked and transformed, under the same thread budget, in a process of its own: the floor the
    whole command is compared with (the median of 3)."""
    code = (
        "import statistics, sys, time\n"
        "import pandas as pd\n"
        "from reprokit.core.threads import thread_budget\n"
        "from reprokit.model.scoring import check_records\n"
        "from reprokit.model.scoring_model import ScoringModel\n"
        "model = ScoringModel.load(sys.argv[2])\n"
        "frame = pd.read_parquet(sys.argv[1], columns=model.contract.feature_names)\n"
        "checked = check_records({c: frame[c] for c in frame.columns}, len(frame), model.contract)\n"
        "assert checked.ok.all()\n"
        "features, estimator = model.pipeline[:-1], model.pipeline[-1]\n"
        "seconds = []\n"
        "with thread_budget(int(sys.argv[3])):\n"
        "    transformed = features.transform(checked.inputs)\n"
        "    for _ in range(3):\n"
        "        started = time.perf_counter()\n"
        "        estimator.predict_proba(transformed)\n"
        "        seconds.append(time.perf_counter() - started)\n"
        "print(round(statistics.median(seconds), 2))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(source), str(package), str(threads)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fifth of the requests and 100k rows (a smoke run)")
    parser.add_argument("--out", default=str(REPO / "bench" / "serving_results.json"))
    parser.add_argument("--batch-only", action="store_true", help="measure batch scoring; keep the services' figures")
    args = parser.parse_args()
    if shutil.which("hey") is None:
        raise SystemExit("bench/serving.py needs `hey` (apt-get install hey)")
    package = REPO / "models" / "package"
    if not (package / "MLmodel").exists():
        raise SystemExit("models/package is missing: run `make repro` first")
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp)
        results = {
            "machine": machine(),
            "commit": commit(),
            "services": (
                json.loads(Path(args.out).read_text())["services"]
                if args.batch_only
                else measure_services(root, package, args.quick)
            ),
            "batch_scoring": measure_batch(root, package, 100_000 if args.quick else 1_000_000),
        }
    mlflow = results["services"]["mlflow"]["single_c8"]["req_per_s"]
    for kind in ("reprokit", "reprokit-2"):
        ours = results["services"][kind]["single_c8"]["req_per_s"]
        results[f"throughput_vs_mlflow_single_c8_{kind}"] = round(ours / mlflow, 1)
        if "floor" in results["services"]:  # the share of the bare HTTP stack's throughput (same workers)
            floor = results["services"][kind.replace("reprokit", "floor")]["single_c8"]["req_per_s"]
            results[f"share_of_floor_single_c8_{kind}"] = round(ours / floor, 3)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
