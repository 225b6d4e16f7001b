"""A rollout window's verdict (reprokit.release.rollout.verdict) and its params, on figures built
by hand (tests/serving/test_rollout.py reads them from a real Prometheus)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from reprokit.core.config import ConfigError, load_section
from reprokit.model.scoring import SCORE_BINS
from reprokit.release.prometheus import Figures
from reprokit.release.rollout import verdict


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


def test_without_stable_figures_only_a_5xx_breach_is_judged_and_nothing_passes(params):
    slow_and_shifted = Figures(400.0, 0.0, 9.0, scores(1.0, n=400))
    assert verdict(params, slow_and_shifted, None)[:2] == ("wait", "no stable figures to compare with yet")
    assert verdict(params, Figures(400.0, 40.0, 0.01, scores(1.0, n=400)), None)[0] == "breach"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": [5, 25, 50]}, "rising from above 0 to 100"),
        ({"steps": [25, 5, 100]}, "rising from above 0 to 100"),
        ({"steps": [0, 100]}, "rising from above 0 to 100"),
        ({"steps": []}, "expected a list of percents"),
        ({"steps": [100]}, "at least one step below 100"),
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
    from reprokit.release.prometheus import checked_url

    with pytest.raises(StageError, match="expected http") as error:
        checked_url(url)
    assert "s3cret" not in str(error.value)


@pytest.mark.parametrize(
    "selector",
    ['job="a"} or vector(1) #', "job=reprokit", 'job="a" or 1', 'job="a\\"', '{job="a"}', 'job="a",,x="b"', '1job="a"'],
)
def test_a_selector_that_is_not_label_matchers_is_refused(selector):
    """It goes inside every query's braces: anything but `name op "value"` pairs could change the query."""
    from reprokit.core.errors import StageError
    from reprokit.release.prometheus import check_selector

    with pytest.raises(StageError, match=r"^params\.yaml: rollout\.selector .*expected label matchers"):
        check_selector(selector, "params.yaml: rollout.selector")


@pytest.mark.parametrize("selector", ["", 'job="reprokit-serve"', 'job=~"a|b", instance!="x:1"', 'env="say \\"hi\\""'])
def test_label_matchers_are_taken_as_they_are(selector):
    from reprokit.release.prometheus import check_selector

    assert check_selector(selector, "rollout.selector") == selector


def test_a_prometheus_url_with_credentials_is_refused_without_showing_them():
    """urllib would not send them: the query would fail as if the host were wrong."""
    from reprokit.core.errors import StageError
    from reprokit.release.prometheus import checked_url

    with pytest.raises(StageError, match="credentials in a URL are not used") as error:
        checked_url("http://alice:s3cret@127.0.0.1:9090")
    assert "s3cret" not in str(error.value) and "alice" not in str(error.value)
    assert checked_url("http://127.0.0.1:9090/prom") == "http://127.0.0.1:9090/prom"


@pytest.mark.parametrize(
    "sample",
    [{"value": "x"}, {"value": [1.0]}, {"metric": {"le": "x"}, "value": [1.0, "2"]}, ["le"], {"value": [1, {}]}],
)
def test_a_malformed_sample_holds_the_rollout_like_no_answer(sample):
    """A real HTTP server answering a success whose sample is broken: `PrometheusUnavailable`
    (the rollout holds), never a KeyError's traceback."""
    import http.server
    import json
    import threading

    from reprokit.release.prometheus import Prometheus, PrometheusUnavailable, figures

    answer = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [sample]}}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(PrometheusUnavailable, match="unexpected answer"):
            figures(Prometheus(f"http://127.0.0.1:{server.server_port}"), "canary", "2", 4.0, 0.0, "")
    finally:
        server.shutdown()
        server.server_close()


def rollout_of(client, version: str, params):
    """A Rollout of `churn` version `version`; its Prometheus is never asked in these tests."""
    from reprokit.release.prometheus import Prometheus
    from reprokit.release.rollout import Rollout

    return Rollout(client, "churn", version, params, Prometheus("http://127.0.0.1:9"), "ana")


