"""The one `dvc.lock` reader (`reprokit.core.dvclock`), used by `repro-check` and the report."""

from __future__ import annotations

import pytest
import yaml

from reprokit.core.config import ConfigError
from reprokit.core.dvclock import Locked, lock_entries


def test_every_dep_and_out_of_the_committed_lock(repo):
    text = (repo / "dvc.lock").read_text()
    entries = lock_entries(text)
    stages = yaml.safe_load(text)["stages"]
    assert len(entries) == sum(len(stage.get("deps", [])) + len(stage.get("outs", [])) for stage in stages.values())
    package = next(out["md5"] for out in stages["package"]["outs"] if out["path"] == "models/package")
    assert Locked("package", "out", "models/package", package) in entries and package.endswith(".dir")
    assert all(len(entry.md5) in (32, 36) for entry in entries)


def test_an_md5_of_digits_stays_text_as_dvc_writes_it():
    """DVC writes YAML 1.2; a reader with 1.1 rules would turn some hashes into numbers."""
    lock = "schema: '2.0'\nstages:\n  s:\n    outs:\n    - path: a\n      md5: '12345678901234567890123456789012'\n"
    assert lock_entries(lock) == [Locked("s", "out", "a", "12345678901234567890123456789012")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stages: [", "not valid YAML"),
        ("- a\n- b\n", "no `stages` mapping"),
        ("stages: 3\n", "no `stages` mapping"),
    ],
)
def test_a_text_that_is_no_lock_is_one_error_naming_it(text, message):
    with pytest.raises(ConfigError, match=rf"^dvc\.lock at abc: {message}"):
        lock_entries(text, "dvc.lock at abc")


def test_odd_entries_are_skipped_not_fatal():
    lock = "stages:\n  a: 3\n  b:\n    outs: [1, {path: 2}, {path: x, md5: [1]}, {path: y, md5: abc}]\n    deps: {}\n"
    assert lock_entries(lock) == [Locked("b", "out", "x", ""), Locked("b", "out", "y", "abc")]
    assert lock_entries(None) == lock_entries("") == []
