"""Measure the canary's cost and speed into bench/canary_results.json.

A real `mlflow server` (SQLite) holds `models/package` registered twice (versions 1 and 2:
the same model, so that only the routing differs), then, each alone on the machine:

- routing overhead: `reprokit serve models:/...@champion` (one worker) without `--canary`,
  and with `--canary canary` and version 2 at 0% (the routing alone), 5% (a first canary step)
  and 50% (an A/B test: half of each micro-batch goes to a second model call), single records
  (a random routing key each), `hey` at concurrency 1 and 8. The four services run side by
  side (each its own registered model, so each its own split) and are measured in ROUNDS
  interleaved rounds, in a shuffled order each round: a slow minute of the machine then hits
  every configuration alike. Each figure is the median over the rounds; each ratio the median
  of the rounds' ratios to the service without a canary;
- propagation: two worker processes polling every second; the time from a weight change in
  the registry to every worker serving it (each worker's `reprokit_canary_weight_percent`);
- stop: under load from 8 clients, the time from `reprokit canary --stop` (what a rollback
  does) to the last request the canary answered.

Run with `uv run python bench/canary.py` after `make repro` (about 5 minutes). Timings, never asserts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from provenance import commit, machine  # noqa: E402
from registered import NAME, register  # noqa: E402
from servers import free_port, mlflow_server, stop  # noqa: E402
from serving import hey, payloads, wait_ready  # noqa: E402

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def service(root: Path, url: str, extra: list[str], log: Path, name: str = NAME):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": url}
    args = [sys.executable, "-m", "reprokit.serving.serve", f"models:/{name}@champion", "--port", str(port), *extra]
    process = subprocess.Popen(
        args, cwd=root, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/health/ready", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode()


def weights(base: str) -> list[float]:
    """Every worker's `reprokit_canary_weight_percent` (one line per process)."""
    return [
        float(line.split()[-1])
        for line in get(f"{base}/metrics").splitlines()
        if line.startswith("reprokit_canary_weight_percent")
    ]


def until(condition, seconds: float = 120) -> float:
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > seconds:
            raise TimeoutError("condition not met")
        time.sleep(0.01)
    return time.perf_counter() - started


CONFIGURATIONS = (("no_canary", None), ("canary_0", "0"), ("canary_5", "5"), ("canary_50", "50"))
ROUNDS = 7
LOADS = ((1, 1000), (8, 3000))  # (concurrency, requests): a multiple of the concurrency (hey sends floor(n/c)*c)


def two_versions(client, name: str, first, model_id: str, versions: int) -> None:
    """Add `versions` versions of `first`'s logged model under `name`: the champion alias on
    version 1, version 2 through the gate (the same model twice, so that only the routing differs)."""
    for _ in range(versions):
        client.create_model_version(name, first.source, run_id=first.run_id, model_id=model_id)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_model_version_tag(name, "2", "gate_passed", "true")


def routing_overhead(root: Path, url: str, client, first, model_id: str, bodies: dict[str, Path]) -> dict:
    """Each configuration as its own registered model (versions 1 and 2 of the same logged
    model), its service started, then ROUNDS rounds of `hey` over all of them in a shuffled order."""
    import random
    import statistics

    from reprokit.release import registry

    bases: dict[str, str] = {}
    with contextlib.ExitStack() as services:
        for label, weight in CONFIGURATIONS:
            name = f"{NAME}-{label.replace('_', '-')}"
            client.create_registered_model(name)
            two_versions(client, name, first, model_id, versions=2)
            extra = ["--poll-seconds", "1"]
            if weight is not None:
                registry.set_canary(client, name, "2", weight, None, "bench", "overhead")
                extra = ["--canary", "canary", *extra]
            base = services.enter_context(service(root, url, extra, root / f"{label}.log", name))
            if weight is not None:
                until(lambda b=base, w=float(weight): weights(b) == [w])
            hey(f"{base}/invocations", bodies["single"], 200, 1)  # warm-up
            bases[label] = base
        order = [label for label, _ in CONFIGURATIONS]
        shuffle = random.Random(0)
        rounds: dict[str, dict[str, list[dict]]] = {label: {f"single_c{c}": [] for c, _ in LOADS} for label in order}
        for _ in range(ROUNDS):
            shuffle.shuffle(order)
            for c, n in LOADS:
                for label in order:
                    rounds[label][f"single_c{c}"].append(hey(f"{bases[label]}/invocations", bodies["single"], n, c))
    overhead: dict = {"rounds": ROUNDS}
    for label, loads in rounds.items():
        overhead[label] = {
            load: {
                "requests_per_round": runs[0]["requests"],
                "concurrency": runs[0]["concurrency"],
                **{
                    key: round(statistics.median(run[key] for run in runs), 2)
                    for key in ("req_per_s", "p50_ms", "p95_ms", "p99_ms")
                },
                "p95_ms_each_round": [run["p95_ms"] for run in runs],
                "non_200": sum(run["non_200"] for run in runs),
            }
            for load, runs in loads.items()
        }
    for label, _ in CONFIGURATIONS[1:]:
        for c, _ in LOADS:
            load = f"single_c{c}"
            base_runs, runs = rounds["no_canary"][load], rounds[label][load]
            overhead[f"{label}_p95_ratio_c{c}"] = round(
                statistics.median(r["p95_ms"] / b["p95_ms"] for r, b in zip(runs, base_runs)), 3
            )
            overhead[f"{label}_throughput_ratio_c{c}"] = round(
                statistics.median(r["req_per_s"] / b["req_per_s"] for r, b in zip(runs, base_runs)), 3
            )
    return overhead


