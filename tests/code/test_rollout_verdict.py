"""A rollout window's verdict (reprokit.release.rollout.verdict) and its params, on figures built
by hand (tests/serving/test_rollout.py reads them from a real Prometheus)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from reprokit.core.config import ConfigError, load_section
from reprokit.model.scoring import SCORE_BINS
from reprokit.release.rollout import Figures, verdict


@pytest.fixture()
def params(repo):
    return dataclasses.replace(load_section("rollout", repo / "params.yaml"), min_requests=100)


def scores(*shares: float, n: float = 1000.0) -> tuple[float, ...]:
    """Counts over SCORE_BINS: the given shares in the first bins, the rest in the last."""
    counts = [n * share for share in shares]
    return tuple(counts + [0.0] * (len(SCORE_BINS) - len(counts) - 1) + [n - sum(counts)])


STABLE = Figures(1000.0, 2.0, 0.010, scores(0.5, 0.3))


def test_a_window_passes_within_every_limit(params):
    decision, reason, shown = verdict(params, Figures(400.0, 1.0, 0.012, scores(0.5, 0.3, n=400)), STABLE)
    assert (decision, reason) == ("pass", "within every limit")
    assert shown["p95_latency_ratio"] == 1.2 and shown["score_psi"] == 0.0 and shown["score_p_value"] == 1.0


def test_too_little_canary_traffic_gives_no_verdict_whatever_the_figures(params):
    broken = Figures(99.0, 99.0, 9.0, scores(1.0, n=99))
    decision, reason, _ = verdict(params, broken, STABLE)
    assert decision == "wait" and "fewer than rollout.min_requests" in reason


@pytest.mark.parametrize(
    ("canary", "breach"),
    [
        (Figures(400.0, 8.0, 0.010, scores(0.5, 0.3, n=400)), "5xx share 0.0200 against 0.0020"),
        (Figures(400.0, 0.0, 0.016, scores(0.5, 0.3, n=400)), "p95 latency 1.60 times"),
        (Figures(400.0, 0.0, 0.010, scores(0.1, 0.1, n=400)), "scores apart from the stable model's: PSI"),
    ],
)
def test_each_limit_breaches_alone(params, canary, breach):
    decision, reason, _ = verdict(params, canary, STABLE)
    assert decision == "breach" and reason.startswith(breach), reason


def test_a_score_difference_must_be_large_and_significant(params):
    """PSI at the limit on a handful of requests is noise: no breach. A small shift on many is
    significant but small: no breach either."""
    few = dataclasses.replace(params, min_requests=5)
    noisy = verdict(few, Figures(6.0, 0.0, 0.01, scores(0.5, 0.0, n=6)), Figures(6.0, 0.0, 0.01, scores(0.0, 0.5, n=6)))
    assert noisy[0] == "pass" and noisy[2]["score_psi"] >= params.max_score_psi and noisy[2]["score_p_value"] >= 0.01
    small = verdict(
        params, Figures(100_000.0, 0.0, 0.01, scores(0.51, 0.29, n=1e5)), Figures(1e5, 0, 0.01, scores(0.5, 0.3, n=1e5))
    )
    assert small[0] == "pass" and small[2]["score_p_value"] < 0.01 and small[2]["score_psi"] < params.max_score_psi


def test_without_stable_traffic_only_the_error_share_is_judged(params):
    assert verdict(params, Figures(400.0, 0.0, 9.0, scores(1.0, n=400)), None)[0] == "pass"
    assert verdict(params, Figures(400.0, 40.0, 0.01, scores(1.0, n=400)), None)[0] == "breach"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": [5, 25, 50]}, "rising from above 0 to 100"),
        ({"steps": [25, 5, 100]}, "rising from above 0 to 100"),
        ({"steps": [0, 100]}, "rising from above 0 to 100"),
        ({"steps": []}, "expected a list of percents"),
        ({"steps": ["5", 100]}, "expected a list of percents"),
        ({"window_seconds": 0}, "window_seconds > 0"),
        ({"alpha": 1.5}, "alpha between 0 and 1"),
        ({"max_error_ratio_increase": 2}, "a share between 0 and 1"),
        ({"surprise": 1}, "unknown key(s) surprise"),
    ],
)
def test_bad_rollout_params_are_one_error_naming_the_key(tmp_path, repo, changes, message):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["rollout"].update(changes)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="rollout") as error:
        load_section("rollout", tmp_path / "params.yaml")
    assert message in str(error.value)


@pytest.mark.parametrize(
    "url", ["http://user:s3cret@127.0.0.1:notaport", "ftp://127.0.0.1", "http://", "127.0.0.1:9090"]
)
def test_a_bad_prometheus_url_is_one_error_that_never_shows_a_password(url):
    from reprokit.core.errors import StageError
    from reprokit.release.rollout import prometheus_url

    with pytest.raises(StageError, match="expected http") as error:
        prometheus_url(url)
    assert "s3cret" not in str(error.value)
