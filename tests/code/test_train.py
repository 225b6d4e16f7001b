from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from reprokit.core.artifacts import dump_skops
from reprokit.core.config import MODEL_KINDS, TrainParams
from reprokit.core.errors import StageError
from reprokit.model.estimators import build_model, fit

HYPER = {
    "hist_gradient_boosting": {"max_iter": 30, "learning_rate": 0.1},
    "random_forest": {"n_estimators": 20, "max_depth": 4},
    "logistic_regression": {"C": 0.5, "max_iter": 200},
}


def params(kind: str, **override) -> TrainParams:
    hyper = {k: dict(v) for k, v in HYPER.items()}
    hyper[kind].update(override)
    return TrainParams(kind, **hyper)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(300, 5)), columns=[f"f{i}" for i in range(5)])
    frame["y"] = (frame["f0"] - frame["f1"] + rng.normal(scale=0.5, size=300) > 0).astype(int)
    return frame


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_each_model_kind_uses_its_params_and_seed(kind):
    model = build_model(params(kind), seed=123)
    assert model.get_params()["random_state"] == 123
    for key, value in HYPER[kind].items():
        assert model.get_params()[key] == value


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_fit_is_byte_reproducible_and_learns(kind, features):
    first = fit(features, "y", params(kind), seed=5)
    second = fit(features, "y", params(kind), seed=5)
    assert dump_skops(first) == dump_skops(second)
    accuracy = (first.predict(features.drop(columns="y")) == features["y"]).mean()
    assert accuracy > 0.8


def test_seed_changes_a_random_forest(features):
    one = fit(features, "y", params("random_forest"), seed=1)
    two = fit(features, "y", params("random_forest"), seed=2)
    assert dump_skops(one) != dump_skops(two)


def test_a_random_forest_is_stored_without_parallelism(features):
    """Fitted with two jobs, saved with none: predicting sums the trees in one fixed order,
    and the bytes are those of a one-job fit (the trees do not depend on the job count)."""
    model = fit(features, "y", params("random_forest"), seed=0, n_threads=2)
    assert model.get_params()["n_jobs"] is None
    assert dump_skops(model) == dump_skops(fit(features, "y", params("random_forest"), seed=0, n_threads=1))


def test_thread_limit_is_what_the_model_records(features):
    model = fit(features, "y", params("hist_gradient_boosting"), seed=0)
    # The bin mapper stores the OpenMP thread count in the model's bytes: fixed, not the machine's cores.
    assert model._bin_mapper.n_threads == 1


def test_a_fit_that_cannot_honour_the_budget_is_refused(features, monkeypatch):
    """A scikit-learn that runs another thread count (built without OpenMP, say) would write
    other bytes than every other machine: one clear error instead of a silent difference."""
    import sklearn.ensemble._hist_gradient_boosting.gradient_boosting as hgb

    monkeypatch.setattr(hgb, "_openmp_effective_n_threads", lambda *args, **kwargs: 1)
    with pytest.raises(StageError, match=r"base.n_threads is 2, but this scikit-learn fitted with 1 thread"):
        fit(features, "y", params("hist_gradient_boosting"), seed=0, n_threads=2)


FIT_ON_CPUS = """
import hashlib, os, sys
import numpy as np, pandas as pd
cpus = sorted(os.sched_getaffinity(0))
os.sched_setaffinity(0, cpus[: int(sys.argv[1])])
from reprokit.core.artifacts import dump_skops
from reprokit.core.config import TrainParams
from reprokit.model.estimators import fit
rng = np.random.default_rng(2)
frame = pd.DataFrame(rng.normal(size=(20000, 6)), columns=[f"f{i}" for i in range(6)])
frame["y"] = (frame["f0"] + rng.normal(size=20000) > 0).astype(int)
hyper = {"max_iter": 20, "early_stopping": False}
model = fit(frame, "y", TrainParams("hist_gradient_boosting", hyper, {}, {}), seed=0, n_threads=int(sys.argv[2]))
print(len(os.sched_getaffinity(0)), model._bin_mapper.n_threads, hashlib.sha256(dump_skops(model)).hexdigest())
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity (Linux)")
def test_a_fit_runs_exactly_its_thread_budget_whatever_the_cores():
    """A two-thread fit in a process that may use one CPU (a smaller machine, a container's
    cpuset) runs two threads, as on a bigger one: the model's bytes are the same."""
    runs = {}
    for cpus in (1, 2):
        done = subprocess.run([sys.executable, "-c", FIT_ON_CPUS, str(cpus), "2"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        seen, threads, digest = done.stdout.split()
        runs[cpus] = (threads, digest)
        assert threads == "2", f"on {seen} CPU(s) the fit recorded {threads} thread(s), not the budget's 2"
    assert runs[1] == runs[2]


@pytest.mark.parametrize(
    "kind, override, message",
    [
        ("hist_gradient_boosting", {"learning_rat": 0.1}, "train.hist_gradient_boosting has a bad hyperparameter"),
        ("random_forest", {"n_estimators": -3}, "train.random_forest: The 'n_estimators' parameter"),
        ("logistic_regression", {"C": "big"}, "train.logistic_regression: The 'C' parameter"),
    ],
)
def test_bad_hyperparameters_are_named(kind, override, message, features):
    with pytest.raises(StageError) as info:
        fit(features, "y", params(kind, **override), seed=0)
    assert message in str(info.value)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_the_thread_budget_must_be_a_positive_whole_number(bad, features):
    with pytest.raises(StageError, match="base.n_threads must be a whole number of at least 1"):
        fit(features, "y", params("logistic_regression"), seed=0, n_threads=bad)


# As OpenMP itself reports them (OMP_DISPLAY_ENV=VERBOSE): its default shows the policy as
# PASSIVE too, but spins 300,000 times before a thread sleeps; PASSIVE spins none.
WAITS = [(None, "GOMP_SPINCOUNT = '0'"), ("ACTIVE", "OMP_WAIT_POLICY = 'ACTIVE'")]


@pytest.mark.parametrize(("given", "expected"), WAITS)
def test_a_stage_process_lets_openmp_threads_sleep_while_they_wait(repo, given, expected):
    """`bin/python`, which runs every stage, sets the policy that scikit-learn's OpenMP reads
    when it loads (bench/wait_policy.py measures why); a policy the user set is kept."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "VIRTUAL_ENV")}
    env |= {"OMP_DISPLAY_ENV": "VERBOSE"} | ({"OMP_WAIT_POLICY": given} if given else {})
    done = subprocess.run(
        [str(repo / "bin" / "python"), "-c", "import sklearn.ensemble"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert expected in done.stderr
