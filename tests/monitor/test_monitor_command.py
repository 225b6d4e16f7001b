"""`python -m reprokit.stages.batches` and `python -m reprokit.monitoring.monitor BATCH` as a user runs them, on
the real data, in a project folder of their own; the webhook against a real HTTP server."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from commands import run

from reprokit.core.errors import StageError
from reprokit.monitoring.alerts import post_verdict

NUMERIC = ["tenure", "monthly_charges", "total_charges"]


def monitor(
    project: Path, batch: str, *args, env=None, out: str | None = None
) -> tuple[dict, subprocess.CompletedProcess]:
    out = out or f"reports/monitor/{Path(batch).name.split('.')[0]}"
    done = run(project, "reprokit.monitoring.monitor", batch, "--metrics-out", f"{out}/monitor.json", *args, env=env)
    path = project / out / "monitor.json"
    return (json.loads(path.read_text()) if path.exists() else {}), done


def test_the_held_out_batch_raises_no_alarm(project):
    figures, done = monitor(project, "data/batches/no_drift.parquet")
    assert done.returncode == 0, done.stderr
    assert figures["verdict"] == "ok" and figures["drifted_columns"] == [] and figures["rows"] == 1409
    assert figures["labels"]["auc_drop"] == 0.0  # the held-out split is the AUC's reference
    assert "no_drift.parquet: ok" in done.stderr


@pytest.mark.parametrize(
    "kind, drifted, missing",
    [
        ("numeric_location", NUMERIC, []),
        ("numeric_scale", NUMERIC, []),
        ("category_share", ["multiple_lines"], []),
        ("new_category", ["multiple_lines"], []),
        ("more_nulls", [], ["total_charges"]),
    ],
)
def test_every_shifted_demo_batch_is_caught_in_the_right_columns(project, kind, drifted, missing):
    figures, done = monitor(project, f"data/batches/{kind}.parquet")
    assert done.returncode == 0, done.stderr
    assert figures["verdict"] != "ok"
    assert figures["drifted_columns"] == drifted and figures["missing_changed"] == missing
    images = {p.name for p in (project / f"reports/monitor/{kind}/images").iterdir()}
    assert images == {"prediction.png"} | {f"{name}.png" for name in drifted}


def test_an_unseen_category_is_a_bin_of_its_own_in_the_plot_data(project):
    monitor(project, "data/batches/new_category.parquet")
    rows = json.loads((project / "reports/monitor/new_category/distributions.json").read_text())
    rows = [r for r in rows if r["column"] == "multiple_lines"]
    current = {r["bin"]: r["share"] for r in rows if r["sample"] == "current"}
    reference = {r["bin"]: r["share"] for r in rows if r["sample"] == "reference"}
    assert current["new multiple_lines"] == pytest.approx(0.1, abs=0.001) and reference["new multiple_lines"] == 0


def test_a_concept_shift_is_seen_only_by_the_labels(project):
    """Features and scores as before; the labels' meaning changed: only the AUC can tell."""
    figures, done = monitor(project, "data/batches/concept_shift.parquet")
    assert done.returncode == 0, done.stderr
    assert figures["drifted_columns"] == [] and figures["prediction"]["level"] == "ok"
    assert figures["labels"]["label_level"] == "ok"  # the positive rate did not move either
    assert figures["labels"]["auc_level"] == "alert" and figures["labels"]["auc_drop"] > 0.1
    assert figures["verdict"] == "alert"


def test_outputs_are_byte_identical_from_run_to_run(project):
    for out in ("reports/a", "reports/b"):
        _, done = monitor(project, "data/batches/numeric_location.parquet", out=out)
        assert done.returncode == 0, done.stderr
    a, b = project / "reports/a", project / "reports/b"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    drawn = ("monthly_charges", "prediction", "tenure", "total_charges")
    assert files == [Path("distributions.json"), *(Path(f"images/{n}.png") for n in drawn), Path("monitor.json")]
    columns = {r["column"] for r in json.loads((a / "distributions.json").read_text())}
    assert len(columns) == 21 and {"prediction", "churn", "tenure"} <= columns  # 19 features, scores, labels
    assert [(a / f).read_bytes() for f in files] == [(b / f).read_bytes() for f in files]
    assert sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) == files


