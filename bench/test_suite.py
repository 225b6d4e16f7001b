"""Wall time of `make test`, alone and beside the landing check sharing the machine.

Each run happens in its own fresh clone (its own `.venv` from uv.lock, made by the run and
timed with it), started from a shell where nothing is activated. The pair is the landing
check, `CI=true bash .ci/run`, beside `make test`. Writes bench/test_suite_results.json
(the machine; each run's command, its own wall time, the CPU time of the run and of the
descendants it waited for (DVC's detached queue workers are not among them), the whole
machine's CPU time while the runs ran (/proc/stat: also what the runs started and never
waited for, such as servers stopped by a signal), the Python its tests ran under, pytest's
summary, the tests that failed and the tests' seconds by folder, from a JUnit report) and
keeps each run's log and report in --logs. Timings only: the point
of the concurrent run is that every test still passes under load.

    python3 bench/test_suite.py [--skip-alone | --skip-pair]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

from provenance import commit as head
from provenance import machine

REPO = Path(__file__).resolve().parents[1]


def clone(into: Path, name: str) -> Path:
    root = into / name
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True)
    return root


MAKE_TEST = ["make", "test"]
CI_RUN = ["bash", ".ci/run"]  # with CI=true, as the landing check runs it


def start(root: Path, command: list[str]) -> tuple[subprocess.Popen, float]:
    drop = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "CI")  # each clone makes its own .venv
    env = {k: v for k, v in os.environ.items() if k not in drop}
    # Each test's seconds, beside the log (after any options of the user's own).
    env["PYTEST_ADDOPTS"] = f"{env.get('PYTEST_ADDOPTS', '')} --junitxml={shlex.quote(str(root / 'junit.xml'))}".strip()
    if command == CI_RUN:
        env["CI"] = "true"
    log = open(root / "run.log", "w")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, time.monotonic()


def machine_cpu() -> tuple[float, float] | None:
    """Seconds every core of this machine has spent busy and in all since boot (the first line of
    /proc/stat; waiting on the disk counts as idle), or None where there is no /proc/stat."""
    try:
        fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle, iowait; the guest columns are counted in user and nice already
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


def machine_share(before: tuple[float, float] | None) -> dict:
    """The machine's CPU since `before` (`machine_cpu`): busy CPU-seconds and the busy share of
    all cores. It holds whatever else ran meanwhile: measure on a machine left quiet."""
    after = machine_cpu()
    if before is None or after is None:
        return {}
    busy, total = after[0] - before[0], after[1] - before[1]
    return {"machine_cpu_seconds": round(busy), "machine_busy_share": round(busy / total, 3) if total else None}


def finish(runs: list[tuple[subprocess.Popen, float, Path]], logs: Path) -> list[dict]:
    """Each run's exit, its own wall time (taken when it is reaped, whichever ends first) and CPU
    time (wait4: the run and the descendants it waited for), pytest's summary line and every test
    that failed or errored; each whole log is kept in `logs` (the clones are removed)."""
    ended: dict[int, tuple[float, int, float]] = {}
    while len(ended) < len(runs):
        for process, _, _ in runs:
            if process.pid not in ended:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    ended[pid] = (time.monotonic(), status, usage.ru_utime + usage.ru_stime)
        time.sleep(1)
    results = []
    for process, started, root in runs:
        at, status, cpu = ended[process.pid]
        process.returncode = os.waitstatus_to_exitcode(status)
        text = (root / "run.log").read_text()
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{root.name}.log").write_text(text)
        lines = text.strip().splitlines()
        summary = next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed)", line)), lines[-1])
        junit = root / "junit.xml"
        if junit.exists():
            shutil.copyfile(junit, logs / f"{root.name}.xml")
        results.append(
            {
                "what": " ".join(["CI=true", *process.args] if process.args == CI_RUN else process.args),
                "exit": process.returncode,
                "seconds": round(at - started, 1),
                "cpu_seconds": round(cpu),
                "tests_python": tests_python(root),
                "summary": summary.strip("= "),
                "failed": [line for line in lines if line.startswith(("FAILED ", "ERROR "))],
                **(seconds_by_folder(junit) if junit.exists() else {}),
            }
        )
    return results


def tests_python(root: Path) -> str | None:
    """The version of the Python the run's tests ran under (its venv's, which uv chose; `machine`
    records the one that drives this bench), or None when the run made no venv."""
    venv = root / ".venv" / "bin" / "python"
    if not venv.exists():
        return None
    done = subprocess.run(
        [str(venv), "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True
    )
    return done.stdout.strip() or None


def seconds_by_folder(junit: Path) -> dict:
    """The tests' own seconds (setup, call and teardown; the parallel processes' summed), in
    total and by folder under tests/, from pytest's JUnit report (a file that could not be
    collected, or pytest's internal error, has no folder: `other`)."""
    by_folder: Counter[str] = Counter()
    for case in ElementTree.parse(junit).iter("testcase"):
        parts = case.get("classname", "").split(".")
        by_folder[parts[1] if len(parts) > 2 else "other"] += float(case.get("time", 0))
    return {
        "test_seconds_total": round(sum(by_folder.values())),
        "test_seconds_by_folder": {name: round(seconds) for name, seconds in by_folder.most_common()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--skip-alone", action="store_true", help="measure only the pair (about 70 minutes)")
    which.add_argument("--skip-pair", action="store_true", help="measure only make test alone (about 24 minutes)")
    parser.add_argument("--out", default=str(REPO / "bench" / "test_suite_results.json"))
    parser.add_argument("--logs", default=str(Path(tempfile.gettempdir()) / "reprokit-test-suite-logs"))
    args = parser.parse_args()
    logs, out = Path(args.logs), Path(args.out)
    # The file's other entries (`by_file`, `ci`: recorded by hand from other runs) stay.
    results: dict = json.loads(out.read_text()) if out.exists() else {}
    for old in ("cpus", "memory_gib"):  # what the file held before `machine`
        results.pop(old, None)
    results["machine"] = machine()
    commit = head()
    how = "in a fresh clone from a shell where nothing is activated, its venv made and timed with it"
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_alone:
            root = clone(Path(tmp), "alone")
            before = machine_cpu()
            (alone,) = finish([(*start(root, MAKE_TEST), root)], logs)
            results["alone"] = {"commit": commit, "how": how, **alone, **machine_share(before)}
        if not args.skip_pair:
            first, second = clone(Path(tmp), "first"), clone(Path(tmp), "second")
            before = machine_cpu()
            runs = [(*start(first, CI_RUN), first), (*start(second, MAKE_TEST), second)]
            how = f"two runs started together, each {how}"
            pair = finish(runs, logs)
            shared = machine_share(before)  # the two runs' together, until the later one ended
            results["concurrent"] = [{"commit": commit, "how": how, **run, **shared} for run in pair]
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
