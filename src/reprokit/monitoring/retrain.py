"""From a monitor verdict to a retraining pull request: the logic of the `monitor` workflow.

`reprokit retrain check BATCH OUT` runs the monitor on BATCH (the latest batch:
a path or an fsspec URL) into OUT/monitor/, and writes the verdict to `$GITHUB_OUTPUT`
(`verdict=ok|warn|alert`) when that is set. On an alert it also prepares, in OUT/retrain/,
everything the pull request needs, so that the job that holds a write token runs none of
the repository's code:

- `change.patch`: `params.yaml` with `monitor.batch` pointing at BATCH (comments kept),
  so the pull request's own CML report shows the drift against the base branch;
- `branch.txt` (`retrain/drift-<first 12 of the batch's md5 or its name>`), `title.txt`
  and `body.md` (the verdict, the drifted columns with their PSI, what to do next).
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from reprokit.core.errors import StageError
from reprokit.core.running import add_debug_option, run_stage

log = logging.getLogger("reprokit.retrain")


def set_batch(params_text: str, batch: str) -> str:
    """`params.yaml` text with `monitor.batch` set to `batch` (double-quoted), everything else
    kept as it is, comments included. Only a plain path inside the repository or a storage URL
    without credentials or query is taken (`reprokit.core.paths.batch_location`): the file is
    committed, and the batch's name comes from a workflow input or an object key."""
    from reprokit.core.config import ConfigError
    from reprokit.core.paths import batch_location
    from reprokit.core.yamledit import edit_yaml

    batch = batch_location(batch, "the batch for monitor.batch")
    try:
        return edit_yaml(params_text, {("monitor", "batch"): batch}, "params.yaml")
    except ConfigError as exc:
        raise StageError(str(exc)) from None


def pull_request_text(figures: dict, batch: str) -> tuple[str, str]:
    """The pull request's title and body."""
    drifted = figures["drifted_columns"]
    from reprokit.core.redaction import redact

    batch = redact(batch)
    title = f"Retrain: drift alert on {Path(batch).name}"
    lines = [
        f"The scheduled monitor raised an **{figures['verdict']}** on `{batch}` "
        f"({figures['rows']} rows, {figures['rejected_rows']} breaking the contract), "
        f"model version `{figures.get('model_version')}`.",
        "",
        "| what | figure | level |",
        "| --- | ---: | --- |",
    ]
    for name in drifted:
        entry = figures["features"][name]
        lines.append(f"| `{name}` PSI | {entry['psi']} | {entry['level']} |")
    for name in figures["missing_changed"]:
        entry = figures["missing"][name]
        lines.append(f"| `{name}` null rate | {entry['reference_rate']} → {entry['current_rate']} | warn |")
    prediction = figures["prediction"]
    lines.append(f"| scores PSI | {prediction['psi']} | {prediction['level']} |")
    labels = figures.get("labels")
    if labels and "auc_drop" in labels:
        lines.append(
            f"| ROC AUC | {labels['roc_auc_reference']} → {labels['roc_auc_current']} | {labels['auc_level']} |"
        )
    lines += [
        "",
        f"Drifted columns: {', '.join(f'`{n}`' for n in drifted) or 'none'}.",
        "",
        "This pull request points `monitor.batch` at the batch, so the metrics report below compares "
        "its drift with the base branch. To retrain, add the batch's labelled rows to the source "
        "table `dataset.yaml` names, run `dvc repro`, and push: the report then shows the new model "
        "against the champion, and the release gate decides.",
    ]
    return title, "\n".join(lines) + "\n"


def branch_name(batch: str) -> str:
    path = Path(batch)
    if path.is_file():
        from reprokit.core.artifacts import md5_file

        digest = md5_file(path)[:12]  # read in blocks: a batch can be larger than memory
    else:
        digest = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(batch.rsplit("?", 1)[0]).name)[:40]
    return f"retrain/drift-{digest}"


def params_patch(params: str, original: str, updated: str) -> str:
    """The change from `original` to `updated` as a patch of the file `params` that `git apply`
    takes at the root of the checkout it lies in (from here outside one); made in memory: the
    file itself is never touched."""
    where = Path(params).resolve()
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=where.parent, capture_output=True, text=True, timeout=30
        )
        root = Path(top.stdout.strip()).resolve() if top.returncode == 0 else Path.cwd().resolve()
    except (OSError, subprocess.TimeoutExpired):
        root = Path.cwd().resolve()
    path = Path(os.path.relpath(where, root)).as_posix()
    lines = difflib.unified_diff(
        original.splitlines(keepends=True), updated.splitlines(keepends=True), f"a/{path}", f"b/{path}"
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def check(batch: str, out: Path, params: str = "params.yaml") -> str:
    """Run the monitor on `batch` into `out`/monitor; prepare the pull request on an alert.
    With `monitor.enforce: true` the monitor exits 1 on an alert: that is its verdict, not a
    failure. Everything the pull request needs is made before anything is written."""
    import shutil

    monitor_dir = out / "monitor"
    figures_path = monitor_dir / "monitor.json"
    shutil.rmtree(out / "retrain", ignore_errors=True)  # a pull request is prepared only for this alert
    figures_path.unlink(missing_ok=True)  # an earlier run's verdict is never taken for this one's
    command = [sys.executable, "-m", "reprokit.monitoring.monitor", batch, "--params", params]
    command += ["--metrics-out", str(figures_path)]
    done = subprocess.run(command, text=True, stderr=subprocess.PIPE)
    sys.stderr.write(done.stderr)
    figures = json.loads(figures_path.read_text()) if figures_path.exists() else {}
    verdict = figures.get("verdict")
    if not (done.returncode == 0 or (done.returncode == 1 and verdict == "alert")) or verdict is None:
        raise StageError(f"the monitor failed on {batch}")
    if verdict == "alert":
        original = Path(params).read_text()
        patch = params_patch(params, original, set_batch(original, batch))
        title, body = pull_request_text(figures, batch)
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a") as handle:
            handle.write(f"verdict={verdict}\n")
    if verdict == "alert":
        retrain = out / "retrain"
        retrain.mkdir(parents=True, exist_ok=True)
        (retrain / "change.patch").write_text(patch)
        (retrain / "branch.txt").write_text(branch_name(batch) + "\n")
        (retrain / "title.txt").write_text(title + "\n")
        (retrain / "body.md").write_text(body)
    return f"{batch}: {verdict}" + (
        f"; retraining pull request prepared in {out / 'retrain'}" if verdict == "alert" else ""
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="reprokit retrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_debug_option(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("check", help="monitor the latest batch; prepare a retraining pull request on an alert")
    run.add_argument("batch", help="the latest batch: CSV or Parquet, a path or an fsspec URL")
    run.add_argument("out", help="folder for monitor/ and retrain/")
    run.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    run_stage("retrain", lambda: check(args.batch, Path(args.out), args.params), debug=args.debug)


if __name__ == "__main__":
    main()
