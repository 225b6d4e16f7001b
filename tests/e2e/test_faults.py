"""Faults lose nothing, with real signals and processes: a failed stage, a stage killed while
writing, two `dvc repro` at once, a tracking server that stops answering; and the run-cache
that serves a configuration tried before."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import pytest
from commands import HANG_S
from dvcclone import cache_snapshot, ran_stages

pytestmark = pytest.mark.e2e


def git_kept_and_cached(clone) -> dict[str, str]:
    """md5 of every output dvc.lock records, and of the git-kept metrics."""
    paths = (
        list(clone.locked_outputs())
        + [f"metrics/{p.name}" for p in (clone.root / "metrics").glob("*.json")]
        + [f"metrics/plots/{p.name}" for p in (clone.root / "metrics/plots").glob("*.json")]
    )
    return clone.file_hashes(paths)


def test_reverting_a_param_is_served_from_the_run_cache(copy_of):
    clone = copy_of("run-cache")
    before = git_kept_and_cached(clone)
    clone.write_params(lambda p: p["train"]["hist_gradient_boosting"].update(learning_rate=0.1))
    assert ran_stages(clone.dvc("repro").stdout) == ["train", "evaluate", "package", "monitor"]
    clone.git("checkout", "--", "params.yaml")
    done = clone.dvc("repro")
    assert ran_stages(done.stdout) == []  # no stage command ran
    for stage in ("train", "evaluate", "package"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in done.stdout
    assert git_kept_and_cached(clone) == before
    assert clone.git("status", "--porcelain") == ""


def test_after_a_failed_stage_git_and_dvc_checkout_restore_everything(copy_of):
    clone = copy_of("failed-stage")
    before = git_kept_and_cached(clone)
    cache = cache_snapshot(clone.root)
    clone.write_params(lambda p: p["evaluate"].update(threshold="high"))
    done = clone.dvc("repro", check=False)
    assert done.returncode != 0
    assert "evaluate failed: params.yaml: evaluate.threshold: expected float, got str 'high'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (clone.root / "metrics/metrics.json").exists()  # DVC removed the outputs before running
    assert cache_snapshot(clone.root) == cache
    clone.git("checkout", "--", "params.yaml", "dvc.lock", "metrics")
    clone.dvc("checkout")
    assert git_kept_and_cached(clone) == before
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout


def watch(process: subprocess.Popen, lines: list[str]) -> threading.Thread:
    """Collect a process's stdout lines as they come."""

    def read() -> None:
        for line in process.stdout:
            lines.append(line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def start_repro(clone, *args: str) -> tuple[subprocess.Popen, list[str], threading.Thread]:
    from dvcclone import BIN

    process = subprocess.Popen(
        [str(BIN / "dvc"), "repro", *args],
        cwd=clone.root,
        env={**clone.env, "PYTHONUNBUFFERED": "1"},  # lines arrive as DVC prints them
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    return process, lines, watch(process, lines)


def stage_process(parent: int, module: str):
    """The stage command's own Python process under `dvc repro` (pid `parent`), or None."""
    import psutil

    for child in psutil.Process(parent).children(recursive=True):
        try:
            if f"reprokit.stages.{module}" in " ".join(child.cmdline()) and "python" in child.name():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def wait_for(condition, what: str, timeout: float = HANG_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_stage_killed_while_writing_is_not_done_and_reruns_to_the_locked_bytes(copy_of):
    """SIGKILL to the stage's process (as the out-of-memory killer sends it) while it writes."""
    clone = copy_of("sigkill")
    locked = clone.locked_outputs(rev="HEAD")
    process, lines, reader = start_repro(clone, "-f", "-s", "package")
    models = clone.root / "models"
    # The package is being written: its staging folder exists beside the output.
    wait_for(lambda: any(models.glob(".package.partial-*")) or process.poll() is not None, "package to write")
    stage = stage_process(process.pid, "package")
    assert stage is not None and process.poll() is None, "".join(lines)
    stage.send_signal(signal.SIGKILL)
    assert process.wait(timeout=120) != 0
    reader.join(timeout=10)
    assert "failed to reproduce 'package'" in "".join(lines)
    status = clone.dvc("status").stdout
    assert "package" in status and "Data and pipelines are up to date" not in status
    assert any(models.glob(".package.partial-*"))  # what the killed stage was writing, ignored by git
    assert clone.git("status", "--porcelain") == ""
    done = clone.dvc("repro")  # the run-cache knows this configuration: restored, byte for byte
    assert "Stage 'package' is cached - skipping run, checking out outputs" in done.stdout
    assert clone.file_hashes(locked) == locked
    done = clone.dvc("repro", "-f", "-s", "package")  # and run again, it clears what the killed run left
    assert ran_stages(done.stdout) == ["package"]
    assert clone.file_hashes(locked) == locked
    assert not any(models.glob(".package.partial-*"))


def stopped_stage(first: subprocess.Popen, lines: list[str], modules: tuple[str, ...]):
    """The first of `modules`' stage commands found running under `first`, stopped with SIGSTOP
    (one that ends between being found and being stopped: the next one found)."""
    import psutil

    while True:
        found: list = []

        def running() -> bool:
            found[:] = [p for p in (stage_process(first.pid, m) for m in modules) if p is not None]
            return bool(found) or first.poll() is not None

        wait_for(running, "a stage command")
        assert found and first.poll() is None, "".join(lines)
        try:
            found[0].send_signal(signal.SIGSTOP)
            return found[0]
        except psutil.NoSuchProcess:
            continue


def test_two_repros_at_once_the_second_stops_with_the_lock_message(copy_of):
    """While a stage command of the first repro runs, DVC has released its repository lock and
    holds that stage's inputs (read) and outputs (write): a second `dvc repro` stops at the first
    stage that would rewrite one of them (featurize, whose outputs train reads), naming the
    first, and changes nothing. The command is held still (SIGSTOP) while the second runs, so
    that the moment cannot pass on a slow or busy machine; the first then finishes to the locked
    bytes and leaves no lock behind."""
    clone = copy_of("concurrent")
    locked = clone.locked_outputs(rev="HEAD")
    first, lines, reader = start_repro(clone, "-f", "-s", "train")  # one stage is enough to hold
    try:
        stage = stopped_stage(first, lines, ("train",))
        try:
            second = clone.dvc("repro", check=False)
        finally:
            stage.send_signal(signal.SIGCONT)
        assert second.returncode != 0
        assert "is busy, it is being blocked by" in second.stderr and "dvc repro -f" in second.stderr, second.stderr
        assert "Running stage" not in second.stdout
        assert first.wait(timeout=HANG_S) == 0, "".join(lines)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    reader.join(timeout=10)
    assert ran_stages("".join(lines)) == ["train"]
    assert clone.file_hashes(locked) == locked
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout


@pytest.fixture()
def silent_server():
    """A real TCP server on 127.0.0.1 that accepts connections and never answers: a tracking
    server that hangs (or went away behind its address) mid-run."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_tracking_server_that_stops_answering_fails_the_stage_within_its_timeout(copy_of, silent_server):
    clone = copy_of("server-hangs")
    locked = clone.locked_outputs(rev="HEAD")
    clone.write_params(
        lambda p: (
            p["tracking"].update(timeout_seconds=2),
            p["train"]["hist_gradient_boosting"].update(max_iter=40),  # a new model, so a new package
        )
    )
    clone.env["MLFLOW_TRACKING_URI"] = silent_server
    cache = cache_snapshot(clone.root)
    # Without the timeout the stage would wait forever; the command's own time limit only catches that.
    done = clone.dvc("repro", check=False)
    assert done.returncode != 0
    assert ran_stages(done.stdout) == ["train", "evaluate", "package"]
    assert f"MLflow tracking store {silent_server} is unreachable or misconfigured" in done.stderr
    assert "Traceback" not in done.stderr
    assert cache.items() <= cache_snapshot(clone.root).items()  # every earlier version still cached, unchanged
    package = [p for p in locked if p.startswith("models/package/")]
    assert clone.file_hashes(package) != {p: locked[p] for p in package}  # the failed run's package is here
    # Back to the last good state: git for params and metrics, the cache for the rest. --force discards
    # the failed run's package, which was never committed to the cache.
    clone.git("checkout", "--", "params.yaml", "dvc.lock", "metrics")
    clone.dvc("checkout", "--force")
    assert clone.file_hashes(locked) == locked
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout
