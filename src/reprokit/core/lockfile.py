"""The runtime lock: the exact versions of the packages the pipeline runs with.

`requirements-runtime.txt` is `uv.lock` exported without the dev group and without the
project itself (`make runtime-lock` writes it; a test keeps it equal to what `uv.lock`
gives). Every stage in `dvc.yaml` depends on it instead of on `uv.lock`, so bumping a
dev tool re-runs nothing, and the package's environment files list its versions, not
those of whatever installer or build tools made the running environment. A plain
`pip install -r requirements-runtime.txt` installs the same versions as `uv sync`.
"""

from __future__ import annotations

import re
from pathlib import Path

from reprokit.core.config import ConfigError

RUNTIME_LOCK = "requirements-runtime.txt"

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;]+)\s*(?:;.*)?$")


def normalized(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503): `Scikit_Learn` is `scikit-learn`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(path: str | Path = RUNTIME_LOCK) -> dict[str, str]:
    """Normalized name -> exact version, for every package the lock pins."""
    versions = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if match is None:
            raise ConfigError(f"{path}:{number}: not an exact pin `name==version`: {line[:80]!r}")
        versions[normalized(match["name"])] = match["version"]
    return versions


def pins(names: tuple[str, ...], versions: dict[str, str]) -> list[str]:
    """`name==version` for each of `names`, as the lock's `versions` pin them."""
    missing = [name for name in names if normalized(name) not in versions]
    if missing:
        raise ConfigError(f"the runtime lock pins no version of {', '.join(missing)}")
    return [f"{name}=={versions[normalized(name)]}" for name in names]
