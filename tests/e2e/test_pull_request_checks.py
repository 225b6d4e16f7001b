"""The scripts the workflows call, run for real: the report and the reproducibility gate."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from synthetic import markdown_rows

pytestmark = pytest.mark.e2e


def script(clone, name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # The clone has no .venv of its own: point the scripts' .venv/bin at the test's.
    venv = clone.root / ".venv"
    if not venv.exists():
        venv.symlink_to(os.path.dirname(clone.env["PATH"].split(os.pathsep)[0]))
    return subprocess.run(
        [str(clone.root / ".ci" / name), *args],
        cwd=clone.root,
        env={**clone.env, **(env or {})},
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def two_commits(tmp_path_factory, reproduced):
    """A repository with two commits of different params, the pipeline run on both."""
    from dvcclone import copy_clone

    clone = copy_clone(reproduced, tmp_path_factory.mktemp("pr") / "repo")
    clone.git("checkout", "-q", "-b", "feature")
    clone.write_params(
        lambda p: (p["evaluate"].update(threshold=0.35), p["train"]["hist_gradient_boosting"].update(max_iter=120))
    )
    clone.dvc("repro")
    clone.git("commit", "-qam", "Lower threshold, fewer iterations")
    return clone


def test_report_numbers_match_the_two_metrics_files(two_commits):
    clone = two_commits
    done = script(clone, "pr-report", "HEAD~1", "reports")
    assert done.returncode == 0, done.stderr
    text = (clone.root / "reports" / "report.md").read_text()
    # Every figure is in metrics/evaluation.json, which the DVC cache keeps for each commit.
    base_md5 = next(
        out["md5"]
        for stage in clone.lock(rev="HEAD~1")["stages"].values()
        for out in stage.get("outs", [])
        if out["path"] == "metrics/evaluation.json"
    )
    base = json.loads((clone.root / ".dvc/cache/files/md5" / base_md5[:2] / base_md5[2:]).read_text())
    head = json.loads((clone.root / "metrics/evaluation.json").read_text())
    table = markdown_rows(text)
    for split in ("test", "train"):
        for metric in ("roc_auc", "f1", "recall", "log_loss", "brier"):
            old, new = base[split][metric], head[split][metric]
            cells = table[f"{split}.{metric}"]
            assert cells[0] == f"{old:.4f}" and cells[1] == f"{new:.4f}"
            assert cells[2].split()[0] == (f"{new - old:+.4f}" if new != old else "0")
    assert table["params.yaml:evaluate.threshold"] == ["`0.5`", "`0.35`"]
    before = yaml.safe_load(clone.git("show", "HEAD~1:params.yaml"))["train"]["hist_gradient_boosting"]["max_iter"]
    assert before != 120 and table["params.yaml:train.hist_gradient_boosting.max_iter"] == [f"`{before}`", "`120`"]
    assert table["test.recall"][2].endswith("✅")  # a lower threshold catches more churners
    assert "artifact" in text and "![roc_compare]" not in text  # no image upload by default
    assert {p.name for p in (clone.root / "reports").iterdir()} == {
        "report.md",
        "roc_compare.png",
        "precision_recall_compare.png",
    }
    published = script(clone, "pr-report", "HEAD~1", "reports", env={"CML_PUBLISH_IMAGES": "true"})
    assert (
        published.returncode == 0
        and "![roc_compare](roc_compare.png)" in (clone.root / "reports/report.md").read_text()
    )


def test_report_against_itself_and_against_a_base_without_results(two_commits, tmp_path):
    clone = two_commits
    done = script(clone, "pr-report", "HEAD", "same")
    assert done.returncode == 0, done.stderr
    text = (clone.root / "same" / "report.md").read_text()
    assert "No param changed." in text
    assert all(cells[2] == "0" for key, cells in markdown_rows(text).items() if "." in key and len(cells) == 3)
    # A base commit without dvc.lock or metrics (the first pull request), made without touching the workspace.
    index = {**clone.env, "GIT_INDEX_FILE": str(tmp_path / "index")}
    git = lambda *a: subprocess.run(
        ["git", *a], cwd=clone.root, env=index, capture_output=True, text=True, check=True
    ).stdout.strip()  # noqa: E731
    git("read-tree", "HEAD")
    git("rm", "-q", "-r", "--cached", "dvc.lock", "metrics")
    bare = git("commit-tree", git("write-tree"), "-m", "before the pipeline")
    done = script(clone, "pr-report", bare, "first")
    assert done.returncode == 0, done.stderr
    text = (clone.root / "first" / "report.md").read_text()
    assert "has no pipeline results yet" in text
    assert markdown_rows(text)["test.roc_auc"][0] == "—" and markdown_rows(text)["test.roc_auc"][2] == "added"


def test_reproducibility_gate_passes_on_a_clean_checkout(copy_of):
    clone = copy_of("gate-ok")
    done = script(clone, "repro-gate", env={"PULL": "never"})
    assert done.returncode == 0, done.stderr
    assert "reproducibility gate passed" in done.stderr


def test_reproducibility_gate_names_the_outputs_that_differ(copy_of):
    clone = copy_of("gate-bad")
    # A commit whose params changed without re-running the pipeline: dvc.lock is stale.
    clone.write_params(lambda p: p["evaluate"].update(threshold=0.3))
    clone.git("commit", "-qam", "Change threshold, forget dvc repro")
    done = script(clone, "repro-gate", env={"PULL": "never"})
    assert done.returncode == 1
    assert "REPRODUCIBILITY GATE FAILED" in done.stderr
    assert "dvc.lock changed" in done.stderr
    assert "evaluate out metrics/metrics.json: committed" in done.stderr
    assert "package out models/model_card.md" in done.stderr
    assert "git-tracked files changed by dvc repro" in done.stderr and "metrics/metrics.json" in done.stderr


def test_gate_pulls_from_a_usable_remote_instead_of_recomputing(copy_of, tmp_path):
    origin = copy_of("gate-origin")
    origin.dvc("remote", "modify", "--local", "local", "url", str(tmp_path / "storage"))
    origin.dvc("push")
    from dvcclone import new_clone

    fresh = new_clone(origin.root, tmp_path / "fresh")
    fresh.dvc("remote", "modify", "--local", "local", "url", str(tmp_path / "storage"))
    done = script(fresh, "repro-gate", env={"PULL": "always"})
    assert done.returncode == 0, done.stderr
    assert "dvc pull" in done.stderr and "Running stage" not in done.stderr