def gated(client, version: str) -> None:
    client.set_model_version_tag("churn", version, "gate_passed", "true")
    client.set_model_version_tag("churn", version, "gate_champion_version", "1")


def test_a_rollback_stopped_between_its_verdict_and_the_alias_finishes_when_resumed(store, params):
    """The state says rolling_back before traffic moves: a run killed there leaves the canary
    serving, and the next run takes it out and ends the rollout, never walking on."""
    from reprokit.core.errors import StageError
    from reprokit.model import split
    from reprokit.release import registry

    client = store
    gated(client, "2")
    registry.set_canary(client, "churn", "2", "25", None, "ana", "rollout step 1")
    for key, value in (("rollout_state", "rolling_back"), ("rollout_step", "0"), ("rollout_reason", "scores apart")):
        client.set_model_version_tag("churn", "2", key, value)
    with pytest.raises(StageError, match="version 2 rolled back at 5%: scores apart"):
        rollout_of(client, "2", params).start_step()
    assert registry.aliases(client, "churn") == {"champion": "1"} and split.read_split(client, "churn").weight == 0
    tags = client.get_model_version("churn", "2").tags
    assert tags["rollout_state"] == "rolled_back" and tags[split.WEIGHT_TAG] == "0"
    with pytest.raises(StageError, match=r"is over \(rolled_back"):
        rollout_of(client, "2", params).start_step()


def test_a_rollout_resumes_only_with_the_steps_it_began_with_and_tags_edited_by_hand_are_named(store, params):
    from reprokit.core.errors import StageError

    client = store
    gated(client, "2")
    assert rollout_of(client, "2", params).start_step() == 0
    client.set_model_version_tag("churn", "2", "rollout_steps", rollout_of(client, "2", params).steps_text())
    client.set_model_version_tag("churn", "2", "rollout_state", "held")
    client.set_model_version_tag("churn", "2", "rollout_step", "1")
    assert rollout_of(client, "2", params).start_step() == 1
    with pytest.raises(StageError, match=r"rollout.steps are \[25.0, 100.0\] but the rollout of version 2 began with"):
        rollout_of(client, "2", dataclasses.replace(params, steps=(25.0, 100.0))).start_step()
    edited = (
        ("rollout_step", "one"),
        ("rollout_stable_reference", '{"requests": 1, "version": "1"}'),
        ("rollout_stable_reference", "[1]"),
    )
    for key, value in edited:
        client.set_model_version_tag("churn", "2", key, value)
        with pytest.raises(StageError, match="edited by hand"):
            rollout_of(client, "2", params).start_step()
        client.set_model_version_tag("churn", "2", "rollout_step", "1")


def test_the_canary_of_an_active_rollout_is_not_replaced_by_hand(store):
    """`reprokit canary OTHER` while a rollout walks would judge one version's traffic for
    another; stopping the canary by hand stays possible (the rollout then holds)."""
    from reprokit.core.errors import StageError
    from reprokit.release import registry

    client = store
    gated(client, "3")
    registry.set_canary(client, "churn", "2", "25", None, "ana", "rollout step 1")
    for state in ("running", "held", "rolling_back"):
        client.set_model_version_tag("churn", "2", "rollout_state", state)
        with pytest.raises(StageError, match=f"version 2 is the canary of a rollout \\({state}\\)"):
            registry.set_canary(client, "churn", "3", "5", None, "bo", "mine")
    assert registry.aliases(client, "churn")["canary"] == "2"
    client.set_model_version_tag("churn", "2", "rollout_state", "rolled_back")
    assert registry.set_canary(client, "churn", "3", "5", None, "bo", "mine")[0] == "3"


def test_an_interrupt_never_turns_a_rollback_or_a_promotion_into_a_hold(store, params):
    """Ctrl-C (or a second run's hold) while the rollback runs: the state stays rolling_back,
    so the next run finishes the rollback instead of resuming the breached canary."""
    client = store
    gated(client, "2")
    for state in ("rolling_back", "rolled_back", "promoted"):
        client.set_model_version_tag("churn", "2", "rollout_state", state)
        error = rollout_of(client, "2", params).hold(0, "interrupted")
        assert f"the rollout's state is {state}" in str(error)
        assert client.get_model_version("churn", "2").tags["rollout_state"] == state
    client.set_model_version_tag("churn", "2", "rollout_state", "running")
    rollout_of(client, "2", params).hold(1, "interrupted")
    assert client.get_model_version("churn", "2").tags["rollout_state"] == "held"


