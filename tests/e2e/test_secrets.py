"""Secrets stay secret: every command, fed credentials in a tracking URI, a presigned URL, a
webhook URL and an `s3://key:secret@...` URL, names the place and never the secret."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from commands import HANG_S

pytestmark = pytest.mark.e2e

SECRET = "S3cr3tXyZ"  # the password, signature, token and key in every URL below
KEY = "AKIAHOSTILEKEY"
TRACKING = f"postgresql://mlflow:{SECRET}@127.0.0.1:9/mlflow?password={SECRET}"  # nothing listens on port 9
PRESIGNED = f"http://127.0.0.1:9/batches/new.csv?X-Amz-Credential={KEY}&X-Amz-Signature={SECRET}"
S3 = f"s3://{KEY}:{SECRET}@batches/new.csv"
WEBHOOK = f"http://hook:{SECRET}@127.0.0.1:9/hooks/{SECRET}?token={SECRET}"

COMMANDS = {
    "package stage": (["dvc", "repro", "-f", "-s", "package"], {"MLFLOW_TRACKING_URI": TRACKING}),
    "gate": ([sys.executable, "-m", "reprokit.release.gate"], {"MLFLOW_TRACKING_URI": TRACKING}),
    "registry": ([sys.executable, "-m", "reprokit.release.registry", "show"], {"MLFLOW_TRACKING_URI": TRACKING}),
    "tune": ([sys.executable, "-m", "reprokit.commands.tune"], {"MLFLOW_TRACKING_URI": TRACKING}),
    "score, s3 credentials": ([sys.executable, "-m", "reprokit.serving.score", S3, "out.parquet"], {}),
    "score, presigned": ([sys.executable, "-m", "reprokit.serving.score", PRESIGNED, "out.parquet"], {}),
    "monitor, presigned": ([sys.executable, "-m", "reprokit.monitoring.monitor", PRESIGNED], {}),
    "monitor, s3 credentials": ([sys.executable, "-m", "reprokit.monitoring.monitor", S3], {}),
    "monitor, webhook": (
        [sys.executable, "-m", "reprokit.monitoring.monitor", "data/batches/no_drift.parquet", "--webhook-required"],
        {"REPROKIT_MONITOR_WEBHOOK": WEBHOOK, "REPROKIT_MONITOR_WEBHOOK_RETRIES": "0"},
    ),
    "retrain": ([sys.executable, "-m", "reprokit.monitoring.retrain", "check", PRESIGNED, "out"], {}),
    "draft": ([sys.executable, "-m", "reprokit.commands.draft", S3, "--target", "churn", "--out", "-"], {}),
}


@pytest.fixture(scope="module")
def clone(tmp_path_factory, reproduced):
    from dvcclone import copy_clone

    return copy_clone(reproduced, tmp_path_factory.mktemp("secrets") / "repo")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_command_shows_a_secret_it_was_given(clone, name):
    command, env = COMMANDS[name]
    done = clone.run(*command, check=False, timeout=HANG_S) if not env else run_with(clone, command, env)
    shown = done.stdout + done.stderr
    assert done.returncode != 0, shown  # every place above is unreachable or refused
    assert SECRET not in shown and KEY not in shown, shown
    assert "127.0.0.1" in shown or "batches" in shown, shown  # the place is named


def run_with(clone, command, env):
    return subprocess.run(
        command, cwd=clone.root, env={**clone.env, **env}, capture_output=True, text=True, timeout=HANG_S
    )


def test_the_service_never_shows_a_tracking_uri_secret(clone, tmp_path):
    """The service following an alias in a store that does not answer logs the store's place."""
    from servers import free_port, stop

    env = {**clone.env, "MLFLOW_TRACKING_URI": TRACKING, "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    command = [sys.executable, "-m", "reprokit.serving.serve", "models:/churn@champion", "--port", str(free_port())]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=clone.root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline and "cannot load" not in log.read_text():
            time.sleep(0.5)
    finally:
        stop(process)
    shown = log.read_text()
    assert "cannot load models:/churn@champion" in shown, shown
    assert SECRET not in shown and KEY not in shown, shown