def main() -> None:
    import mlflow

    if shutil.which("hey") is None:
        raise SystemExit("bench/canary.py needs `hey` (apt-get install hey)")
    package = REPO / "models" / "package"
    if not (package / "MLmodel").exists():
        raise SystemExit("models/package is missing: run `make repro` first")
    results: dict = {
        "machine": machine(),
        "commit": commit(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp:
        root = Path(tmp)
        shutil.copy(REPO / "params.yaml", root / "params.yaml")
        shutil.copy(REPO / "dataset.yaml", root / "dataset.yaml")
        (root / "artifacts").mkdir()
        bodies = payloads(root, package)
        with mlflow_server(f"sqlite:///{root / 'server.db'}", str(root / "artifacts"), {}, root / "mlflow.log") as url:
            register(root, url, [package])
            client = mlflow.MlflowClient(tracking_uri=url)
            first = client.get_model_version(NAME, "1")
            model_id = first.source.rsplit("/", 1)[-1]  # version 2: the same logged model
            two_versions(client, NAME, first, model_id, versions=1)  # version 1: registered above
            from reprokit.release import registry

            results["routing_overhead"] = routing_overhead(root, url, client, first, model_id, bodies)

            registry.set_canary(client, NAME, "2", "50", None, "bench", "propagation")
            extra = ["--canary", "canary", "--workers", "2", "--poll-seconds", "1"]
            with service(root, url, extra, root / "propagation.log") as base:
                until(lambda: weights(base) == [50.0, 50.0])
                seconds = []
                for weight in ("5", "25", "50", "100"):
                    registry.set_canary(client, NAME, "2", weight, None, "bench", "step")
                    seconds.append(round(until(lambda w=float(weight): weights(base) == [w, w]), 3))
                results["weight_change_to_every_worker_s"] = {"poll_seconds": 1, "steps": seconds}

                last_canary, stop_load = [0.0], threading.Event()

                def load() -> None:
                    request = json.loads(bodies["single"].read_text())
                    while not stop_load.is_set():
                        sent = urllib.request.Request(
                            f"{base}/invocations",
                            data=json.dumps(request).encode(),
                            headers={"content-type": "application/json"},
                        )
                        with urllib.request.urlopen(sent, timeout=10) as answer:
                            if answer.headers["x-model-role"] == "canary":
                                last_canary[0] = time.perf_counter()

                workers = [threading.Thread(target=load) for _ in range(8)]
                for worker in workers:
                    worker.start()
                time.sleep(3)
                stopped = time.perf_counter()
                registry.stop_canary(client, NAME, "bench", "rollback")
                until(lambda: weights(base) == [0.0, 0.0])
                time.sleep(2)  # any canary answer still in flight
                stop_load.set()
                for worker in workers:
                    worker.join(30)
                results["stop_to_last_canary_answer_s"] = {
                    "poll_seconds": 1,
                    "seconds": round(last_canary[0] - stopped, 3),
                }
    out = REPO / "bench" / "canary_results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