def test_a_hold_takes_the_canarys_share_to_0_and_keeps_its_alias(store, params):
    """Nothing watches a held canary: the stable model answers everything until a resume; a
    canary another version holds (replaced by hand) is left as it is."""
    from reprokit.model import split
    from reprokit.release import registry

    client = store
    gated(client, "2")
    registry.set_canary(client, "churn", "2", "50", None, "ana", "rollout", rollout=True)
    client.set_model_version_tag("churn", "2", "rollout_state", "running")
    error = rollout_of(client, "2", params).hold(1, "held at 50%: Prometheus does not answer")
    assert "the canary's share is 0 while held, nothing promoted" in str(error)
    assert split.read_split(client, "churn") == split.Split("2", 0)
    assert client.get_model_version("churn", "2").tags["rollout_state"] == "held"
    gated(client, "3")
    registry.set_canary(client, "churn", "2", "0", None, "ana", "stop", rollout=True)
    client.set_model_version_tag("churn", "2", "rollout_state", "rolled_back")
    registry.set_canary(client, "churn", "3", "30", None, "bo", "by hand")
    client.set_model_version_tag("churn", "2", "rollout_state", "running")
    rollout_of(client, "2", params).hold(1, "the canary was stopped or replaced by hand")
    assert split.read_split(client, "churn") == split.Split("3", split.weight_buckets("30"))


def test_one_process_walks_a_rollout_and_a_dead_ones_claim_is_taken_over(store, params):
    """A CI re-run beside a terminal's run: the second is refused while the first is alive and
    holds its lease (the walker's own windows); a lease that is over, or a process of this host
    that is gone (or had this pid before), is taken over; a walker whose claim was taken stops at
    its next window and its hold changes nothing."""
    import os
    import socket
    import subprocess
    import sys
    import time

    from reprokit.core.errors import StageError
    from reprokit.model import split
    from reprokit.release import registry

    client = store
    gated(client, "2")
    mine = rollout_of(client, "2", params)

    def claimed_by(owner: str, lease_until: float) -> None:
        client.set_model_version_tag("churn", "2", "rollout_state", "running")
        client.set_model_version_tag("churn", "2", "rollout_owner", owner)
        client.set_model_version_tag("churn", "2", "rollout_lease_until", str(round(lease_until)))

    claimed_by("pid 1 on elsewhere (abcd1234)", time.time() + 3600)  # a walker with long windows
    with pytest.raises(StageError, match=r"walked by another process \(pid 1 on elsewhere \(abcd1234\)\).* in 3[56]"):
        mine.claim(mine.tags())
    claimed_by("pid 1 on elsewhere (abcd1234)", time.time() - 5)  # its lease is over
    mine.claim(mine.tags())
    assert mine.tags()["rollout_owner"] == mine.owner
    assert float(mine.tags()["rollout_lease_until"]) >= time.time() + mine.stale_after() - 60
    host = socket.gethostname()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for owner in (f"pid {gone.stdout.strip()} on {host} (dead0000)", f"pid {os.getpid()} on {host} (restart0)"):
        claimed_by(owner, time.time() + 3600)  # gone, or an earlier process with this pid: taken over at once
        mine.claim(mine.tags())
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) as walker:
        try:
            claimed_by(f"pid {walker.pid} on {host} (live0000)", time.time() + 3600)
            with pytest.raises(StageError, match="being walked by another process"):
                mine.claim(mine.tags())
        finally:
            walker.kill()
    claimed_by(mine.owner, time.time())

    registry.set_canary(client, "churn", "2", "25", None, "ana", "rollout", rollout=True)
    client.set_model_version_tag("churn", "2", "rollout_owner", "pid 1 on elsewhere (ffff0000)")
    with pytest.raises(StageError, match="another process took over the rollout of churn version 2"):
        mine.check_aliases(0, "1")
    assert "changed nothing" in str(mine.hold(0, "interrupted"))
    assert split.read_split(client, "churn") == split.Split("2", split.weight_buckets("25"))
    assert mine.tags()["rollout_state"] == "running"


