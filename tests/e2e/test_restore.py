"""Any commit's state comes back byte for byte from the remote alone."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from dvcclone import ran_stages
from synthetic import make_loans

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
    clone.git("checkout", "-q", "-")  # back to the branch of the history, whatever the tested checkout's is named


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


def readme_commands(root, heading: str) -> list[str]:
    """The commands of every bash block in the README section under `heading`, comments dropped."""
    section = (root / "README.md").read_text().split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    blocks = [block.split("```", 1)[0] for block in section.split("```bash\n")[1:]]
    return [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]


def assert_exact(clone, command: str) -> None:
    """After `command`, as the README writes it: nothing for `dvc repro` to do, nothing for git to add."""
    clone.run("bash", "-euo", "pipefail", "-c", command)
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout, command
    assert clone.git("status", "--porcelain", "--untracked-files=all") == "", command


def test_restore_after_the_own_data_flow_and_back_is_exact(copy_of, own_data):
    """Every output holds exactly what its stage wrote for the restored state, whatever the other
    dataset left there (its columns, its images), in both directions."""
    clone = copy_of("restore-own-data")
    clone.git("checkout", "-q", "-B", "main")
    (clone.root / "data/raw").mkdir(parents=True)
    make_loans(600).to_csv(clone.root / "data/raw/loans.csv", index=False)
    clone.git("add", "data/raw/loans.csv")
    clone.git("commit", "-qm", "The loans table")  # the user's source file, in git
    clone.git("tag", "v1")  # still the telco pipeline: the README's milestone
    own_data(clone)  # the README's contract and `dvc repro`, not committed
    undo = "git checkout -- dataset.yaml dvc.lock metrics && dvc checkout"
    assert undo in readme_commands(clone.root, "## Use your own data")
    assert_exact(clone, undo)

    own_data(clone, ran=())  # again: every stage served by the run-cache
    clone.git("add", "-A")
    clone.git("commit", "-qm", "Train on the loans table")
    restore = readme_commands(clone.root, "### 3. Restore an old state")
    assert {"git checkout v1", "dvc checkout", "git checkout main && dvc checkout"} <= set(restore)
    assert_exact(clone, "git checkout v1 && dvc checkout")
    assert "telco" in (clone.root / "dataset.yaml").read_text()
    assert_exact(clone, "git checkout main && dvc checkout")
    assert "loans" in (clone.root / "dataset.yaml").read_text()
