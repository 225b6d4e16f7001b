"""Any commit's state comes back byte for byte from the remote alone."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from dvcclone import ran_stages

pytestmark = pytest.mark.e2e

LEARNING_RATES = (0.05, 0.1, 0.2)


@pytest.fixture(scope="module")
def history(tmp_path_factory, reproduced):
    """Three commits with different params, each reproduced and pushed to a local remote."""
    from dvcclone import copy_clone

    clone = copy_clone(reproduced, tmp_path_factory.mktemp("history") / "repo")
    storage = tmp_path_factory.mktemp("storage")
    clone.dvc("remote", "modify", "--local", "local", "url", str(storage))
    states = {}
    for i, rate in enumerate(LEARNING_RATES):
        if i:
            clone.write_params(lambda p, r=rate: p["train"]["hist_gradient_boosting"].update(learning_rate=r))
            clone.dvc("repro")
            clone.git("commit", "-qam", f"learning rate {rate}")
        clone.git("tag", f"lr-{rate}")
        clone.dvc("push")
        states[f"lr-{rate}"] = clone.file_hashes(list(clone.locked_outputs()) + ["metrics/metrics.json"])
    return clone, states


def wipe(clone) -> None:
    """Lose the local cache and every output DVC stores: only git and the remote are left."""
    shutil.rmtree(clone.root / ".dvc" / "cache")
    in_git = set(clone.git("ls-files").split())
    for stage in clone.lock()["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] in in_git or any(p.startswith(out["path"] + "/") for p in in_git):
                continue  # a `cache: false` output: git restores it
            path = clone.root / out["path"]
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    assert "deleted:" in clone.dvc("status").stdout


def test_three_states_differ(history):
    _, states = history
    models = {state["models/model.skops"] for state in states.values()}
    assert len(models) == 3


@pytest.mark.parametrize("tag", [f"lr-{r}" for r in LEARNING_RATES])
def test_each_commit_is_restored_from_the_remote_alone(history, tag):
    clone, states = history
    wipe(clone)
    clone.git("checkout", "-q", tag)
    clone.dvc("pull")
    assert clone.file_hashes(states[tag]) == states[tag]
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout
    assert ran_stages(clone.dvc("repro").stdout) == []
    clone.git("checkout", "-q", "master" if "master" in clone.git("branch") else "main")


def test_single_file_from_an_old_revision(history, tmp_path):
    clone, states = history
    out = tmp_path / "old-model.skops"
    clone.dvc("get", ".", "models/model.skops", "--rev", "lr-0.05", "-o", str(out))
    assert hashlib.md5(out.read_bytes()).hexdigest() == states["lr-0.05"]["models/model.skops"]
    # or: take the old dvc.lock entry and check out that one output in place
    clone.run("git", "checkout", "lr-0.1", "--", "dvc.lock")
    missing = clone.dvc("checkout", "models/model.skops", check=False)  # the wiped cache lacks it
    assert missing.returncode != 0 and "Is your cache up to date?" in missing.stderr
    clone.dvc("pull", "models/model.skops")  # so fetch it from the remote
    assert clone.file_hashes(["models/model.skops"]) == {"models/model.skops": states["lr-0.1"]["models/model.skops"]}
    clone.run("git", "checkout", "HEAD", "--", "dvc.lock")
    clone.dvc("checkout", "models/model.skops")
    assert clone.file_hashes(["models/model.skops"])["models/model.skops"] == states["lr-0.2"]["models/model.skops"]


def test_checkout_refuses_to_overwrite_uncommitted_output_changes(history):
    clone, states = history
    card = clone.root / "models" / "model_card.md"
    card.write_text(card.read_text() + "\nMy notes, not saved anywhere else.\n")
    edited = card.read_text()
    clone.git("checkout", "-q", "lr-0.05")
    done = clone.dvc("checkout", check=False)
    assert done.returncode != 0
    assert "Can't remove the following unsaved files without confirmation" in done.stderr
    assert "models/model_card.md" in done.stderr
    assert card.read_text() == edited  # the edit is still there
    clone.git("checkout", "-q", "-")
    clone.dvc("checkout", "--force")  # the documented way to discard it
    assert clone.file_hashes(["models/model_card.md"]) == {
        "models/model_card.md": states["lr-0.2"]["models/model_card.md"]
    }
