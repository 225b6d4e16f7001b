"""How often does the monitor cry wolf, and what does it catch? Seeded trials of the
monitor's settings (`params.yaml: monitor`) on your own data.

`reprokit drift-trials --sizes 500 5000 --trials 200` pools the prepared splits,
scores every row once with the package, and runs trials: each draws a reference (the
train split's size) and, from the rows left over, a batch of the given size, with
replacement. Both come from one distribution, so every verdict other than `ok` is a
false alarm. With `--shift KIND:SIZE` the batch is then shifted (numeric location in
standard deviations, numeric scale factor, a category's share, nulls) and re-scored, and
the share of trials whose verdict is not `ok` is the power. Results as JSON on stdout; on a
terminal, stderr shows the trials done of the total, the time spent and the time left.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

import numpy as np
import pandas as pd

from reprokit.core.progress import HELP as PROGRESS_HELP
from reprokit.core.progress import SILENT, Progress, progress

SHIFTS = ("location", "scale", "category", "nulls")


@dataclasses.dataclass
class Population:
    """Every prepared row as checked model inputs (text columns categorical), and its score."""

    contract: Any
    inputs: pd.DataFrame
    scores: np.ndarray
    reference_rows: int


def population(model, frames: list[pd.DataFrame], reference_rows: int) -> Population:
    from reprokit.model.scoring import check_records, is_text

    frame = pd.concat(frames, ignore_index=True)
    contract = model.contract
    checked = check_records({c: frame[c] for c in contract.feature_names}, len(frame), contract)
    kept = np.equal(checked.rejected, None)
    inputs = checked.inputs[kept].reset_index(drop=True)
    scores = model.probabilities(inputs)
    for feature in contract.features:
        if is_text(feature):
            inputs[feature.name] = inputs[feature.name].astype("category")
    return Population(contract, inputs, scores, reference_rows)


def shifted(pop: Population, batch: pd.DataFrame, kind: str, size: float, rng) -> pd.DataFrame:
    """`batch` with a shift of `kind` and `size` (see the module's description)."""
    from reprokit.model.scoring import is_text

    batch = batch.copy()
    numbers = [f.name for f in pop.contract.features if f.type in ("numeric", "integer")]
    if kind == "location":
        for name in numbers:
            batch[name] = batch[name] + size * pop.inputs[name].std()
    elif kind == "scale":
        for name in numbers:
            mean = pop.inputs[name].mean()
            batch[name] = mean + (batch[name] - mean) * size
    elif kind == "category":
        name = next(f.name for f in pop.contract.features if f.type == "categorical" and is_text(f))
        rarest = pop.inputs[name].value_counts().idxmin()
        column = batch[name].astype(object).to_numpy().copy()
        column[rng.random(len(batch)) < size] = rarest
        batch[name] = pd.Categorical(column, categories=pop.inputs[name].cat.categories)
    elif kind == "nulls":
        name = next((f.name for f in pop.contract.features if f.nullable), numbers[0])
        batch.loc[rng.random(len(batch)) < size, name] = np.nan
    else:
        raise ValueError(f"unknown shift {kind!r}; expected one of {', '.join(SHIFTS)}")
    return batch


def trial(pop: Population, n: int, seed: int, params, model=None, shift: tuple[str, float] | None = None) -> str:
    """One trial's verdict: a reference and a batch of `n` rows from one distribution, the
    batch shifted (and re-scored by `model`) when `shift` is given."""
    from reprokit.monitoring.batch_drift import drift_figures, verdict_of

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pop.inputs))
    ref_idx, pool = order[: pop.reference_rows], order[pop.reference_rows :]
    idx = rng.choice(pool, n, replace=True)
    reference = pop.inputs.iloc[ref_idx].reset_index(drop=True)
    batch = pop.inputs.iloc[idx].reset_index(drop=True)
    scores = pop.scores[idx]
    if shift is not None:
        batch = shifted(pop, batch, shift[0], shift[1], rng)
        scorable = batch.copy()
        for name in scorable.columns:
            if isinstance(scorable[name].dtype, pd.CategoricalDtype):
                scorable[name] = scorable[name].astype(object)
        scores = model.probabilities(scorable)
    if len(scores) > params.max_score_rows:
        scores = scores[np.sort(rng.choice(len(scores), params.max_score_rows, replace=False))]
    ok_ref, ok_cur = np.ones(len(reference), dtype=bool), np.ones(len(batch), dtype=bool)
    figures, _ = drift_figures(pop.contract, reference, ok_ref, batch, ok_cur, pop.scores[ref_idx], scores, params)
    return verdict_of(figures, params)["verdict"]


def run(
    model,
    pop: Population,
    sizes: list[int],
    trials: int,
    params,
    shift=None,
    first_seed: int = 0,
    done: Progress = SILENT,
) -> dict:
    """Per size: trials, alarms (verdicts other than `ok`) and their rate (`done` advances by
    one a trial)."""
    results = {}
    for n in sizes:
        verdicts = [trial(pop, n, first_seed + i, params, model, shift) for i in done.track(range(trials))]
        alarms = sum(v != "ok" for v in verdicts)
        results[str(n)] = {"trials": trials, "alarms": alarms, "rate": round(alarms / trials, 4)}
    return results


def parse_shift(text: str) -> tuple[str, float]:
    """`--shift KIND:SIZE` as (kind, size), or one clear error naming the value."""
    import math

    from reprokit.core.errors import StageError

    kind, _, size = text.partition(":")
    try:
        amount = float(size)
    except ValueError:
        amount = math.nan
    if kind not in SHIFTS or not math.isfinite(amount):
        raise StageError(f"--shift {text!r}: expected KIND:SIZE, KIND one of {', '.join(SHIFTS)} and SIZE a number")
    return kind, amount


def main(argv: list[str] | None = None) -> None:
    from reprokit.core.config import load_section
    from reprokit.core.running import add_debug_option, run_stage
    from reprokit.core.threads import thread_budget
    from reprokit.model.loading import load_model

    parser = argparse.ArgumentParser(prog="reprokit drift-trials", description=__doc__, epilog=PROGRESS_HELP)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5000, 50000])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--shift", default=None, help="KIND:SIZE, KIND one of " + ", ".join(SHIFTS))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="models/package")
    parser.add_argument("--train", default="data/prepared/train.parquet")
    parser.add_argument("--test", default="data/prepared/test.parquet")
    add_debug_option(parser)
    args = parser.parse_args(argv)

    def body() -> str:
        params = load_section("monitor", args.params)
        shift = parse_shift(args.shift) if args.shift else None
        train, test = pd.read_parquet(args.train), pd.read_parquet(args.test)
        with thread_budget(load_section("base", args.params).n_threads):
            model = load_model(args.model)
            pop = population(model, [train, test], len(train))
            with progress("drift trials", total=len(args.sizes) * args.trials, unit="trials") as done:
                results = run(model, pop, args.sizes, args.trials, params, shift, done=done)
        json.dump({"shift": args.shift, "results": results}, sys.stdout, indent=2)
        print()
        shifted = f", shift {args.shift}" if shift else ""
        return f"{args.trials} trials at each of {len(args.sizes)} batch sizes{shifted}"

    run_stage("drift-trials", body, debug=args.debug)


if __name__ == "__main__":
    main()
