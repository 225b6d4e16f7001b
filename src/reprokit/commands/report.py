"""A markdown report of what the workspace changed against a base git revision.

    reprokit report --base main --out reports/

Params that changed (`params.yaml` and `dataset.yaml`), every metric with base value,
new value and signed delta (the better direction marked), subgroup metrics, the
release-gate verdict where there is one, and ROC and precision-recall curves of base
and head on one figure each (PNG files next to the report).

Metrics and curve data are kept in git (`cache: false`), so the base side is read
with `git show` and needs no download. A base without `dvc.lock` or metrics (the
first pull request), equal base and head, and metrics added or removed all give a
report, never a crash.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import subprocess
from pathlib import Path
from typing import Any

import yaml

from reprokit.core.config import ConfigError, flatten
from reprokit.core.errors import yaml_problem

log = logging.getLogger("reprokit.report")

PARAMS_FILES = ("params.yaml", "dataset.yaml")
METRICS_FILES = (
    "metrics/metrics.json",
    "metrics/evaluation.json",
    "metrics/subgroups.json",
    "metrics/data_quality.json",
)
METRICS_TITLES = ("Metrics", "All evaluation figures", "Subgroup metrics", "Data quality")
GATE_FILE = "metrics/gate.json"
PACKAGE_DIR = "models/package"  # the gate's verdict is shown only for the package dvc.lock records
MONITOR_FILE = "metrics/monitor.json"
CURVES = {
    "roc": ("metrics/plots/roc.json", "fpr", "tpr", "False positive rate", "True positive rate"),
    "precision_recall": ("metrics/plots/precision_recall.json", "recall", "precision", "Recall", "Precision"),
}
TITLES = {"roc": "ROC curve (test)", "precision_recall": "Precision-recall curve (test)"}
HIGHER_IS_BETTER = ("roc_auc", "average_precision", "accuracy", "precision", "recall", "f1")
LOWER_IS_BETTER = ("log_loss", "brier", "auc_gap", "max_subgroup_auc_gap", "rows_dropped")


class ReportError(RuntimeError):
    """The report cannot be made (for example, the base revision does not exist)."""


def git_show(rev: str, path: str, root: Path) -> str | None:
    """The file's text at `rev`, or None if it did not exist there."""
    done = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def resolve(rev: str, root: Path) -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=root, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise ReportError(f"base revision {rev!r} is not a commit in {root} (fetch it, e.g. git fetch origin {rev})")
    return done.stdout.strip()


def parse(text: str | None, path: str) -> Any:
    """JSON or YAML text to data; None for a missing or unreadable file (reported, not fatal)."""
    if text is None:
        return None
    try:
        return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        log.warning("%s: cannot be read (%s); treated as missing", path, yaml_problem(exc))
        return None


def locked_outs(text: str | None, where: str) -> dict[str, str]:
    """Output path -> md5 of every output a dvc.lock text records; {} (with a warning) for a
    text that is not a lock DVC writes."""
    from reprokit.core.dvclock import lock_entries

    try:
        return {entry.path: entry.md5 for entry in lock_entries(text, where) if entry.kind == "out" and entry.md5}
    except ConfigError as exc:
        log.warning("%s; treated as missing", exc)
        return {}


@functools.lru_cache(maxsize=8)
def locked_file_md5s(rev: str, root: Path) -> dict[str, str]:
    """Output path -> md5 of every file output in `rev`'s dvc.lock (`rev` a commit id, as
    `build_report` resolves it: its dvc.lock never changes, so it is read once)."""
    outs = locked_outs(git_show(rev, "dvc.lock", root), f"dvc.lock at {rev}")
    return {path: md5 for path, md5 in outs.items() if not md5.endswith(".dir")}


def dvc_cached(rev: str, path: str, root: Path) -> str | None:
    """A DVC-tracked output's text at `rev`: the local DVC cache's copy of the md5 that
    `rev`'s dvc.lock records for it, or None (not an output there, or not in the cache)."""
    from reprokit.core.errors import StageError
    from reprokit.core.paths import cache_file

    md5 = locked_file_md5s(rev, root).get(path)
    if md5 is None:
        return None
    try:
        cached = cache_file(root, md5)
    except StageError as exc:
        log.warning("%s at %s: dvc.lock records %s; shown as missing", path, rev, exc)
        return None
    if cached.exists():
        return cached.read_text()
    log.warning("%s at %s is not in the local DVC cache (dvc fetch it): shown as missing", path, rev)
    return None


def read_side(rev: str | None, root: Path, path: str) -> Any:
    """A file from a revision (`rev`: git, or the DVC cache for DVC-tracked outputs) or from
    the workspace (`rev` None)."""
    if rev is None:
        file = root / path
        return parse(file.read_text(), path) if file.exists() else None
    text = git_show(rev, path, root)
    return parse(text if text is not None else dvc_cached(rev, path, root), path)


