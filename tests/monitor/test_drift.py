"""The drift statistics, and the monitor's false-alarm rate and power on seeded trials."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from reprokit.core import drift
from reprokit.core.config import load_section
from reprokit.model.scoring import SCORE_BINS


def test_psi_is_zero_for_equal_shares_and_matches_the_formula():
    assert drift.psi(np.array([10, 20, 30]), np.array([1, 2, 3])) == 0.0
    ref, cur = np.array([50, 50]), np.array([80, 20])
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert drift.psi(ref, cur) == pytest.approx(expected, rel=1e-12)
    # an empty bin counts as a share of MIN_SHARE (1e-4), never an infinite PSI
    floor = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert drift.psi(np.array([100, 0]), np.array([50, 50])) == pytest.approx(floor, rel=1e-12)


def test_corrections_match_their_definitions():
    p = np.random.default_rng(3).random(40) ** 3
    ranks = {value: rank for rank, value in enumerate(sorted(p), 1)}
    # Benjamini-Hochberg: the smallest p(j) * m / j over every j at or above the p-value's rank
    expected = [min(1.0, min(q * 40 / ranks[q] for q in p if ranks[q] >= ranks[value])) for value in p]
    np.testing.assert_allclose(drift.adjust(p, "benjamini_hochberg"), expected, rtol=1e-12)
    np.testing.assert_allclose(drift.adjust(p, "bonferroni"), np.minimum(p * 40, 1))
    with pytest.raises(ValueError, match="unknown correction"):
        drift.adjust(p, "holm")


def test_integer_columns_get_one_bin_per_value_when_they_have_few():
    ref = np.repeat([0.0, 1.0, 2.0], 100)
    comparison = drift.compare_numbers(ref, ref.copy(), bins=10)
    assert comparison.bins == ("< 1", "[1, 2)", ">= 2")
    assert comparison.psi == 0 and comparison.p_value == 1.0


def test_each_category_only_the_batch_has_is_a_bin_of_its_own():
    ref = ["a"] * 50 + ["b"] * 50
    cur = ["a"] * 40 + ["b"] * 40 + ["new"] * 10 + ["newer"] * 10 + [None] * 5
    comparison = drift.compare_categories(ref, cur, known=["a", "b", "c"])
    assert comparison.bins == ("a", "b", "c", "new", "newer")
    assert comparison.current == (0.4, 0.4, 0.0, 0.1, 0.1)  # nulls are the null rate's business
    assert comparison.current_rows == 100 and comparison.p_value < 1e-4


def test_score_bins_are_the_services_histogram_buckets():
    """A Prometheus bucket `le=b` holds scores <= b: the monitor bins scores the same way, so
    an alert on live scores compares like with like."""
    scores = np.array([0.0, 0.05, 0.050001, 0.999, 1.0])
    comparison = drift.compare_scores(scores, scores, SCORE_BINS)
    assert comparison.bins[0] == "<= 0.05" and comparison.bins[-1] == "<= 1" and len(comparison.bins) == 20
    shares = dict(zip(comparison.bins, comparison.reference, strict=True))
    assert shares["<= 0.05"] == 0.4 and shares["<= 0.1"] == 0.2 and shares["<= 1"] == 0.4


# --- seeded trials on the real data (reprokit.monitoring.drift_trials) ---------------------------------


@pytest.fixture(scope="module")
def trials(repo, telco_package, telco_splits):
    from reprokit.core.threads import thread_budget
    from reprokit.model.scoring_model import ScoringModel
    from reprokit.monitoring.drift_trials import population

    _, train, test, _ = telco_splits
    with thread_budget(1):
        model = ScoringModel.load(str(telco_package))
        pop = population(model, [train, test], len(train))
    return model, pop, load_section("monitor", repo / "params.yaml")


@pytest.mark.parametrize("size, count", [(500, 200), (5_000, 200), (50_000, 200), (1_000_000, 20)])
def test_same_distribution_batches_raise_no_more_alarms_than_the_configured_level(trials, size, count):
    """Seeded batches drawn from the rows the reference did not take, with replacement: every
    alarm is a false one. At most `alpha` of 200 batches per size (a million rows: 20 here,
    200 in bench/monitor.py). A million rows resampled from the ~1,400 rows left over differ
    "significantly" from the reference on some column; the PSI floor is what keeps them quiet."""
    from reprokit.core.threads import thread_budget
    from reprokit.monitoring.drift_trials import run

    model, pop, params = trials
    with thread_budget(1):
        result = run(model, pop, [size], count, params)
    assert result[str(size)]["alarms"] <= params.alpha * result[str(size)]["trials"], result


def test_a_negligible_shift_between_two_million_row_samples_is_significant_but_raises_no_alarm(trials):
    """The known weakness of plain KS on big data. A reference and a batch of a million rows
    each, drawn independently from the real rows with a little noise on the numbers (so they
    are continuous); the batch's numbers moved by 2% of a standard deviation. The tests reject
    that shift; the effect-size floor keeps the verdict `ok`, and without it, it would not be."""
    from reprokit.monitoring.batch_drift import drift_figures, verdict_of
    from reprokit.monitoring.drift_trials import shifted

    model, pop, params = trials
    rng = np.random.default_rng(0)
    numeric = ["tenure", "monthly_charges", "total_charges"]

    def sample():
        frame = pop.inputs.iloc[rng.integers(0, len(pop.inputs), 1_000_000)].reset_index(drop=True)
        for name in numeric:
            frame[name] = frame[name] + rng.normal(0, 0.1 * pop.inputs[name].std(), len(frame))
        return frame

    reference, batch = sample(), shifted(pop, sample(), "location", 0.02, rng)
    everything = np.ones(1_000_000, dtype=bool)
    scores = pop.scores  # the scores are not the question here
    figures, _ = drift_figures(pop.contract, reference, everything, batch, everything, scores, scores, params)
    assert all(figures["features"][name]["p_adjusted"] < params.alpha for name in numeric), figures["features"]
    assert all(figures["features"][name]["psi"] < 0.01 for name in numeric), figures["features"]
    assert verdict_of(figures, params)["verdict"] == "ok", figures["features"]
    strict = dataclasses.replace(params, psi_warn=1e-6, psi_alert=1.0)  # no floor: plain significance
    figures, _ = drift_figures(pop.contract, reference, everything, batch, everything, scores, scores, strict)
    assert verdict_of(figures, strict)["verdict"] != "ok"


@pytest.mark.parametrize(
    "shift", [("location", 0.25), ("scale", 1.4), ("category", 0.25), ("nulls", 0.1)], ids=lambda s: s[0]
)
def test_every_kind_of_shift_is_caught_in_a_batch_of_5000(trials, shift):
    from reprokit.core.threads import thread_budget
    from reprokit.monitoring.drift_trials import run

    model, pop, params = trials
    with thread_budget(1):
        result = run(model, pop, [5_000], 10, params, shift=shift)["5000"]
    assert result["alarms"] == 10, result


def test_categorical_columns_count_the_same_as_text_or_pandas_categories():
    values = ["a", "b", None, "c", "a"]
    plain = drift.compare_categories(values, values[::-1], ["a", "b"])
    fast = drift.compare_categories(pd.Series(values, dtype="category"), values[::-1], ["a", "b"])
    assert plain == fast
