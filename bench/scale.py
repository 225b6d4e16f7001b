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
  and DVC.

Run: `.venv/bin/python bench/scale.py [--rows 10000 100000 1000000 5000000]`. Timings,
never asserts. Each measurement runs once per size (the large sizes take minutes).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from pipeline import BIN, clone, environment, floor_repo, stage_commands, wipe_outputs  # noqa: E402
from provenance import commit, machine  # noqa: E402

PIPELINE = ("prepare", "featurize", "train", "evaluate", "package", "batches", "monitor")
MEASURE = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "r = subprocess.run(sys.argv[1:]); t = time.perf_counter() - t; "
    "print(round(t, 3), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
)
ONE_PROCESS = """
import importlib, resource, shlex, sys, time
started = time.perf_counter()
for line in sys.stdin.read().splitlines():
    module, argv = line.split(" ", 1)
    importlib.import_module(module).main(shlex.split(argv))
print(round(time.perf_counter() - started, 3), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


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


def one_process(root: Path, env: dict[str, str], commands: dict[str, str]) -> dict[str, float]:
    """The stages' `main()` one after another in one process (outputs removed first), started
    through `bin/python` as the stages are (`bench/pipeline.py: one_process_s`)."""
    lines = []
    for command in commands.values():
        words = shlex.split(command)
        assert words[:2] == ["bin/python", "-m"], command
        lines.append(f"{words[2]} {shlex.join(words[3:])}")
    done = subprocess.run(
        [str(root / "bin" / "python"), "-c", ONE_PROCESS],
        cwd=root,
        env=env,
        input="\n".join(lines),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"one process failed:\n{done.stderr[-3000:]}")
    seconds, kib = done.stdout.split()[-2:]
    return {"s": float(seconds), "peak_rss_mib": round(int(kib) / 1024)}


def size(root: Path, env: dict[str, str], floor: Path, rows: int) -> dict[str, object]:
    dvc = str(BIN / "dvc")
    set_rows(root, rows)
    commands = pipeline_commands(root)
    wipe_outputs(root, env)
    full = measured([dvc, "repro"], root, env)
    noop = min(measured([dvc, "repro"], root, env)["s"] for _ in range(3))
    stages = {name: measured(["bash", "-c", command], root, env) for name, command in commands.items()}
    wipe_outputs(root, env)
    single = one_process(root, env, commands)
    subprocess.run([dvc, "repro"], cwd=root, env=env, check=True, capture_output=True)  # outputs back in place
    split = json.loads((root / "metrics" / "data_quality.json").read_text())["rows"]
    return {
        "rows": split["train"] + split["test"],
        "full_repro": full,
        "stages": stages,
        "one_process": single,
        "full_repro_over_one_process": round(full["s"] / single["s"], 2),
        "noop_repro_s": noop,
        "noop_floor_s": min(measured([dvc, "repro"], floor, env)["s"] for _ in range(3)),
    }


def markdown(results: dict) -> str:
    host = results["machine"]
    lines = [
        f"Machine: {host['cores']} cores, {host['memory_gib']} GiB, Python {host['python']}.",
        "Seconds (peak RSS in MiB).",
        "",
        "| rows | " + " | ".join(PIPELINE) + " | full repro | one process | ratio | no-op / DVC floor |",
        "| ---: | " + " | ".join("---:" for _ in PIPELINE) + " | ---: | ---: | ---: | ---: |",
    ]
    for entry in results["sizes"]:
        cells = [f"{entry['stages'][n]['s']:.1f} ({entry['stages'][n]['peak_rss_mib']})" for n in PIPELINE]
        full, single = entry["full_repro"], entry["one_process"]
        lines.append(
            f"| {entry['rows']:,} | "
            + " | ".join(cells)
            + f" | {full['s']:.1f} ({full['peak_rss_mib']}) | {single['s']:.1f} ({single['peak_rss_mib']})"
            + f" | {entry['full_repro_over_one_process']:.2f}"
            + f" | {entry['noop_repro_s']:.2f} / {entry['noop_floor_s']:.2f} |"
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
    parser.add_argument("--out", default=str(REPO / "bench" / "scale_results"))
    args = parser.parse_args()
    results: dict = {
        "machine": machine(),
        "commit": commit(),
        "sizes": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = clone(Path(tmp))
        env = environment(root)
        subprocess.run([str(BIN / "dvc"), "repro"], cwd=root, env=env, check=True, capture_output=True)
        floor = floor_repo(root, Path(tmp))
        subprocess.run([str(BIN / "dvc"), "repro"], cwd=floor, env=env, check=True, capture_output=True)
        for rows in [0, *args.rows]:
            started = time.perf_counter()
            results["sizes"].append(size(root, env, floor, rows))
            print(f"{rows or 'default'} rows: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
            out = Path(args.out)
            out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
            out.with_suffix(".md").write_text(markdown(results))
    plot(results, Path(args.out).with_suffix(".png"))
    print(markdown(results))


if __name__ == "__main__":
    main()
