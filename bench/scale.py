"""How the pipeline's time and memory grow with rows: bench/scale_results.{json,md,png}.

For the default data and for each `--rows` size (`params.yaml: scale.rows`), in a fresh
clone, with tracking to the local SQLite store as a user runs it:
- every stage's command alone: wall time and peak RSS;
- the full `dvc repro` from scratch (outputs and cache removed): wall time and the peak
  RSS of its largest process;
- a no-op `dvc repro`, and DVC's own floor: the same stage graph whose commands only
  create their outputs (`bench/pipeline.py: floor_repo`);
- the one-process floor: every stage's `main()` called one after another in a single
  Python process, the same work as the full repro without process start-ups, re-imports
  and DVC (`bench/pipeline.py: one_process`).

The full repro and the one process are timed in `--rounds` rounds, the two one after the
other, the first of them turning each round, so that a slow phase of the machine (seen to
last minutes) weighs on both: the ratio is each round's own, then the median. The other
figures are taken once per size (the large sizes take minutes).

Run: `.venv/bin/python bench/scale.py [--rows 10000 100000 1000000 5000000] [--rounds 3]`.
Timings, never asserts. Each size records the machine and commit it measured; the sizes of
the results file that a run does not measure are kept as they were if the machine is the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from pipeline import BIN, clone, environment, floor_repo, one_process, stage_commands, wipe_outputs  # noqa: E402
from provenance import commit, machine  # noqa: E402

PIPELINE = ("prepare", "featurize", "train", "evaluate", "package", "batches", "monitor")
MEASURE = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "r = subprocess.run(sys.argv[1:]); t = time.perf_counter() - t; "
    "print(round(t, 3), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
)


def measured(args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Wall seconds and the peak RSS (MiB) of the largest process `args` started."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{args} failed:\n{done.stderr[-3000:]}")
    seconds, kib = done.stdout.split()[-2:]
    return {"s": float(seconds), "peak_rss_mib": round(int(kib) / 1024)}


def set_rows(root: Path, rows: int) -> None:
    params = root / "params.yaml"
    data = params.read_text()
    start = data.index("\n  rows: ", data.index("\nscale:")) + len("\n  rows: ")
    end = data.index(" ", start)
    params.write_text(data[:start] + str(rows) + data[end:])


def pipeline_commands(root: Path) -> dict[str, str]:
    """Every stage's command, in order (`bench/pipeline.py: stage_commands`)."""
    commands = stage_commands(root)
    assert tuple(commands) == PIPELINE, tuple(commands)
    return commands


def median_run(runs: list[dict[str, float]]) -> dict[str, object]:
    """The median of the rounds' seconds, the largest peak RSS, and every round's seconds."""
    return {
        "s": round(statistics.median(run["s"] for run in runs), 3),
        "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
        "runs_s": [run["s"] for run in runs],
    }


def size(root: Path, env: dict[str, str], floor: Path, rows: int, rounds: int, where: dict) -> dict[str, object]:
    """One size's figures; `where`: the machine and commit measured."""
    dvc = str(BIN / "dvc")
    set_rows(root, rows)
    commands = pipeline_commands(root)

    def full() -> dict[str, float]:
        wipe_outputs(root, env)
        return measured([dvc, "repro"], root, env)

    measures = {"full_repro": full, "one_process": lambda: one_process(root, env, commands)}
    runs: dict[str, list[dict[str, float]]] = {key: [] for key in measures}
    for turn in range(rounds):  # the last round ends on the full repro: its outputs and cache stay for what follows
        for key in list(measures)[:: 1 if (rounds - 1 - turn) % 2 == 0 else -1]:
            runs[key].append(measures[key]())
    subprocess.run([dvc, "repro"], cwd=root, env=env, check=True, capture_output=True)  # a no-op: all in place
    noop = min(measured([dvc, "repro"], root, env)["s"] for _ in range(3))
    stages = {name: measured(["bash", "-c", command], root, env) for name, command in commands.items()}
    split = json.loads((root / "metrics" / "data_quality.json").read_text())["rows"]
    ratios = [repro["s"] / single["s"] for repro, single in zip(runs["full_repro"], runs["one_process"])]
    return {
        "rows": split["train"] + split["test"],
        "rows_param": rows,
        **where,
        "rounds": rounds,
        "full_repro": median_run(runs["full_repro"]),
        "stages": stages,
        "one_process": median_run(runs["one_process"]),
        "full_repro_over_one_process": round(statistics.median(ratios), 2),
        "full_repro_over_one_process_rounds": [round(r, 2) for r in ratios],
        "noop_repro_s": noop,
        "noop_floor_s": min(measured([dvc, "repro"], floor, env)["s"] for _ in range(3)),
    }


