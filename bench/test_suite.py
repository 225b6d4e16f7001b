"""Wall time of `make test`, alone and beside a second full run sharing the machine.

Each run happens in its own fresh clone (its own `.venv` from uv.lock), started from a
shell where nothing is activated. Writes bench/test_suite_results.json. Timings only:
the point of the concurrent run is that every test still passes under load.

    python3 bench/test_suite.py [--skip-alone]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clone(into: Path, name: str) -> Path:
    root = into / name
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True)
    return root


def start(root: Path) -> tuple[subprocess.Popen, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    log = open(root / "make-test.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(["make", "test"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT), time.monotonic()


def finish(process: subprocess.Popen, started: float, root: Path) -> dict:
    code = process.wait()
    tail = (root / "make-test.log").read_text().strip().splitlines()[-1]
    return {"exit": code, "seconds": round(time.monotonic() - started, 1), "summary": tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-alone", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench" / "test_suite_results.json"))
    args = parser.parse_args()
    results: dict = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_alone:
            root = clone(Path(tmp), "alone")
            results["alone"] = finish(*start(root), root)
        first, second = clone(Path(tmp), "first"), clone(Path(tmp), "second")
        runs = [(start(first), first), (start(second), second)]
        results["concurrent"] = [finish(*run, root) for run, root in runs]
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
