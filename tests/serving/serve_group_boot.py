"""Run `reprokit ARGS...` as if only the `serve` dependency group were installed, as in the image.

    python serve_group_boot.py ALLOWED DUMP reprokit-args...

ALLOWED holds the group's distribution names, one a line. Any module whose file belongs to an
installed distribution outside them is not found (as where it is not installed), so a library's
optional import falls back as it does in the image; nor is their metadata. Once the file
DUMP + ".go" appears, DUMP gets, for every module loaded from an installed distribution, the
distributions owning its file, and each refused import with the file that asked for it
(tests/serving/test_serve_dependencies.py reads it).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
import threading
import time
import traceback


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def files_to_distributions() -> dict[str, set[str]]:
    """Every installed file, by absolute path, to the distributions whose RECORD lists it."""
    owners: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        name = normalized(dist.metadata["Name"])
        for file in dist.files or ():
            owners.setdefault(os.path.normpath(str(dist.locate_file(file))), set()).add(name)
    return owners


class OnlyTheGroup:
    """The meta path finder, in place of the interpreter's (which it asks): finds no module that
    they would load from a file no allowed distribution owns, so `import` raises and
    `importlib.util.find_spec` answers None, as for a module not installed. A file no
    distribution owns (the standard library, the project's own source) and a namespace
    package's directory are allowed."""

    def __init__(self, allowed: set[str], owners: dict[str, set[str]], finders: list) -> None:
        self.allowed, self.owners, self.finders, self.refused = allowed, owners, finders, []

    def find_spec(self, name, path=None, target=None):
        for finder in self.finders:
            if not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        owners = self.owners.get(os.path.normpath(spec.origin or ""), set())
        if owners and not owners & self.allowed:
            stack = [
                f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename
            ]
            asker = stack[-1].rsplit(":", 1)[0] if stack else "?"
            self.refused.append({"module": name, "distributions": sorted(owners), "asked_by": asker})
            print(f"serve_group_boot: refused {name} ({', '.join(sorted(owners))}):", *stack[-6:], file=sys.stderr)
            return None
        return spec

    def find_distributions(self, context=None):
        """Installed distributions' metadata (importlib.metadata asks): the allowed ones only."""
        context = context or importlib.metadata.DistributionFinder.Context()
        for finder in self.finders:
            for dist in getattr(finder, "find_distributions", lambda context: ())(context):
                if normalized(dist.metadata["Name"]) in self.allowed:
                    yield dist


def dump_when_asked(finder: OnlyTheGroup, out: str, before: set[str]) -> None:
    while not os.path.exists(out + ".go"):
        time.sleep(0.1)
    loaded = {}  # module: the distributions owning its file (a file may be in two: mlflow's, mlflow-skinny's)
    for name, module in list(sys.modules.items()):
        if name in before:  # loaded at start-up, by site (a .pth file): the interpreter's, not the service's
            continue
        owners = finder.owners.get(os.path.normpath(getattr(module, "__file__", None) or ""))
        if owners:
            loaded[name] = sorted(owners)
    with open(out + ".tmp", "w") as handle:
        json.dump({"loaded": loaded, "refused": finder.refused}, handle)
    os.replace(out + ".tmp", out)


def main() -> None:
    before = set(sys.modules)
    allowed_file, out, *argv = sys.argv[1:]
    with open(allowed_file) as handle:
        allowed = {normalized(line.strip()) for line in handle if line.strip()} | {"reprokit"}
    finder = OnlyTheGroup(allowed, files_to_distributions(), list(sys.meta_path))
    sys.meta_path[:] = [finder]
    threading.Thread(target=dump_when_asked, args=(finder, out, before), daemon=True).start()
    from reprokit.commands.cli import main as reprokit

    sys.argv = ["reprokit", *argv]
    reprokit(argv)


if __name__ == "__main__":
    main()
