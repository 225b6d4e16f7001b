"""The pull-request report on small git repositories made by the test."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from synthetic import markdown_rows

from reprokit.commands.report import ReportError, build_report, delta_cell, direction

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]


def commit(root: Path, files: dict[str, object], message: str) -> None:
    for path, content in files.items():
        target = root / path
        if content is None:
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content if isinstance(content, str) else json.dumps(content))
    subprocess.run(GIT + ["add", "-A"], cwd=root, check=True)
    subprocess.run(GIT + ["commit", "-qm", message], cwd=root, check=True)


@pytest.fixture()
def repo(tmp_path):
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=tmp_path, check=True)
    return tmp_path


def metrics(auc: float, f1: float, **extra) -> dict:
    return {"test": {"roc_auc": auc, "f1": f1, "n": 100, **extra}, "threshold": 0.5}


def roc(points) -> list:
    return [{"fpr": x, "tpr": y, "threshold": 0.5} for x, y in points]


def test_first_pull_request_base_without_results(repo):
    commit(repo, {"params.yaml": "train:\n  model: rf\n"}, "start")
    commit(
        repo,
        {
            "dvc.lock": "schema: '2.0'\n",
            "metrics/metrics.json": metrics(0.8, 0.6),
            "metrics/plots/roc.json": roc([(0, 0), (0.2, 0.7), (1, 1)]),
        },
        "first results",
    )
    text = build_report("HEAD~1", repo, repo / "out")
    assert "has no pipeline results yet" in text
    rows = markdown_rows(text)
    assert rows["test.roc_auc"] == ["—", "0.8000", "added"]
    assert (repo / "out" / "report.md").read_text() == text
    assert (repo / "out" / "roc_compare.png").read_bytes()[:4] == b"\x89PNG"


def test_equal_base_and_head(repo):
    commit(repo, {"params.yaml": "a: 1\n", "dvc.lock": "x\n", "metrics/metrics.json": metrics(0.8, 0.6)}, "one")
    text = build_report("main", repo, repo / "out")
    assert "No param changed." in text
    assert markdown_rows(text)["test.roc_auc"] == ["0.8000", "0.8000", "0"]
    assert "has no pipeline results yet" not in text


def test_changed_params_and_metrics_with_directions(repo):
    commit(
        repo,
        {
            "params.yaml": "train:\n  lr: 0.05\n  depth: 3\n",
            "dataset.yaml": "target: {column: y}\n",
            "dvc.lock": "x\n",
            "metrics/metrics.json": metrics(0.80, 0.60, log_loss=0.5, old_only=1.0),
        },
        "base",
    )
    commit(
        repo,
        {
            "params.yaml": "train:\n  lr: 0.1\n  depth: 3\n  extra: true\n",
            "metrics/metrics.json": metrics(0.85, 0.55, log_loss=0.4, new_only=2.0),
        },
        "head",
    )
    text = build_report("HEAD~1", repo, repo / "out")
    rows = markdown_rows(text)
    assert rows["params.yaml:train.lr"] == ["`0.05`", "`0.1`"]
    assert rows["params.yaml:train.extra"] == ["—", "`True`"]
    assert "params.yaml:train.depth" not in rows
    assert rows["test.roc_auc"] == ["0.8000", "0.8500", "+0.0500 ✅"]
    assert rows["test.f1"] == ["0.6000", "0.5500", "-0.0500 ❌"]
    assert rows["test.log_loss"] == ["0.5000", "0.4000", "-0.1000 ✅"]  # lower is better
    assert rows["test.n"] == ["100", "100", "0"]
    assert rows["test.old_only"][2] == "removed" and rows["test.new_only"][2] == "added"


def test_workspace_changes_count_as_head(repo):
    commit(repo, {"params.yaml": "a: 1\n", "dvc.lock": "x\n", "metrics/metrics.json": metrics(0.8, 0.6)}, "one")
    (repo / "metrics/metrics.json").write_text(json.dumps(metrics(0.9, 0.6)))
    assert markdown_rows(build_report("HEAD", repo, repo / "out"))["test.roc_auc"][2] == "+0.1000 ✅"


def test_broken_or_missing_files_do_not_crash(repo):
    commit(
        repo,
        {
            "params.yaml": "a: [unclosed\n",
            "dvc.lock": "x\n",
            "metrics/metrics.json": "{not json",
            "metrics/plots/roc.json": [{"wrong": 1}],
        },
        "broken base",
    )
    commit(
        repo,
        {"params.yaml": "a: 2\n", "metrics/metrics.json": None, "metrics/subgroups.json": {"max_auc_gap": 0.1}},
        "head",
    )
    text = build_report("HEAD~1", repo, repo / "out")
    assert markdown_rows(text)["max_auc_gap"] == ["—", "0.1000", "added"]
    assert "Curves" not in text


PACKAGE_LOCK = "schema: '2.0'\nstages:\n  package:\n    outs:\n    - path: models/package\n      md5: {md5}\n"


def test_gate_verdict_and_images_note(repo):
    commit(
        repo,
        {
            "params.yaml": "a: 1\n",
            "dvc.lock": PACKAGE_LOCK.format(md5="0123456789abcdef0123456789abcdef.dir"),
            "metrics/metrics.json": metrics(0.8, 0.6),
            "metrics/plots/roc.json": roc([(0, 0), (1, 1)]),
            "metrics/gate.json": {
                "passed": False,
                "challenger_package": "0123456789abcdef0123456789abcdef.dir",
                "challenger_version": "4",
                "checks": {"min_test_roc_auc": {"value": 0.8, "limit": 0.85, "passed": False}},
            },
        },
        "one",
    )
    text = build_report("main", repo, repo / "out", images_note="Curves are in the workflow artifact.")
    assert "Verdict: **❌ failed** (version 4)" in text
    assert markdown_rows(text)["min_test_roc_auc"] == ["0.8000", "0.8500", "❌"]
    assert "Curves are in the workflow artifact." in text and "![roc_compare]" not in text
    assert (repo / "out" / "roc_compare.png").exists()


def test_unknown_base_is_a_clear_error(repo):
    commit(repo, {"params.yaml": "a: 1\n"}, "one")
    with pytest.raises(ReportError, match="base revision 'nope' is not a commit"):
        build_report("nope", repo, repo / "out")


def test_an_out_that_is_a_file_or_cannot_be_made_is_a_clear_error(repo):
    """Before: FileExistsError and FileNotFoundError tracebacks; the file is left as it was."""
    commit(repo, {"params.yaml": "a: 1\n"}, "one")
    (repo / "README.md").write_text("mine\n")
    with pytest.raises(ReportError, match="--out .*README.md is a file: it names the folder for report.md"):
        build_report("HEAD", repo, repo / "README.md")
    assert (repo / "README.md").read_text() == "mine\n"
    with pytest.raises(ReportError, match="--out .*README.md/sub: cannot make the folder"):
        build_report("HEAD", repo, repo / "README.md" / "sub")


@pytest.mark.parametrize(
    "key, better",
    [
        ("test.roc_auc", "higher"),
        ("train.recall", "higher"),
        ("test.brier", "lower"),
        ("auc_gap.female", "lower"),
        ("test.n", ""),
        ("threshold", ""),
    ],
)
def test_direction_of_metrics(key, better):
    assert direction(key) == better


def test_delta_cells():
    assert delta_cell("test.roc_auc", None, None) == "—"
    assert delta_cell("rows_in", 10, 12) == "+2"


def test_dvc_tracked_detail_of_the_base_comes_from_the_dvc_cache(repo):
    """Subgroup metrics live in the DVC cache, not git: the base's copy is found by the md5
    its dvc.lock records; a base whose copy is not in the cache shows as missing."""
    import hashlib

    def cached(content: dict) -> tuple[str, str]:
        text = json.dumps(content)
        md5 = hashlib.md5(text.encode()).hexdigest()
        path = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return text, md5

    def lock(md5: str) -> str:
        return f"schema: '2.0'\nstages:\n  evaluate:\n    outs:\n    - path: metrics/subgroups.json\n      md5: {md5}\n"

    (repo / ".gitignore").write_text("/.dvc/cache/\n/metrics/subgroups.json\n")
    base_text, base_md5 = cached({"max_auc_gap": 0.10, "auc_gap": {"female": 0.10}})
    commit(repo, {"params.yaml": "a: 1\n", "dvc.lock": lock(base_md5), "metrics/metrics.json": metrics(0.8, 0.6)}, "b")
    head_text, head_md5 = cached({"max_auc_gap": 0.04, "auc_gap": {"female": 0.04}})
    (repo / "metrics" / "subgroups.json").write_text(head_text)
    commit(repo, {"dvc.lock": lock(head_md5)}, "head")
    rows = markdown_rows(build_report("HEAD~1", repo, repo / "out"))
    assert rows["max_auc_gap"][:2] == ["0.1000", "0.0400"]

    path = repo / ".dvc" / "cache" / "files" / "md5" / base_md5[:2] / base_md5[2:]
    path.unlink()  # a fresh CI checkout that pulled only the head's outputs
    rows = markdown_rows(build_report("HEAD~1", repo, repo / "out"))
    assert rows["max_auc_gap"][:2] == ["—", "0.0400"]


def monitor_figures(verdict: str, psi: float, drifted: list[str]) -> dict:
    return {
        "verdict": verdict,
        "level": ["ok", "warn", "alert"].index(verdict),
        "batch": "data/batches/latest.parquet",
        "drifted_columns": drifted,
        "drifted_share": len(drifted) / 2,
        "features": {"tenure": {"psi": psi, "p_adjusted": 0.5}, "contract": {"psi": 0.01, "p_adjusted": 0.9}},
        "prediction": {"psi": psi / 2},
    }


def test_the_drift_verdict_and_changed_figures_are_reported(repo):
    commit(
        repo,
        {"params.yaml": "a: 1\n", "dvc.lock": "x\n", "metrics/monitor.json": monitor_figures("ok", 0.02, [])},
        "one",
    )
    (repo / "metrics/monitor.json").write_text(json.dumps(monitor_figures("alert", 0.4, ["tenure"])))
    text = build_report("main", repo, repo / "out")
    assert (
        "Verdict on `data/batches/latest.parquet`: **🚨 alert** (base: `ok` on `data/batches/latest.parquet`)" in text
    )
    assert "Drifted columns: `tenure`." in text
    rows = markdown_rows(text)
    assert rows["features.tenure.psi"] == ["0.0200", "0.4000", "+0.3800"]
    assert "features.contract.psi" not in rows and "features.tenure.p_adjusted" not in rows  # unchanged, or not drift


def test_no_monitor_figures_no_drift_section(repo):
    commit(repo, {"params.yaml": "a: 1\n", "dvc.lock": "x\n", "metrics/metrics.json": metrics(0.8, 0.6)}, "one")
    assert "## Drift" not in build_report("main", repo, repo / "out")


@pytest.mark.parametrize("md5", ["..md5/../../../../../outside/secret.json", "ab../../../../../../outside/secret.json"])
def test_a_base_lock_whose_md5_is_a_path_reads_nothing_outside_the_cache(repo, md5, caplog):
    """The base's dvc.lock comes from someone else's commit: an "md5" that climbs out of the
    cache used to be read as the base's file. Only 32 hex digits are an md5."""
    import logging

    (repo / ".dvc/cache/files/md5/ab").mkdir(parents=True)  # a cache's folders, as every cache has
    outside = repo.parent / "outside" / "secret.json"
    outside.parent.mkdir(exist_ok=True)
    outside.write_text(json.dumps({"max_auc_gap": 0.5, "auc_gap": {"female": 0.5}}))
    lock = f"schema: '2.0'\nstages:\n  evaluate:\n    outs:\n    - path: metrics/subgroups.json\n      md5: {md5!r}\n"
    commit(repo, {"params.yaml": "a: 1\n", "dvc.lock": lock, "metrics/metrics.json": metrics(0.8, 0.6)}, "base")
    (repo / ".gitignore").write_text("/.dvc/cache/\n/metrics/subgroups.json\n")
    (repo / "metrics" / "subgroups.json").write_text(json.dumps({"max_auc_gap": 0.04, "auc_gap": {"female": 0.04}}))
    commit(repo, {"params.yaml": "a: 2\n"}, "head")
    with caplog.at_level(logging.WARNING, logger="reprokit"):
        rows = markdown_rows(build_report("HEAD~1", repo, repo / "out"))
    assert rows["max_auc_gap"][:2] == ["—", "0.0400"]  # the file outside is never shown
    assert "is not an md5 (32 hex digits)" in caplog.text


def test_a_verdict_measured_for_another_package_is_never_shown_as_the_heads(repo):
    """Observed: the committed gate.json of an earlier package was shown as head's verdict (its
    AUC beside other metrics). A verdict is shown only for the package head's dvc.lock records."""
    gate = {"passed": True, "challenger_package": "aaaa.dir", "checks": {"min_test_roc_auc": {"value": 0.84}}}
    commit(repo, {"params.yaml": "a: 1\n", "metrics/metrics.json": metrics(0.8, 0.6)}, "base")
    commit(repo, {"dvc.lock": PACKAGE_LOCK.format(md5="bbbb.dir"), "metrics/gate.json": gate}, "head")
    text = build_report("HEAD~1", repo, repo / "out")
    assert "Verdict:" not in text and "min_test_roc_auc" not in text
    assert "No verdict for this head's package (`bbbb.dir`): `metrics/gate.json` was measured for `aaaa.dir`" in text
    assert "Run `reprokit gate --package models/package` on this head" in text  # the challenger may be another
