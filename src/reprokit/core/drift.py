"""Drift statistics: how far a batch's distribution is from the reference's, and whether
that distance is more than chance.

Every comparison gives a test's p-value (two-sample Kolmogorov-Smirnov on numbers,
chi-square on categories and null rates) and an effect size, the population stability
index (PSI) on reference bins. A column drifts only when both agree: its p-value, corrected
for testing many columns at once, is below `alpha`, and its PSI reaches the warning level.
On a large batch every test rejects the smallest shift; the PSI floor is what keeps a
million rows with a negligible shift quiet.

Bins: numbers use the reference's quantiles (repeated edges merged, so an integer column
with few values gets one bin per value); categories use the reference's and the contract's
values, and each category only the batch has is a bin of its own; scores use the fixed
`reprokit.model.scoring.SCORE_BINS` the scoring service's histogram uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

# A bin's share is never taken below this in the PSI (an empty bin would make it infinite).
MIN_SHARE = 1e-4


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One column's reference-vs-batch comparison: the bins with both samples' shares, the
    test and its p-value, and the PSI."""

    test: str
    p_value: float
    psi: float
    bins: tuple[str, ...]
    reference: tuple[float, ...]
    current: tuple[float, ...]
    reference_rows: int
    current_rows: int


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins."""
    ref = np.maximum(reference_counts / max(reference_counts.sum(), 1), MIN_SHARE)
    cur = np.maximum(current_counts / max(current_counts.sum(), 1), MIN_SHARE)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def chi_square_p(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """p-value of the chi-square test of homogeneity of two count vectors (bins both empty
    are left out; a single bin, or an empty sample, gives 1)."""
    from scipy.stats import chi2_contingency

    table = np.vstack([reference_counts, current_counts]).astype("float64")
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(chi2_contingency(table, correction=False).pvalue)


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles, repeated edges merged."""
    if len(reference) == 0:
        return np.empty(0)
    edges = np.unique(np.quantile(reference, np.arange(1, bins) / bins, method="linear"))
    return edges[edges > reference.min()]  # no bin below the smallest value: it would stay empty


def bin_labels(edges: np.ndarray) -> tuple[str, ...]:
    """Readable labels of the bins `np.searchsorted(edges, x, side="right")` numbers."""
    if len(edges) == 0:
        return ("all",)
    shown = [f"{e:.6g}" for e in edges]
    return (
        (f"< {shown[0]}",)
        + tuple(f"[{a}, {b})" for a, b in zip(shown[:-1], shown[1:], strict=True))
        + (f">= {shown[-1]}",)
    )


def compare_numbers(reference: np.ndarray, current: np.ndarray, bins: int) -> Comparison:
    """Non-null numbers: KS test, PSI on the reference's quantile bins."""
    from scipy.stats import ks_2samp

    reference, current = reference[~np.isnan(reference)], current[~np.isnan(current)]
    edges = quantile_edges(reference, bins)
    ref_counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    cur_counts = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    if len(reference) and len(current):
        method = "exact" if max(len(reference), len(current)) <= KS_EXACT_MAX_ROWS else "asymp"
        p_value = float(ks_2samp(reference, current, method=method).pvalue)
    else:
        p_value = 1.0
    return _comparison("kolmogorov_smirnov", p_value, bin_labels(edges), ref_counts, cur_counts)


# Above this many values in either sample, the KS test uses Smirnov's asymptotic distribution,
# which needs only the statistic and the sample sizes (`ks_from_counts`).
KS_EXACT_MAX_ROWS = 2000


def compare_numbers_counted(reference: np.ndarray, counted: "NumberCounts", bins: int) -> Comparison:
    """`compare_numbers(reference, current, bins)` from `counted = NumberCounts.of(current,
    *reference_grid(reference, bins))`, added up over a batch's partitions, instead of the
    batch's values: the same
    KS statistic, p-value and bin counts, bit for bit. A sample of at most `KS_EXACT_MAX_ROWS`
    values on both sides needs the values themselves (`counted.values`)."""
    reference = reference[~np.isnan(reference)]
    if max(len(reference), counted.rows) <= KS_EXACT_MAX_ROWS:
        return compare_numbers(reference, counted.values, bins)
    edges = quantile_edges(reference, bins)
    ref_counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    p_value = ks_from_counts(reference, counted) if len(reference) and counted.rows else 1.0
    return _comparison("kolmogorov_smirnov", p_value, bin_labels(edges), ref_counts, counted.bins)


