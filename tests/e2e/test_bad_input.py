"""Every bad source file in the corpus, through the real `dvc repro`: one clear error, and
nothing good lost.

For each kind: `dvc repro` exits non-zero with our one error line (no traceback); no stage
after `prepare` runs; `dvc.lock` is unchanged; `git checkout` of the git-kept files and
`dvc checkout` give back every output byte for byte. At the end a corrected table
reproduces the whole pipeline.
"""

from __future__ import annotations

import shutil

import pytest
import yaml
from badfiles import CORPUS, write_case
from dvcclone import ran_stages
from synthetic import loans_contract, make_loans

pytestmark = pytest.mark.e2e

SOURCE = "data/raw/loans.csv"
# Kinds that need another file name (and so another contract) are covered in-process
# (tests/data/test_bad_sources.py); a missing file is DVC's own error about a missing dependency.
KINDS = sorted(k for k, (name, data, _) in CORPUS.items() if name == "loans.csv" and data != "absent")


def error_messages(stderr: str) -> list[str]:
    """Our error records in a stage's stderr: the `prepare failed:` line and the `  - ` lines
    that continue it (one per broken column and check)."""
    messages: list[str] = []
    for line in stderr.splitlines():
        if "prepare failed:" in line:
            messages.append(line)
        elif line.startswith("  - ") and messages:
            messages[-1] += "\n" + line
    return messages


def test_every_bad_file_stops_at_prepare_and_loses_nothing(make_clone, tmp_path):
    clone = make_clone("bad-input")
    (clone.root / "data/raw").mkdir(parents=True)
    make_loans(600).to_csv(clone.root / SOURCE, index=False)
    (clone.root / "dataset.yaml").write_text(yaml.safe_dump(loans_contract(SOURCE), sort_keys=False))
    clone.dvc("repro")
    clone.git("add", "-A")
    clone.git("commit", "-qm", "The last good state")
    locked = list(clone.locked_outputs())
    good = clone.file_hashes(locked + [SOURCE, "dvc.lock"])
    problems = []
    for kind in KINDS:
        (clone.root / SOURCE).unlink()
        staging = tmp_path / kind.replace(" ", "-")
        staging.mkdir()
        bad = write_case(staging, kind)
        if bad.is_dir():
            (clone.root / SOURCE).mkdir()
        else:
            shutil.copyfile(bad, clone.root / SOURCE)
        done = clone.dvc("repro", check=False)
        ours = error_messages(done.stderr)
        if done.returncode == 0 or len(ours) != 1 or SOURCE not in ours[0] or "Traceback" in done.stderr:
            problems.append(f"{kind}: exit {done.returncode}, errors {ours}\n{done.stderr[-2000:]}")
        elif not all(phrase in ours[0] for phrase in CORPUS[kind][2]):
            problems.append(f"{kind}: {ours[0]}")
        if ran_stages(done.stdout) != ["prepare"]:
            problems.append(f"{kind}: ran {ran_stages(done.stdout)}")
        if clone.file_hashes(["dvc.lock"]) != {"dvc.lock": good["dvc.lock"]}:
            problems.append(f"{kind}: dvc.lock changed")
        path = clone.root / SOURCE
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        clone.git("checkout", "--", "metrics", SOURCE)
        clone.dvc("checkout")
        if clone.file_hashes(list(good)) != good:
            problems.append(f"{kind}: the last good state did not come back byte for byte")
    assert not problems, "\n".join(problems)
    assert len(KINDS) >= 20
    make_loans(650, seed=9).to_csv(clone.root / SOURCE, index=False)  # the corrected table
    done = clone.dvc("repro")
    assert ran_stages(done.stdout) == ["prepare", "featurize", "train", "evaluate", "package", "batches", "monitor"]