def test_promote_refuses_the_canary_of_an_active_rollout(store):
    """Its last step promotes it; promoted by hand mid-walk, a resumed rollout would record
    steps that never ran. Once its canary is stopped, promote takes it."""
    from reprokit.core.errors import StageError
    from reprokit.release import registry

    client = store
    gated(client, "2")
    registry.set_canary(client, "churn", "2", "25", None, "ana", "rollout", rollout=True)
    for state in ("running", "held", "rolling_back"):
        client.set_model_version_tag("churn", "2", "rollout_state", state)
        with pytest.raises(StageError, match=f"version 2 is being rolled out \\({state}\\)"):
            registry.promote(client, "churn", "2", "bo", "by hand")
    assert registry.aliases(client, "churn") == {"champion": "1", "canary": "2"}
    assert registry.promote(client, "churn", "2", "bo", "the rollout's last step", rollout=True) == "2"
    gated(client, "3")
    registry.set_canary(client, "churn", "3", "25", None, "ana", "rollout", rollout=True)
    client.set_model_version_tag("churn", "3", "gate_champion_version", "2")
    client.set_model_version_tag("churn", "3", "rollout_state", "held")
    registry.stop_canary(client, "churn", "ana", "abandon the rollout")
    assert registry.promote(client, "churn", "3", "bo", "by hand") == "3"


def test_a_promotion_stopped_half_way_is_finished_by_the_next_run(store, params):
    """The champion moved but the run stopped before it ended the canary and said so."""
    from reprokit.model import split
    from reprokit.release import registry

    client = store
    gated(client, "2")
    registry.set_canary(client, "churn", "2", "100", None, "ana", "rollout", rollout=True)
    client.set_model_version_tag("churn", "2", "rollout_state", "running")
    client.set_registered_model_alias("churn", "champion", "2")  # promote() got this far
    done = rollout_of(client, "2", params).run(None, "0")
    assert "its interrupted promotion is finished" in done
    assert registry.aliases(client, "churn") == {"champion": "2"} and split.read_split(client, "churn").weight == 0
    assert client.get_model_version("churn", "2").tags["rollout_state"] == "promoted"


def test_stable_figures_of_another_champion_are_never_compared_with(store, params):
    import json

    from reprokit.model.scoring import SCORE_BINS

    client = store
    gated(client, "2")
    figures = {"requests": 500.0, "errors": 0.0, "p95_seconds": 0.01, "scores": [1.0] * len(SCORE_BINS)}
    client.set_model_version_tag("churn", "2", "rollout_state", "held")
    client.set_model_version_tag("churn", "2", "rollout_steps", rollout_of(client, "2", params).steps_text())
    for measured, kept in (("1", True), ("3", False)):
        reference = {**figures, "version": measured}
        client.set_model_version_tag("churn", "2", "rollout_stable_reference", json.dumps(reference))
        rollout = rollout_of(client, "2", params)
        rollout.start_step()
        assert (rollout.stable_reference is not None) == kept, measured


def test_the_split_of_a_version_being_rolled_out_is_the_rollouts_alone(store):
    from reprokit.core.errors import StageError
    from reprokit.release import registry

    client = store
    registry.set_canary(client, "churn", "2", "25", None, "rollout", "step 1", rollout=True)
    client.set_model_version_tag("churn", "2", "rollout_state", "running")
    for weight, segment in (("100", None), ("25", "x-tier=premium")):
        with pytest.raises(StageError, match=r"version 2 is being rolled out \(running\): its steps set its weight"):
            registry.set_canary(client, "churn", "2", weight, segment, "bo", "by hand")
    assert registry.set_canary(client, "churn", "2", "50", "", "rollout", "step 2", rollout=True)[1].weight == 50
    assert registry.stop_canary(client, "churn", "bo", "by hand") == "2"  # stopping stays possible
