"""The retraining pull request's preparation (`reprokit.monitoring.retrain`), on the real params file."""

from __future__ import annotations

import os

import pytest
import yaml
from hostile import ORDINARY, REFUSED

from reprokit.core.errors import StageError
from reprokit.monitoring.retrain import branch_name, params_patch, set_batch


def test_set_batch_changes_only_the_monitor_batch_and_keeps_every_comment(repo):
    text = (repo / "params.yaml").read_text()
    updated = set_batch(text, "s3://bucket/batches/2026-11-26.parquet")
    assert yaml.safe_load(updated)["monitor"]["batch"] == "s3://bucket/batches/2026-11-26.parquet"
    changed = [(a, b) for a, b in zip(text.splitlines(), updated.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and "# the batch the monitor stage checks" in changed[0][1]
    data = yaml.safe_load(updated)
    del data["monitor"]["batch"]
    original = yaml.safe_load(text)
    del original["monitor"]["batch"]
    assert data == original


def test_a_batch_name_yaml_would_misread_is_quoted(repo):
    updated = set_batch((repo / "params.yaml").read_text(), "batches/week 48: late.csv")
    assert yaml.safe_load(updated)["monitor"]["batch"] == "batches/week 48: late.csv"


def test_params_without_a_monitor_batch_are_an_error():
    with pytest.raises(StageError, match=r"params\.yaml: no monitor\.batch to set"):
        set_batch("base:\n  seed: 1\n", "x.parquet")


def test_branch_names_are_safe_and_follow_the_batch(tmp_path):
    batch = tmp_path / "b.parquet"
    batch.write_bytes(b"one")
    first = branch_name(str(batch))
    batch.write_bytes(b"two")
    assert first != branch_name(str(batch)) and first.startswith("retrain/drift-")
    assert branch_name("s3://bucket/week 48.parquet?versionId=3") == "retrain/drift-week-48.parquet"


@pytest.mark.parametrize("batch", ["[w48].csv", "@b.csv", "*x.csv", "%x.csv", "true", "a: b.csv", 'say "hi".csv'])
def test_any_batch_name_survives_being_written_twice(repo, batch):
    once = set_batch((repo / "params.yaml").read_text(), "batches/week 48: late.csv")
    twice = set_batch(once, batch)
    assert yaml.safe_load(twice)["monitor"]["batch"] == batch


@pytest.mark.parametrize(
    "url", ["https://user:token@example.com/b.csv", "s3://bucket/b.parquet?X-Amz-Signature=abc", "https://h/b?token=1"]
)
def test_a_url_with_credentials_never_goes_into_params(repo, url):
    with pytest.raises(StageError, match="cannot go into a committed file") as caught:
        set_batch((repo / "params.yaml").read_text(), url)
    assert "token" not in str(caught.value) and "Signature" not in str(caught.value)


@pytest.mark.parametrize("name", ORDINARY)
def test_a_hostile_looking_batch_name_is_written_exactly(repo, name):
    """Shell syntax in a name is just a name: the monitor stage reads it from params, never a shell."""
    updated = set_batch((repo / "params.yaml").read_text(), name)
    assert yaml.safe_load(updated)["monitor"]["batch"] == os.path.normpath(name)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_batch_that_is_no_plain_path_never_reaches_params(repo, name):
    with pytest.raises(StageError, match=REFUSED[name]) as caught:
        set_batch((repo / "params.yaml").read_text(), name)
    assert str(caught.value).startswith("the batch for monitor.batch: ")


@pytest.mark.parametrize("ending", ["\n", ""])
def test_the_patch_applies_with_git_whatever_the_last_line(tmp_path, repo, monkeypatch, ending):
    """Made in memory (`difflib`), taken by `git apply` as the workflow's write-token job runs it."""
    import subprocess

    original = (repo / "params.yaml").read_text().rstrip("\n") + ending
    updated = set_batch(original, "data/batches/new.parquet")
    (tmp_path / "params.yaml").write_text(original)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    patch = params_patch("../params.yaml", original, updated)  # named from the checkout's root
    assert patch == params_patch(str(tmp_path / "params.yaml"), original, updated)
    assert patch.startswith("--- a/params.yaml\n+++ b/params.yaml\n")
    (tmp_path / "change.patch").write_text(patch)
    subprocess.run(["git", "apply", "change.patch"], cwd=tmp_path, check=True)
    assert (tmp_path / "params.yaml").read_text() == updated