def numeric_leaves(data: Any) -> dict[str, float]:
    """Flattened numeric values: `test.roc_auc`, `groups.female.1.recall`, ..."""
    if not isinstance(data, dict):
        return {}
    flat = flatten(data)
    return {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def direction(key: str) -> str:
    """'higher', 'lower' or '' (no better direction) for a metric key."""
    last = key.rsplit(".", 1)[-1]
    if last in HIGHER_IS_BETTER:
        return "higher"
    if last in LOWER_IS_BETTER or key.split(".")[0] in LOWER_IS_BETTER:
        return "lower"
    return ""


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) and abs(value) < 1e6 else str(value)
    return f"`{value}`" if not isinstance(value, (int, float)) else str(value)


def delta_cell(key: str, old: float | None, new: float | None) -> str:
    if old is None or new is None:
        return "added" if old is None and new is not None else "removed" if new is None and old is not None else "—"
    change = new - old
    if change == 0:
        return "0"
    text = f"{change:+d}" if isinstance(change, int) else f"{change:+.4f}"
    better = direction(key)
    mark = ""
    if better:
        improved = change > 0 if better == "higher" else change < 0
        mark = " ✅" if improved else " ❌"
    return f"{text}{mark}"


def metric_rows(base: dict[str, float], head: dict[str, float]) -> list[str]:
    rows = []
    for key in sorted(set(base) | set(head)):
        old, new = base.get(key), head.get(key)
        arrow = {"higher": "↑", "lower": "↓"}.get(direction(key), "")
        rows.append(f"| {key} {arrow} | {fmt(old)} | {fmt(new)} | {delta_cell(key, old, new)} |")
    return rows


def param_rows(base: dict[str, Any], head: dict[str, Any]) -> list[str]:
    rows = []
    for key in sorted(set(base) | set(head)):
        old, new = base.get(key, "—"), head.get(key, "—")
        if old != new:
            show = lambda v: v if v == "—" else f"`{v}`"  # noqa: E731  params as written, not rounded
            rows.append(f"| `{key}` | {show(old)} | {show(new)} |")
    return rows


def read_params(rev: str | None, root: Path) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for path in PARAMS_FILES:
        data = read_side(rev, root, path)
        if isinstance(data, dict):
            params.update({f"{path}:{k}": v for k, v in flatten(data).items()})
    return params


def read_metrics(rev: str | None, root: Path) -> dict[str, dict[str, float]]:
    return {path: numeric_leaves(read_side(rev, root, path)) for path in METRICS_FILES}


def curve_points(data: Any, x: str, y: str) -> tuple[list[float], list[float]] | None:
    if not isinstance(data, list) or not data:
        return None
    try:
        return [float(row[x]) for row in data], [float(row[y]) for row in data]
    except (KeyError, TypeError, ValueError):
        return None


def compare_plots(base_rev: str, root: Path, out_dir: Path) -> list[Path]:
    """ROC and precision-recall of base and head on one figure each."""
    from reprokit.core.figures import drawing, save_png

    images = []
    with drawing() as plt:
        for name, (path, x, y, xlabel, ylabel) in CURVES.items():
            sides = {
                "base": curve_points(read_side(base_rev, root, path), x, y),
                "head": curve_points(read_side(None, root, path), x, y),
            }
            if not any(sides.values()):
                continue
            fig, ax = plt.subplots(figsize=(5, 5))
            for label, points in sides.items():
                if points:
                    ax.plot(*points, label=label, linestyle="--" if label == "base" else "-")
            ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{TITLES[name]}: base vs head", xlim=(0, 1), ylim=(0, 1.02))
            ax.legend(loc="lower right" if name == "roc" else "lower left")
            image = out_dir / f"{name}_compare.png"
            save_png(fig, image)
            images.append(image)
    return images


def head_package_md5(root: Path) -> str | None:
    """The package's md5 that the workspace's dvc.lock records (the head's package)."""
    lock = root / "dvc.lock"
    return locked_outs(lock.read_text() if lock.exists() else None, "dvc.lock").get(PACKAGE_DIR)


def gate_section(gate: Any, head_package: str | None) -> list[str]:
    """The gate's verdict, only when it was measured for the head's package: a verdict left in
    `metrics/gate.json` from another package (the committed record, a gate that could not run)
    is never shown as the head's."""
    if not isinstance(gate, dict):
        return []
    measured = gate.get("challenger_package")
    if measured != head_package or head_package is None:
        return [
            "## Release gate",
            "",
            f"No verdict for this head's package (`{head_package}`): `{GATE_FILE}` was measured for "
            f"`{measured}`. Run `reprokit gate --package models/package` on this head and commit `{GATE_FILE}`.",
            "",
        ]
    verdict = "✅ passed" if gate.get("passed") else "❌ failed"
    version = f" (version {gate['challenger_version']})" if gate.get("challenger_version") else ""
    lines = ["## Release gate", "", f"Verdict: **{verdict}**{version}", ""]
    checks = gate.get("checks")
    if isinstance(checks, dict) and checks:
        lines += ["| check | value | limit | result |", "| --- | ---: | ---: | --- |"]
        for name, check in sorted(checks.items()):
            if isinstance(check, dict):
                result = "✅" if check.get("passed") else "❌"
                lines.append(f"| {name} | {fmt(check.get('value'))} | {fmt(check.get('limit'))} | {result} |")
        lines.append("")
    return lines