def test_enforce_mode_fails_on_an_alert_after_writing_the_figures(project):
    figures, done = monitor(project, "data/batches/numeric_location.parquet", "--enforce", out="reports/enforced")
    assert done.returncode == 1
    assert figures["verdict"] == "alert"  # written before failing: the evidence is there
    assert "Traceback" not in done.stderr and "enforced" in done.stderr
    _, done = monitor(project, "data/batches/no_drift.parquet", "--enforce", out="reports/enforced-ok")
    assert done.returncode == 0, done.stderr


def test_retrain_takes_an_enforced_alert_for_the_alert_it_is_outside_a_checkout(project, tmp_path):
    """`monitor.enforce: true` makes the monitor exit 1 on an alert: `retrain check` still
    prepares the pull request. The patch is made in memory (no git checkout needed, the params
    file never touched) and `git apply` takes it; an earlier run's verdict is never reused."""
    import yaml

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["monitor"]["enforce"] = True
    (project / "params-enforced.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = (project / "params-enforced.yaml").read_bytes()
    out = project / "reports/retrain-enforced"
    argv = ["check", "data/batches/numeric_location.parquet", str(out), "--params", "params-enforced.yaml"]
    done = run(project, "reprokit.monitoring.retrain", *argv)
    assert done.returncode == 0, done.stderr
    assert "numeric_location.parquet: alert; retraining pull request prepared" in done.stderr
    assert (project / "params-enforced.yaml").read_bytes() == before
    scratch = tmp_path / "checkout"
    scratch.mkdir()
    (scratch / "params-enforced.yaml").write_bytes(before)
    subprocess.run(["git", "init", "-q"], cwd=scratch, check=True)
    subprocess.run(["git", "apply", str(out / "retrain/change.patch")], cwd=scratch, check=True)
    applied = yaml.safe_load((scratch / "params-enforced.yaml").read_text())
    assert applied["monitor"]["batch"] == "data/batches/numeric_location.parquet"

    done = run(project, "reprokit.monitoring.retrain", "check", "data/batches/nosuch.parquet", str(out))
    assert done.returncode == 1 and "the monitor failed on data/batches/nosuch.parquet" in done.stderr
    assert not (out / "retrain").exists() and not (out / "monitor/monitor.json").exists()


def test_an_output_named_for_another_format_or_a_missing_holdout_is_one_error(project):
    """`--metrics-out README.md` replaced the README with JSON (and wrote beside it); a
    mistyped `--holdout` was dropped without a word, changing what the AUC check compares."""
    for args, message in (
        (["--metrics-out", "README.md"], "output metrics-out (README.md) is written as JSON"),
        (["--rules-out", "rules.json"], "output rules-out (rules.json) is written as YAML"),
        (["--holdout", "data/prepared/tst.parquet"], "data/prepared/tst.parquet: no such file"),
    ):
        done = run(project, "reprokit.monitoring.monitor", "data/batches/no_drift.parquet", *args)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (project / "README.md").exists() and not (project / "rules.json").exists()


def test_missing_and_unknown_columns_are_named(project, tmp_path):
    batch = pd.read_parquet(project / "data/batches/no_drift.parquet")
    batch = batch.drop(columns=["tenure", "contract"]).assign(loyalty_points=1)
    path = tmp_path / "odd.parquet"
    batch.to_parquet(path, index=False)
    _, done = monitor(project, str(path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert "missing required column(s): tenure, contract" in error
    assert "column(s) the contract does not know: loyalty_points" in error


def test_a_csv_with_other_settings_is_read_with_the_options_and_named_without_them(project, tmp_path):
    """A `;`-separated latin-1 export: one hint naming `--delimiter`, and with the options the
    same figures as the batch's own Parquet file."""
    batch = pd.read_parquet(project / "data/batches/no_drift.parquet")
    path = tmp_path / "export.csv"
    path.write_bytes(batch.to_csv(index=False, sep=";").encode("latin-1"))
    _, done = monitor(project, str(path), out="reports/export-plain")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "looks ';'-separated" in done.stderr and "set --delimiter to ';'" in done.stderr
    read, done = monitor(project, str(path), "--delimiter", ";", "--encoding", "latin-1", out="reports/export")
    assert done.returncode == 0, done.stderr
    reference, done = monitor(project, "data/batches/no_drift.parquet", out="reports/export-reference")
    assert read.pop("batch") == str(path) and reference.pop("batch") == "data/batches/no_drift.parquet"
    assert read == reference


def test_rows_that_break_the_contract_are_reported_not_crashed_on(project, tmp_path):
    """A CSV as it comes, with rows the contract refuses: counted with their reasons."""
    batch = pd.read_parquet(project / "data/batches/no_drift.parquet")
    batch = batch.astype({"tenure": object, "monthly_charges": object})
    batch.loc[0, "tenure"] = "twelve"
    batch.loc[1, "monthly_charges"] = None
    batch.loc[2, "tenure"] = 3.5
    path = tmp_path / "broken.csv"
    batch.to_csv(path, index=False)
    figures, done = monitor(project, str(path))
    assert done.returncode == 0, done.stderr
    assert figures["rows"] == 1409 and figures["rejected_rows"] == 3
    reasons = figures["rejected_reasons"]
    assert reasons == {
        "monthly_charges: null where the contract requires a value": 1,
        "tenure: expected a number, got text": 1,
        "tenure: expected a whole number": 1,
    }
    assert "3 break the contract" in done.stderr
    assert figures["verdict"] == "ok"  # 3 rows of 1409 are under rejected_share_warn (1%)


def test_a_batch_whose_every_row_breaks_the_contract_is_reported(project, tmp_path):
    batch = pd.read_parquet(project / "data/batches/no_drift.parquet").astype({"tenure": object})
    batch["tenure"] = "unknown"
    path = tmp_path / "all-bad.csv"
    batch.to_csv(path, index=False)
    figures, done = monitor(project, str(path), out="reports/all-bad")
    assert done.returncode == 0, done.stderr
    assert figures["rejected_rows"] == 1409 and figures["labels"] is None
    assert figures["rejected_reasons"] == {"tenure: expected a number, got text": 1409}
    assert figures["missing_changed"] == ["tenure"] and figures["verdict"] == "alert"  # no tenure is readable


def test_labels_written_as_numbers_or_text_are_read_alike(project, tmp_path):
    """A CSV's `1`/`0` labels are text to the reader: the concept shift is still seen."""
    batch = pd.read_parquet(project / "data/batches/concept_shift.parquet")
    batch["churn"] = (batch["churn"] == "Yes").astype(int)
    path = tmp_path / "numbered.csv"
    batch.to_csv(path, index=False)
    figures, done = monitor(project, str(path), out="reports/numbered")
    assert done.returncode == 0, done.stderr
    assert figures["labels"]["labelled_rows"] == 1409 and figures["labels"]["auc_level"] == "alert"


def test_a_batch_too_small_to_judge_is_an_error(project, tmp_path):
    path = tmp_path / "tiny.parquet"
    pd.read_parquet(project / "data/batches/no_drift.parquet").head(99).to_parquet(path, index=False)
    _, done = monitor(project, str(path), out="reports/tiny")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "99 rows, fewer than monitor.min_rows (100): too few to judge" in done.stderr


def test_an_empty_batch_is_an_error_not_a_verdict(project, tmp_path):
    path = tmp_path / "empty.csv"
    pd.read_parquet(project / "data/batches/no_drift.parquet").head(0).to_csv(path, index=False)
    _, done = monitor(project, str(path), out="reports/empty")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "the batch has no rows" in done.stderr.strip().splitlines()[-1]


def test_a_csv_batch_gives_the_figures_of_the_same_parquet_batch(project, tmp_path):
    path = tmp_path / "numeric_location.csv"
    pd.read_parquet(project / "data/batches/numeric_location.parquet").to_csv(path, index=False)
    from_csv, done = monitor(project, str(path), out="reports/csv")
    assert done.returncode == 0, done.stderr
    from_parquet, _ = monitor(project, "data/batches/numeric_location.parquet", out="reports/parquet")
    assert from_csv.pop("batch") == str(path) and from_parquet.pop("batch") == "data/batches/numeric_location.parquet"
    assert from_csv == from_parquet


# --- the webhook ------------------------------------------------------------------------------


class Hook:
    """A real HTTP server on 127.0.0.1 that records each POST and answers with the next status."""

    def __init__(self, statuses: list[int]):
        self.bodies: list[dict] = []
        self.statuses = list(statuses)
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the standard library's name
                length = int(self.headers["Content-Length"])
                hook.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(hook.statuses.pop(0) if hook.statuses else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-token"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def hook():
    hooks = []

    def start(statuses=()):
        hooks.append(Hook(list(statuses)))
        return hooks[-1]

    yield start
    for h in hooks:
        h.close()


def test_the_verdict_is_posted_to_the_webhook(project, hook):
    server = hook()
    figures, done = monitor(
        project, "data/batches/new_category.parquet", env={"REPROKIT_MONITOR_WEBHOOK": server.url}, out="reports/hook"
    )
    assert done.returncode == 0, done.stderr
    (body,) = server.bodies
    assert body["verdict"] == figures["verdict"] == "alert"
    assert body["drifted_columns"] == ["multiple_lines"]
    assert body["figures"]["features"]["multiple_lines"] == figures["features"]["multiple_lines"]["psi"]
    assert body["dataset"]["name"] == "telco_customer_churn" and len(body["dataset"]["batch_md5"]) == 32
    assert body["model_version"] == figures["model_version"]


def test_a_failing_webhook_is_retried(project, hook):
    server = hook([503, 500])
    env = {"REPROKIT_MONITOR_WEBHOOK": server.url, "REPROKIT_MONITOR_WEBHOOK_RETRIES": "3"}
    _, done = monitor(project, "data/batches/no_drift.parquet", "--webhook-required", env=env, out="reports/retry")
    assert done.returncode == 0, done.stderr
    assert len(server.bodies) == 3  # two failures, then delivered


def test_a_webhook_that_is_down_never_fails_the_check_unless_required(project, hook):
    server = hook()
    url = server.url
    server.close()  # nothing listens there now
    env = {
        "REPROKIT_MONITOR_WEBHOOK": url,
        "REPROKIT_MONITOR_WEBHOOK_RETRIES": "1",
        "REPROKIT_MONITOR_WEBHOOK_TIMEOUT": "2",
    }
    figures, done = monitor(project, "data/batches/no_drift.parquet", env=env, out="reports/down")
    assert done.returncode == 0, done.stderr
    assert figures["verdict"] == "ok" and "could not post the verdict to the webhook at 127.0.0.1" in done.stderr
    _, done = monitor(project, "data/batches/no_drift.parquet", "--webhook-required", env=env, out="reports/down2")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "could not post the verdict" in done.stderr and "secret-token" not in done.stderr


def test_a_webhook_that_answers_garbage_is_a_warning_not_a_crash(project):
    """Not HTTP at all (a typo'd port pointing at another service)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer():
        for _ in range(2):
            connection, _ = listener.accept()
            connection.recv(65536)
            connection.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            connection.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    env = {"REPROKIT_MONITOR_WEBHOOK": url, "REPROKIT_MONITOR_WEBHOOK_RETRIES": "1"}
    try:
        figures, done = monitor(project, "data/batches/no_drift.parquet", env=env, out="reports/garbage")
    finally:
        listener.close()
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "could not post the verdict to the webhook at 127.0.0.1" in done.stderr


class Drip:
    """A real HTTP server on 127.0.0.1 that reads each request, then answers one byte every
    0.2 s: a 200 status line, then a header line that never ends, for `seconds` per
    connection (minutes: far past any deadline). It records how long each client stayed."""

    def __init__(self, seconds: float = 90.0):
        self.seconds, self.stop = seconds, threading.Event()
        self.stays: list[float] = []  # seconds from accept until the client hung up
        self.accepted = threading.Semaphore(0)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.threads = [threading.Thread(target=self.accept, daemon=True)]
        self.threads[0].start()
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hooks/secret-token"

    def accept(self):
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:  # the listener was closed
                return
            thread = threading.Thread(target=self.drip, args=(connection,), daemon=True)
            self.threads.append(thread)
            thread.start()
            self.accepted.release()

    def drip(self, connection: socket.socket):
        started = time.monotonic()
        answer = b"HTTP/1.1 200 OK\r\nX-Drip: "
        with connection:
            connection.recv(65536)
            sent = 0
            while not self.stop.is_set() and time.monotonic() - started < self.seconds:
                try:
                    connection.sendall(answer[sent : sent + 1] if sent < len(answer) else b"a")
                except OSError:  # the client hung up
                    self.stays.append(time.monotonic() - started)
                    return
                sent += 1
                self.stop.wait(0.2)

    def hang_ups(self, connections: int) -> list[float]:
        """Once `connections` clients came and went, the seconds each stayed: only those that hung up
        while the server still dripped (a byte every 0.2 s, so no read ever times out) are counted."""
        for _ in range(connections):
            assert self.accepted.acquire(timeout=self.seconds), "the client never came"  # catches a hang only
        for thread in self.threads[1:]:
            thread.join()  # at the client's hang-up, or when the server stops dripping
        return self.stays

    def close(self):
        self.stop.set()
        # Closing alone does not wake a thread blocked in accept() on Linux; shutting it down does.
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for thread in self.threads:
            thread.join(10)


@pytest.fixture()
def drip():
    server = Drip()
    yield server
    server.close()


FIGURES = {
    "verdict": "alert",
    "drifted_columns": ["tenure"],
    "missing_changed": [],
    "rows": 100,
    "rejected_rows": 0,
    "drifted_share": 0.05,
    "prediction": {"psi": 0.3},
    "features": {"tenure": {"psi": 0.4}},
    "labels": None,
}


@pytest.mark.parametrize("timeout", ["inf", "nan", "-1", "soon"])
def test_a_webhook_timeout_that_is_no_finite_number_is_one_error(monkeypatch, tmp_path, timeout):
    """Before: `inf` raised OverflowError from the socket, a traceback; `nan` failed every attempt."""
    monkeypatch.setenv("REPROKIT_MONITOR_WEBHOOK", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("REPROKIT_MONITOR_WEBHOOK_TIMEOUT", timeout)
    with pytest.raises(StageError, match="REPROKIT_MONITOR_WEBHOOK_TIMEOUT must be a"):
        post_verdict(FIGURES, "telco_customer_churn", str(tmp_path / "batch.parquet"), required=False)


def test_a_webhook_that_drips_its_answer_is_given_up_at_the_deadline(drip, monkeypatch, tmp_path):
    """The deadline covers the whole attempt, not each read: 1 s per attempt, 2 attempts and a
    0.5 s pause, against a server that would keep answering for minutes."""
    monkeypatch.setenv("REPROKIT_MONITOR_WEBHOOK", drip.url)
    monkeypatch.setenv("REPROKIT_MONITOR_WEBHOOK_TIMEOUT", "1")
    monkeypatch.setenv("REPROKIT_MONITOR_WEBHOOK_RETRIES", "1")
    with pytest.raises(StageError) as raised:
        post_verdict(FIGURES, "telco_customer_churn", str(tmp_path / "batch.parquet"), required=True)
    assert str(raised.value) == (
        "could not post the verdict to the webhook at 127.0.0.1 (no answer within the 1 s deadline) after 2 attempt(s)"
    )
    # Both attempts hung up while the server still dripped (it would for 90 s): no clock is read,
    # so the verdict does not depend on how busy the machine is.
    assert len(drip.hang_ups(2)) == 2, drip.stays


def test_a_dripping_webhook_cannot_stall_the_monitor(project, drip):
    env = {
        "REPROKIT_MONITOR_WEBHOOK": drip.url,
        "REPROKIT_MONITOR_WEBHOOK_TIMEOUT": "1",
        "REPROKIT_MONITOR_WEBHOOK_RETRIES": "1",
    }
    figures, done = monitor(project, "data/batches/no_drift.parquet", env=env, out="reports/drip")
    assert done.returncode == 0, done.stderr
    assert figures["verdict"] == "ok"
    assert "(no answer within the 1 s deadline) after 2 attempt(s); the check goes on" in done.stderr
    assert "secret-token" not in done.stderr
    assert len(drip.hang_ups(2)) == 2, drip.stays  # hung up at the deadline, not after 90 s
