"""Long commands show progress on a terminal and nowhere else: `reprokit tune`, `drift-trials`
and `score` (a file and a partitioned dataset) run under a pseudo-terminal show the work done
of the total on stderr; run with stderr piped they show none, and what they write is
byte-identical either way. `REPROKIT_PROGRESS` overrides the terminal test both ways."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from reprokit.core.artifacts import write_parquet
from reprokit.core.progress import ENV

BAR = re.compile(r"(\d+)/(\d+) \[\d\d:\d\d<\d\d:\d\d")  # tqdm: done/total [elapsed<left
COUNT = re.compile(r"(\d+)(?:\.\d+)?(?:[kM])? ?rows \[\d\d:\d\d")  # an open count: N rows [elapsed


def environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != ENV}
    return {**env, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db", **extra}


def in_terminal(cwd: Path, module: str, *args, **extra: str) -> tuple[int, str, str]:
    """`python -m MODULE ARGS` with stderr on a pseudo-terminal of 100 x 30 and stdout on a
    pipe: (exit status, stdout, what the terminal showed)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env=environment(**extra),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    shown = bytearray()
    while True:  # read as it comes, so the child never blocks on a full terminal buffer
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not data:
            break
        shown += data
    os.close(leader)
    stdout = process.stdout.read().decode()
    process.stdout.close()
    return process.wait(timeout=300), stdout, shown.decode(errors="replace")


def piped(cwd: Path, module: str, *args, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env=environment(**extra),
        capture_output=True,
        text=True,
        timeout=300,
    )


def finished_bar(shown: str) -> tuple[int, int]:
    """The last done/total a tqdm bar drew (done/total [elapsed<left)."""
    bars = BAR.findall(shown)
    assert bars, f"no progress bar in {shown!r}"
    return int(bars[-1][0]), int(bars[-1][1])


def no_progress(stderr: str) -> None:
    assert "\r" not in stderr and not BAR.search(stderr) and not COUNT.search(stderr), stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, repo, telco_splits, telco_package):
    """The repository's params (a tiny tuning grid, 2 folds, no MLflow) and contract, the
    prepared splits and a package."""
    root = tmp_path_factory.mktemp("progress")
    shutil.copy(repo / "dataset.yaml", root / "dataset.yaml")
    params = (repo / "params.yaml").read_text()
    start = params.index("\n  grid:", params.index("\ntune:")) + 1
    end = params.index("\n\n", start)
    params = params[:start] + "  grid:\n    max_iter: [10]\n" + params[end + 1 :]
    params = params.replace("  folds: 5 ", "  folds: 2 ").replace(
        "tracking:\n  enabled: true", "tracking:\n  enabled: false"
    )
    (root / "params.yaml").write_text(params)
    _, train, test, _ = telco_splits
    write_parquet(train, root / "train.parquet")
    write_parquet(test, root / "test.parquet")
    for i, part in enumerate((test.iloc[:500], test.iloc[500:1000], test.iloc[1000:])):
        write_parquet(part, root / "parts" / f"part-{i}.parquet")
    shutil.copytree(telco_package, root / "package")
    return root


def test_tune_shows_candidates_times_folds_done_on_a_terminal_only(workdir):
    tune = ("reprokit.commands.tune", "--train", "train.parquet", "--n-jobs", "1")
    status, _, shown = in_terminal(workdir, *tune, "--out", "shown.json", "--plot-out", "shown_cv.json")
    assert status == 0, shown
    assert "tune: candidates x folds" in shown and "fits" in shown
    assert finished_bar(shown) == (4, 4)  # (the current params, max_iter 10) x 2 folds
    done = piped(workdir, *tune, "--out", "piped.json", "--plot-out", "piped_cv.json")
    assert done.returncode == 0, done.stderr
    no_progress(done.stderr)
    assert (workdir / "shown.json").read_bytes() == (workdir / "piped.json").read_bytes()
    assert (workdir / "shown_cv.json").read_bytes() == (workdir / "piped_cv.json").read_bytes()


def test_drift_trials_show_trials_done_on_a_terminal_only(workdir):
    trials = ("reprokit.monitoring.drift_trials", "--sizes", "100", "200", "--trials", "3", "--model", "package",
              "--train", "train.parquet", "--test", "test.parquet")  # fmt: skip
    status, stdout, shown = in_terminal(workdir, *trials)
    assert status == 0, shown
    assert "drift trials" in shown and finished_bar(shown) == (6, 6)
    done = piped(workdir, *trials)
    assert done.returncode == 0, done.stderr
    no_progress(done.stderr)
    assert json.loads(stdout) == json.loads(done.stdout) and set(json.loads(stdout)["results"]) == {"100", "200"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--shift", "location"), "--shift 'location': expected KIND:SIZE, KIND one of location, scale"),
        (("--shift", "tilt:0.1"), "--shift 'tilt:0.1': expected KIND:SIZE"),
        (("--shift", "scale:nan"), "--shift 'scale:nan': expected KIND:SIZE"),
        (("--params", "absent.yaml"), "absent.yaml: file not found"),
        (("--train", "absent.parquet"), "absent.parquet"),
    ],
)
def test_drift_trials_bad_input_is_one_line(workdir, args, message):
    trials = ("reprokit.monitoring.drift_trials", "--sizes", "100", "--trials", "2", "--model", "package",
              "--train", "train.parquet", "--test", "test.parquet")  # fmt: skip
    done = piped(workdir, *trials, *args)
    assert done.returncode == 1 and done.stdout == "", done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("ERROR reprokit: drift-trials failed: ") and message in line, done.stderr