def drift_section(base: Any, head: Any) -> list[str]:
    """The monitor's verdict on its batch, base and head, and the drift figures that changed
    (PSI per column and of the scores, null rates, the label figures), folded."""
    if not isinstance(head, dict) or "verdict" not in head:
        return []
    base = base if isinstance(base, dict) and "verdict" in base else {}
    mark = {"ok": "✅", "warn": "⚠️", "alert": "🚨"}.get(head["verdict"], "")
    drifted = ", ".join(f"`{name}`" for name in head.get("drifted_columns", [])) or "none"
    before = ""
    if base:
        on = f" on `{base['batch']}`" if base.get("batch") else ""
        before = f" (base: `{base['verdict']}`{on})"
    verdict = f"**{mark} {head['verdict']}**{before}"
    lines = [
        f"## Drift (`{MONITOR_FILE}`)",
        "",
        f"Verdict on `{head.get('batch', 'the batch')}`: {verdict}. Drifted columns: {drifted}.",
        "",
    ]
    wanted = (".psi", "drifted_share", "rejected_rows", ".current_rate", "auc_drop", "roc_auc_current", "level")
    old = {k: v for k, v in numeric_leaves(base).items() if k.endswith(wanted)}
    new = {k: v for k, v in numeric_leaves(head).items() if k.endswith(wanted)}
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    if changed:
        table = ["| figure | base | head | change |", "| --- | ---: | ---: | ---: |"]
        table += metric_rows({k: old[k] for k in changed if k in old}, {k: new[k] for k in changed if k in new})
        lines += ["<details><summary>Drift figures that changed</summary>", "", *table, "", "</details>", ""]
    return lines


def build_report(base: str, root: Path, out_dir: Path, images_note: str | None = None) -> str:
    """Write the report and its images into `out_dir`; return the markdown.

    With `images_note`, the images are still written but the markdown shows the note
    instead of embedding them (for a comment whose images must not be uploaded).
    """
    base_rev = resolve(base, root)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"--out {out_dir} is a file: it names the folder for report.md and its images")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"--out {out_dir}: cannot make the folder ({exc.strerror or type(exc).__name__})") from None
    head_params, base_params = read_params(None, root), read_params(base_rev, root)
    head_metrics, base_metrics = read_metrics(None, root), read_metrics(base_rev, root)
    has_base_lock = git_show(base_rev, "dvc.lock", root) is not None
    lines = [f"# Pipeline report: workspace vs `{base}` ({base_rev[:8]})", ""]
    if not has_base_lock or not any(base_metrics.values()):
        lines += [f"The base `{base}` has no pipeline results yet (no `dvc.lock` or metrics): every value is new.", ""]
    changed = param_rows(base_params, head_params)
    lines += ["## Params", ""]
    lines += (["| param | base | head |", "| --- | --- | --- |", *changed] if changed else ["No param changed."]) + [""]
    for path, title in zip(METRICS_FILES, METRICS_TITLES, strict=True):
        old, new = base_metrics[path], head_metrics[path]
        if not old and not new:
            continue
        if path.endswith("subgroups.json"):  # per-group counts are context, not results
            keep = lambda k: not k.endswith((".n", ".positive_rate", ".predicted_positive_rate"))  # noqa: E731
            old, new = {k: v for k, v in old.items() if keep(k)}, {k: v for k, v in new.items() if keep(k)}
        table = ["| metric | base | head | change |", "| --- | ---: | ---: | ---: |", *metric_rows(old, new)]
        if path == METRICS_FILES[0]:
            lines += [f"## {title} (`{path}`)", "", *table, ""]
        else:  # long tables fold away in the pull-request comment
            lines += [f"<details><summary>{title} (<code>{path}</code>)</summary>", "", *table, "", "</details>", ""]
    lines += drift_section(read_side(base_rev, root, MONITOR_FILE), read_side(None, root, MONITOR_FILE))
    lines += gate_section(read_side(None, root, GATE_FILE), head_package_md5(root))
    images = compare_plots(base_rev, root, out_dir)
    if images:
        shown = [images_note] if images_note else [f"![{p.stem}]({p.name})" for p in images]
        lines += ["## Curves", "", *shown, ""]
    lines += ["↑ higher is better, ↓ lower is better; ✅ better, ❌ worse than the base.", ""]
    text = "\n".join(lines)
    (out_dir / "report.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="main", help="git revision to compare with (default: main)")
    parser.add_argument("--out", default="reports", help="folder for report.md and its images")
    parser.add_argument("--root", default=".", help="repository root")
    parser.add_argument(
        "--images-note",
        help="show this text instead of embedding the curve images (they are still written to --out)",
    )
    args = parser.parse_args(argv)
    from reprokit.core.redaction import configure_logging

    configure_logging()
    try:
        build_report(args.base, Path(args.root).resolve(), Path(args.out), args.images_note)
    except ReportError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
    log.info("report written to %s", Path(args.out) / "report.md")


if __name__ == "__main__":
    main()
