"""Commands that read a batch end on their error line, never in an abort, on every path.

Arrow reads a CSV ahead in its own threads. A thread that let go of a Python file object
while the interpreter exited took the GIL too late, and the process aborted after its error
line (`terminate called without an active exception`, exit 134): a few runs in forty on a
busy machine. The error cases run many times here, from a local path and from an HTTP URL
(a Python file object), by both commands that read batches with `reprokit.core.batchfiles`'s readers.
"""

from __future__ import annotations

import pandas as pd
import pytest
from badfiles import http_server
from commands import run

ROUNDS = 8  # x 4 cases: 32 runs of each command


@pytest.fixture(scope="module")
def bad_batches(project, tmp_path_factory):
    """An empty CSV and a `;`-separated one (the demo batch, 20 times over, so that Arrow is
    still reading ahead when the command fails on the first block)."""
    root = tmp_path_factory.mktemp("bad-batches")
    (root / "empty.csv").write_bytes(b"")
    batch = pd.read_parquet(project / "data/batches/no_drift.parquet")
    pd.concat([batch] * 20).to_csv(root / "semicolons.csv", sep=";", index=False)
    return root


def commands(name: str, batch: str) -> list[str]:
    if name == "score":
        return ["reprokit.serving.score", batch, "scores/out.parquet", "--model", "models/package"]
    return ["reprokit.monitoring.monitor", batch, "--metrics-out", "reports/clean-exit/monitor.json"]


EXPECTED = {
    "empty.csv": "cannot read it (Empty CSV file)",
    "semicolons.csv": "the file looks ';'-separated",
}


@pytest.mark.parametrize("command", ["score", "monitor"])
def test_error_cases_exit_1_with_one_line_every_time(project, bad_batches, command):
    outcomes = []
    with http_server(bad_batches) as url:
        for _ in range(ROUNDS):
            for name in EXPECTED:
                for batch in (str(bad_batches / name), f"{url}/{name}"):
                    done = run(project, *commands(command, batch))
                    outcomes.append((batch, done.returncode, done.stderr.strip().splitlines()))
    aborted = [(batch, code, lines) for batch, code, lines in outcomes if code != 1 or len(lines) != 1]
    assert not aborted, f"{len(aborted)} of {len(outcomes)} runs did not end on one error line: {aborted[:3]}"
    for batch, _, (line,) in outcomes:
        assert line.startswith(f"ERROR reprokit: {command} failed: ") and EXPECTED[batch.rsplit("/", 1)[1]] in line
    assert not (project / "scores/out.parquet").exists()