def markdown(results: dict) -> str:
    host = results["machine"]
    lines = [
        f"Machine: {host['cores']} cores, {host['memory_gib']} GiB, Python {host['python']}.",
        "Seconds (peak RSS in MiB).",
        "",
        "Full repro and one process: the median of the size's rounds (peak RSS: the largest of the rounds);",
        "ratio: the median of each round's own.",
        "",
        "| rows | "
        + " | ".join(PIPELINE)
        + " | full repro | one process | ratio | rounds | no-op / DVC floor | commit |",
        "| ---: | " + " | ".join("---:" for _ in PIPELINE) + " | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for entry in results["sizes"]:
        cells = [f"{entry['stages'][n]['s']:.1f} ({entry['stages'][n]['peak_rss_mib']})" for n in PIPELINE]
        full, single = entry["full_repro"], entry["one_process"]
        lines.append(
            f"| {entry['rows']:,} | "
            + " | ".join(cells)
            + f" | {full['s']:.1f} ({full['peak_rss_mib']}) | {single['s']:.1f} ({single['peak_rss_mib']})"
            + f" | {entry['full_repro_over_one_process']:.2f}"
            + f" | {entry['rounds']}"
            + f" | {entry['noop_repro_s']:.2f} / {entry['noop_floor_s']:.2f}"
            + f" | {entry['commit']} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [entry["rows"] for entry in results["sizes"]]
    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in PIPELINE:
        time_ax.plot(rows, [e["stages"][name]["s"] for e in results["sizes"]], marker="o", label=name)
        memory_ax.plot(rows, [e["stages"][name]["peak_rss_mib"] for e in results["sizes"]], marker="o", label=name)
    time_ax.plot(rows, [e["full_repro"]["s"] for e in results["sizes"]], "k--", marker="s", label="full dvc repro")
    time_ax.plot(rows, [e["one_process"]["s"] for e in results["sizes"]], "k:", marker="^", label="one process")
    for ax, label in ((time_ax, "seconds"), (memory_ax, "peak RSS (MiB)")):
        ax.set(xscale="log", yscale="log", xlabel="rows", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    time_ax.legend(fontsize=8)
    fig.suptitle(f"reprokit pipeline by rows ({results['machine']['cores']} cores)")
    fig.tight_layout()
    fig.savefig(out, dpi=100, metadata={"Software": None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="*", default=[10_000, 100_000, 1_000_000, 5_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "scale_results"))
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    out = Path(args.out)
    earlier = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    here = machine()
    earlier_here = [entry for entry in earlier.get("sizes", []) if entry.get("machine") == here]
    where = {"machine": here, "commit": commit()}  # the clone below is taken from HEAD
    results: dict = {"machine": here, "sizes": []}
    done: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = clone(Path(tmp))
        env = environment(root)
        subprocess.run([str(BIN / "dvc"), "repro"], cwd=root, env=env, check=True, capture_output=True)
        floor = floor_repo(root, Path(tmp))
        subprocess.run([str(BIN / "dvc"), "repro"], cwd=floor, env=env, check=True, capture_output=True)
        for rows in [0, *args.rows]:
            started = time.perf_counter()
            done.append(size(root, env, floor, rows, args.rounds, where))
            remeasured = {entry["rows_param"] for entry in done}
            kept = [entry for entry in earlier_here if entry["rows_param"] not in remeasured]
            results["sizes"] = sorted(done + kept, key=lambda entry: entry["rows_param"])
            print(f"{rows or 'default'} rows: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
            out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
            out.with_suffix(".md").write_text(markdown(results))
            plot(results, out.with_suffix(".png"))
    print(markdown(results))


if __name__ == "__main__":
    main()