@dataclasses.dataclass
class NumberCounts:
    """What the KS test and the PSI need of a numeric column's non-null batch values, as counts
    that add up over partitions, sparse (at most one entry per distinct reference value,
    however many rows): how many values lie just above each distinct reference value (at
    `searchsorted(grid, value, side="left")`), how many equal one, how many fall in each
    reference quantile bin, and, only while there are at most `KS_EXACT_MAX_ROWS` of them,
    the values themselves (the exact test needs them)."""

    rows: int
    slots: tuple[np.ndarray, np.ndarray]  # (positions in the grid, values there), sorted
    ties: tuple[np.ndarray, np.ndarray]  # (positions of reference values, values equal to them)
    bins: np.ndarray
    values: np.ndarray | None

    @classmethod
    def of(cls, current: np.ndarray, grid: np.ndarray, edges: np.ndarray) -> "NumberCounts":
        """Counts of `current` (nulls left out) at `reference_grid(reference, bins)`."""
        current = current[~np.isnan(current)]
        slot = np.searchsorted(grid, current, side="left")
        inside = slot < len(grid)
        tied = slot[inside][grid[slot[inside]] == current[inside]]
        return cls(
            rows=len(current),
            slots=tuple(np.unique(slot, return_counts=True)),
            ties=tuple(np.unique(tied, return_counts=True)),
            bins=np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1),
            values=current if len(current) <= KS_EXACT_MAX_ROWS else None,
        )

    def __add__(self, other: "NumberCounts") -> "NumberCounts":
        rows = self.rows + other.rows
        keep = rows <= KS_EXACT_MAX_ROWS and self.values is not None and other.values is not None
        return NumberCounts(
            rows=rows,
            slots=_sparse_sum(self.slots, other.slots),
            ties=_sparse_sum(self.ties, other.ties),
            bins=self.bins + other.bins,
            values=np.concatenate([self.values, other.values]) if keep else None,
        )

    def dense(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(values <= each of the `size` distinct reference values, values < each of them)."""
        slots, ties = np.zeros(size + 1, dtype="int64"), np.zeros(size + 1, dtype="int64")
        slots[self.slots[0]], ties[self.ties[0]] = self.slots[1], self.ties[1]
        # A value equal to the k-th reference value counts as below the (k+1)-th, not the k-th.
        above = slots - ties + np.concatenate([[0], ties[:-1]])
        return np.cumsum(slots)[:-1], np.cumsum(above)[:-1]


def _sparse_sum(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    positions, where = np.unique(np.concatenate([a[0], b[0]]), return_inverse=True)
    counts = np.zeros(len(positions), dtype="int64")
    np.add.at(counts, where, np.concatenate([a[1], b[1]]))
    return positions, counts


def reference_grid(reference: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """A numeric reference's distinct non-null values and its quantile bin edges: what a
    partition's `NumberCounts` are counted at."""
    reference = reference[~np.isnan(reference)]
    return np.unique(reference), quantile_edges(reference, bins)


def ks_from_counts(reference: np.ndarray, counted: NumberCounts) -> float:
    """The two-sample KS p-value `scipy.stats.ks_2samp(reference, current, method="asymp")`
    gives, from counts. Between two distinct reference values the reference's CDF is flat and
    the batch's rises, so the largest distance is at an end: at a reference value, or just
    below the next one. Those are distances scipy evaluates too (at the reference value, at
    the batch's last value below the next), with the same integers divided the same way, so
    the statistic is the same float; the p-value is then Smirnov's, as scipy computes it."""
    from scipy.stats import kstwo

    n1, n2 = len(reference), counted.rows
    grid, ref_counts = np.unique(reference, return_counts=True)
    ref_at_most = np.cumsum(ref_counts)  # reference values at most each distinct one (one sort)
    at_most, below = counted.dense(len(grid))
    differences = np.concatenate(
        [
            ref_at_most / n1 - at_most / n2,  # at each reference value
            np.zeros(1) / n1 - below[:1] / n2,  # below the smallest
            ref_at_most[:-1] / n1 - below[1:] / n2,  # just below each next one
        ]
    )
    statistic = np.abs(differences).max()
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return float(np.clip(kstwo.sf(statistic, np.round(m * n / (m + n))), 0, 1))


def category_counts(values: Any):
    """Non-null values counted (a pandas Series by value, categorical ones counted fast)."""
    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    counted = series.value_counts(sort=False, dropna=True)
    return counted[counted > 0]


def compare_categories(reference: Any, current: Any, known: Sequence[Any]) -> Comparison:
    """Non-null categories (arrays or pandas Series, categorical ones counted fast):
    chi-square test, PSI on the categories (`known` first, then the reference's others,
    then each category only the batch has)."""
    return compare_category_counts(category_counts(reference), category_counts(current), known)


def compare_category_counts(ref_counts, cur_counts, known: Sequence[Any]) -> Comparison:
    """`compare_categories` from both samples' `category_counts` (a batch's added up over
    its partitions)."""
    order = list(dict.fromkeys(list(known) + sorted(ref_counts.index, key=str) + sorted(cur_counts.index, key=str)))
    ref = ref_counts.reindex(order, fill_value=0).to_numpy(dtype="int64")
    cur = cur_counts.reindex(order, fill_value=0).to_numpy(dtype="int64")
    return _comparison("chi_square", chi_square_p(ref, cur), tuple(str(v) for v in order), ref, cur)


def score_counts(scores: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """How many scores fall in each bin (`edges` are upper bounds, as a Prometheus `le`)."""
    inner = np.asarray(edges[:-1], dtype="float64")
    return np.bincount(np.searchsorted(inner, scores, side="left"), minlength=len(edges))


def compare_scores(reference: np.ndarray, current: np.ndarray, edges: Sequence[float]) -> Comparison:
    """Predicted probabilities: KS test, PSI on fixed bins (`edges` are upper bounds; the
    last one is 1.0)."""
    from scipy.stats import ks_2samp

    ref_counts, cur_counts = score_counts(reference, edges), score_counts(current, edges)
    labels = tuple(f"<= {e:g}" for e in edges)
    p_value = float(ks_2samp(reference, current, method="asymp").pvalue) if len(current) else 1.0
    return _comparison("kolmogorov_smirnov", p_value, labels, ref_counts, cur_counts)


def compare_rates(reference_hits: int, reference_rows: int, current_hits: int, current_rows: int) -> Comparison:
    """A proportion (nulls, positive labels): chi-square test of the 2x2 table, PSI on the
    two bins."""
    ref = np.array([reference_rows - reference_hits, reference_hits])
    cur = np.array([current_rows - current_hits, current_hits])
    return _comparison("chi_square", chi_square_p(ref, cur), ("no", "yes"), ref, cur)


def _comparison(test: str, p_value: float, labels: tuple[str, ...], ref: np.ndarray, cur: np.ndarray) -> Comparison:
    ref_total, cur_total = int(ref.sum()), int(cur.sum())
    return Comparison(
        test=test,
        p_value=p_value if np.isfinite(p_value) else 1.0,
        psi=psi(ref, cur),
        bins=labels,
        reference=tuple(float(c) / max(ref_total, 1) for c in ref),
        current=tuple(float(c) / max(cur_total, 1) for c in cur),
        reference_rows=ref_total,
        current_rows=cur_total,
    )


CORRECTIONS = ("benjamini_hochberg", "bonferroni")


def adjust(p_values: Sequence[float], method: str) -> np.ndarray:
    """p-values corrected for testing them together: Bonferroni (family-wise error) or
    Benjamini-Hochberg (false discovery rate, `scipy.stats.false_discovery_control`), each capped at 1."""
    p = np.asarray(p_values, dtype="float64")
    if len(p) == 0:
        return p
    if method == "bonferroni":
        return np.minimum(p * len(p), 1.0)
    if method != "benjamini_hochberg":
        raise ValueError(f"unknown correction {method!r}; expected one of {', '.join(CORRECTIONS)}")
    from scipy.stats import false_discovery_control

    return false_discovery_control(p, method="bh")
