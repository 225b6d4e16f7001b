"""Stage `train`: fit the model chosen in `params.yaml` on the featurized training split.

The fit runs on exactly `base.n_threads` threads on any machine (`thread_budget(...,
exact=True)`): gradient boosting stores the thread count it used, and sums gradients in
parallel, so otherwise the model's bytes would depend on the machine's core count. A
random forest is fitted with that many jobs and saved with none, so its predictions are
summed in one fixed order.
"""

from __future__ import annotations

import argparse

from reprokit.core.artifacts import read_features, save_skops
from reprokit.core.config import StageParams
from reprokit.core.contract import load_stage_contract
from reprokit.core.running import add_debug_option, run_stage
from reprokit.model.estimators import fit_xy

# The keys this stage reads: exactly its params in dvc.yaml (tests/code/test_pipeline_definition.py).
PARAMS = ("base.seed", "base.n_threads", "train")
CONTRACT = ("target",)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; `dvc.yaml` passes every path."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_debug_option(parser)
    parser.add_argument("--contract", default="dataset.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True)
    parser.add_argument("--model-out", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> str:
        contract = load_stage_contract("train", CONTRACT, args.contract)
        stage_params = StageParams("train", PARAMS, args.params)
        params = stage_params.section("train")
        seed, n_threads = stage_params.value("base.seed"), stage_params.value("base.n_threads")
        x, y = read_features(args.train, contract.target.column)
        model = fit_xy(x, y, params, seed, n_threads)
        save_skops(model, args.model_out)
        return f"{params.model} fitted on {len(x)} rows x {x.shape[1]} features"

    run_stage("train", body, debug=args.debug)


if __name__ == "__main__":
    main()
