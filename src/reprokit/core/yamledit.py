"""Editing `params.yaml` in place: the one way the project changes it (`tune --apply`,
`retrain`'s pull request). Comments, quotes, `null`s, order and every line not set stay as
they are; the result is read back and must hold exactly the new values."""

from __future__ import annotations

from typing import Any

from reprokit.core.config import ConfigError
from reprokit.core.errors import yaml_problem


def _same_value(old: Any, new: Any) -> bool:
    """Whether a loaded YAML value (ruamel's str, int and float subclasses) is `new`: equal and
    of the same kind, so `1` is not `true` nor `1.0`."""

    def kind(value: Any) -> type:
        return next((t for t in (bool, int, float, str) if isinstance(value, t)), type(value))

    return kind(old) is kind(new) and old == new


def edit_yaml(text: str, changes: dict[tuple[str, ...], Any], where: str) -> str:
    """`text` with each key path in `changes` set to its value, everything else kept as it is
    (comments, quotes, `null`s, order): the one way the project edits `params.yaml`. A value
    already there is left as written; a new string value is written double-quoted; every key
    but the last must exist (a new last key is added at the end of its mapping, as
    `tune --apply` does for a hyperparameter params.yaml lacks).
    The result is read back with DVC's rules and must hold exactly the new values."""
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    editor = YAML()
    editor.preserve_quotes = True
    editor.representer.add_representer(type(None), lambda dumper, _: dumper.represent_scalar(NULL_TAG, "null"))
    try:
        data = editor.load(text)
    except YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {yaml_problem(exc)}") from None
    touched, added = set(), False  # the lines of the keys set, and whether a key was added
    for path, value in changes.items():
        parent = data
        for key in path[:-1]:
            if not isinstance(parent, dict) or key not in parent:
                raise ConfigError(f"{where}: no {'.'.join(path)} to set")
            parent = parent[key]
        if not isinstance(parent, dict):
            raise ConfigError(f"{where}: no {'.'.join(path)} to set")
        if path[-1] in parent and _same_value(parent[path[-1]], value):
            continue  # already so: left as written (its quotes, `1.0e-3` or `0x10` too)
        try:
            touched.add(parent.lc.key(path[-1])[0])
        except KeyError:  # a new key, or one a merge key (`<<: *base`) brings: written as ruamel writes it
            added = True
        parent[path[-1]] = DoubleQuotedScalarString(value) if isinstance(value, str) else value
    buffer = io.StringIO()
    editor.dump(data, buffer)
    updated = _untouched_lines_kept(text, buffer.getvalue(), touched, added)
    reread = YAML(typ="safe").load(updated)
    for path, value in changes.items():
        found = reread
        for key in path:
            found = found[key]
        if found != value or type(found) is not type(value):
            raise ConfigError(f"{where}: could not write {'.'.join(path)} as {value!r}")
    return updated


NULL_TAG = "tag:yaml.org,2002:null"


def _untouched_lines_kept(original: str, dumped: str, touched: set[int], added: bool) -> str:
    """`dumped` (ruamel's round trip of `original` with some keys set) with every line it
    changed outside those keys' lines (`touched`, 0-based) put back as it was: a round trip
    writes an empty null as `null`, or re-spaces a comment. Lines it inserted stay when a key
    was `added`. Used only if it reads as the same document, else `dumped` as it is."""
    import difflib

    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    before, after = original.splitlines(keepends=True), dumped.splitlines(keepends=True)
    kept: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes():
        ours = any(i1 <= line < max(i2, i1 + 1) for line in touched)
        kept += after[j1:j2] if tag == "equal" or ours or (tag == "insert" and added) else before[i1:i2]
    merged = "".join(kept)
    safe = YAML(typ="safe")
    try:
        same = safe.load(merged) == safe.load(dumped)
    except YAMLError:  # lines of two indent widths put together: not a document
        same = False
    return merged if same else dumped