def test_score_shows_rows_scored_on_a_terminal_only(workdir):
    score = ("reprokit.serving.score", "test.parquet", "--model", "package", "--chunk-rows", "500")
    status, _, shown = in_terminal(workdir, *score, "shown.parquet")
    assert status == 0, shown
    counts = COUNT.findall(shown)
    assert counts and int(counts[-1]) == 1409, shown  # every row of the test split, 500 a chunk
    done = piped(workdir, *score, "piped.parquet")
    assert done.returncode == 0, done.stderr
    no_progress(done.stderr)
    assert (workdir / "shown.parquet").read_bytes() == (workdir / "piped.parquet").read_bytes()
    assert (workdir / "shown.rejects.parquet").read_bytes() == (workdir / "piped.rejects.parquet").read_bytes()


def test_a_partitioned_score_shows_partitions_done_on_a_terminal_only(workdir):
    score = ("reprokit.serving.score", "parts", "--model", "package")
    status, _, shown = in_terminal(workdir, *score, "shown_parts", "--rejects", "shown_rejects")
    assert status == 0, shown
    assert "partitions" in shown and finished_bar(shown) == (3, 3)
    assert not COUNT.search(shown)  # no count of rows inside each partition beside it
    done = piped(workdir, *score, "piped_parts", "--rejects", "piped_rejects", **{ENV: ""})
    assert done.returncode == 0, done.stderr
    no_progress(done.stderr)
    for name in ("part-0.parquet", "part-1.parquet", "part-2.parquet"):
        assert (workdir / "shown_parts" / name).read_bytes() == (workdir / "piped_parts" / name).read_bytes()


def test_progress_follows_stderr_unless_the_setting_says_otherwise(monkeypatch):
    from reprokit.core.config import ConfigError
    from reprokit.core.progress import shown

    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal, open(os.devnull, "w") as pipe:
        monkeypatch.delenv(ENV, raising=False)
        monkeypatch.setattr(sys, "stderr", terminal)
        assert shown()
        monkeypatch.setenv(ENV, "0")
        assert not shown()
        monkeypatch.setattr(sys, "stderr", pipe)
        monkeypatch.setenv(ENV, "")
        assert not shown()
        monkeypatch.setenv(ENV, "1")
        assert shown()
        monkeypatch.setenv(ENV, "yes")
        with pytest.raises(ConfigError, match=f"{ENV}='yes'"):
            shown()
    os.close(leader)


def test_mlflow_draws_its_bars_only_where_ours_show_and_only_while_a_command_runs(monkeypatch):
    """MLflow's download bars go to stderr whatever it is (`reprokit gate | cat` got them): a
    command sets MLflow's switch from our rule while it runs, then leaves the environment as it
    was (an in-process caller, a test run, keeps no trace of it); the user's own setting wins."""
    from reprokit.core.progress import MLFLOW_BARS
    from reprokit.core.running import run_stage

    seen = []
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal, open(os.devnull, "w") as pipe:
        monkeypatch.delenv(ENV, raising=False)
        monkeypatch.delenv(MLFLOW_BARS, raising=False)
        for stderr in (pipe, terminal):
            monkeypatch.setattr(sys, "stderr", stderr)
            run_stage("bars", lambda: seen.append(os.environ.get(MLFLOW_BARS)) or "done")
            assert MLFLOW_BARS not in os.environ
        monkeypatch.setenv(MLFLOW_BARS, "true")
        monkeypatch.setattr(sys, "stderr", pipe)
        run_stage("bars", lambda: seen.append(os.environ.get(MLFLOW_BARS)) or "done")
        assert os.environ[MLFLOW_BARS] == "true"
    os.close(leader)
    assert seen == ["false", "true", "true"]


def test_the_gate_counts_its_latency_samples_when_progress_is_forced_on(monkeypatch, capsys):
    import pandas as pd

    from reprokit.core.progress import progress
    from reprokit.release.gate import single_row_times_ms

    class Model:
        def predict(self, row):
            return row

    monkeypatch.setenv(ENV, "1")  # stderr is captured here, not a terminal
    with progress("gate: latency samples", total=20, unit="predictions") as done:
        times = single_row_times_ms(Model(), pd.DataFrame({"x": [1.0, 2.0]}), samples=20, n_threads=1, done=done)
    assert len(times) == 20
    drawn = capsys.readouterr().err
    assert "gate: latency samples" in drawn and finished_bar(drawn) == (20, 20)
