"""Reading `dvc.lock`: one reader for the reproducibility gate and the pull-request report.

A lock is read with the YAML rules DVC writes it by (ruamel.yaml, YAML 1.2). A text that is
not a lock DVC writes is a `ConfigError` naming it; entries of an odd shape are skipped (a
pull request's lock is untrusted text, and the report only shows what it can read).
"""

from __future__ import annotations

import dataclasses

from reprokit.core.config import ConfigError
from reprokit.core.errors import yaml_problem


@dataclasses.dataclass(frozen=True)
class Locked:
    """One dep or out a lock records: its stage, `dep` or `out`, path and md5 ("" when none)."""

    stage: str
    kind: str
    path: str
    md5: str


def lock_entries(text: str | None, where: str = "dvc.lock") -> list[Locked]:
    """Every dep and out of a `dvc.lock` text, in the lock's order; [] for no text."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if not text:
        return []
    try:
        lock = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {yaml_problem(exc)}") from None
    stages = lock.get("stages") if isinstance(lock, dict) else None
    if not isinstance(stages, dict):
        raise ConfigError(f"{where}: no `stages` mapping: not a lock file DVC writes")
    entries = []
    for stage, entry in stages.items():
        for kind in ("deps", "outs"):
            items = entry.get(kind) if isinstance(entry, dict) else None
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and isinstance(item.get("path"), str):
                    md5 = item.get("md5")
                    entries.append(Locked(str(stage), kind[:-1], item["path"], md5 if isinstance(md5, str) else ""))
    return entries
