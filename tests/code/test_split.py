"""The traffic split (reprokit.model.split): buckets that are the same in every process, a share
that matches the weight, keys that stay on their side as the weight grows; the request's routing
key; and the registry's canary alias and tags, written by `reprokit canary` on a real MLflow store."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reprokit.core.errors import StageError
from reprokit.model import split
from reprokit.model.split import Split
from reprokit.release import registry
from reprokit.serving.requests import first_id


def test_a_key_has_one_bucket_in_every_process_and_machine():
    """blake2b of salt and key, not Python's per-process string hash: a figure fixed here, and
    another interpreter with another hash seed agrees."""
    assert split.bucket("customer-42", "2") == 8775
    code = "from reprokit.model.split import bucket; print(bucket('customer-42', '2'), bucket('customer-42', '3'))"
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}
    )
    assert other.stdout.split() == ["8775", str(split.bucket("customer-42", "3"))]
    assert split.bucket("customer-42", "3") != 8775  # each canary version draws its own sample of keys


def test_the_share_matches_the_weight_and_raising_it_only_moves_keys_to_the_canary():
    keys = [f"key-{i}" for i in range(40_000)]
    sides = {}
    for weight in ("5", "25", "50", "100", "0"):
        chosen = Split("7", split.weight_buckets(weight))
        sides[weight] = {key for key in keys if chosen.to_canary(key)}
    for weight in ("5", "25", "50"):
        p, n = float(weight) / 100, len(keys)
        sd = (n * p * (1 - p)) ** 0.5
        assert abs(len(sides[weight]) - n * p) < 5 * sd, weight  # binomial: five standard deviations
    assert sides["5"] <= sides["25"] <= sides["50"] <= sides["100"] == set(keys)
    assert sides["0"] == set()
    # The canary's version salts the bucket: the next canary meets another sample of keys.
    assert all(Split("7", 2500).to_canary(key) == (split.bucket(key, "7") < 2500) for key in keys[:1000])
    assert {key for key in keys if Split("8", 2500).to_canary(key)} != sides["25"]
    random_side = Split("7", split.weight_buckets("25"))
    share = sum(random_side.to_canary(None) for _ in range(20_000)) / 20_000
    assert abs(share - 0.25) < 5 * (0.25 * 0.75 / 20_000) ** 0.5


@pytest.mark.parametrize(
    ("weight", "buckets"), [("0", 0), ("5", 500), ("12.5", 1250), ("0.01", 1), (100, 10_000), ("1e1", 1000)]
)
def test_weights_in_percent(weight, buckets):
    assert split.weight_buckets(weight) == buckets


@pytest.mark.parametrize("weight", ["-1", "100.5", "nan", "inf", "five", "", None, "5%", "1" * 500])
def test_a_weight_that_is_not_a_percent_is_refused_naming_it(weight):
    with pytest.raises(split.SplitError, match="canary weight"):
        split.weight_buckets(weight)


def test_segments():
    assert split.parse_segment("X-Customer-Tier=premium") == ("x-customer-tier", "premium")
    assert split.parse_segment("x-plan=a=b") == ("x-plan", "a=b")
    assert split.parse_segment("") is None and split.parse_segment(None) is None
    hostile = ("x-tier= premium", "x-tier=pr\u00e9mium", "x-tier=a\r\nb", "x-tier=a b", "x-tier=" + "a" * 201)
    for bad in ("premium", "=premium", "x-tier=", "x tier=premium", "x-tier;rm -rf /=1", "x" * 65 + "=1", *hostile):
        with pytest.raises(split.SplitError, match="canary segment"):
            split.parse_segment(bad)
    premium = Split("3", 10_000, ("x-customer-tier", "premium"))
    assert premium.in_segment({"x-customer-tier": "premium"})
    assert not premium.in_segment({"x-customer-tier": "basic"}) and not premium.in_segment({})


def test_tags_written_by_hand_that_make_no_split_mean_no_traffic():
    assert split.split_of(None, {}) == Split()
    assert split.split_of("4", {split.WEIGHT_TAG: "12.5"}) == Split("4", 1250)
    assert split.split_of("4", {}) == Split("4", 0)
    assert split.split_of("4", {split.WEIGHT_TAG: "lots"}) == Split("4", 0)
    assert split.split_of("4", {split.WEIGHT_TAG: "50", split.SEGMENT_TAG: "no-equals"}) == Split("4", 0)


def test_the_routing_key_of_a_request_is_its_first_records_id(telco_contract):
    import dataclasses

    contract = dataclasses.replace(
        telco_contract, source=dataclasses.replace(telco_contract.source, id_column="customer_id")
    )
    records = [{"customer_id": "7590-VHVEG", "tenure": 1}, {"customer_id": "other"}]
    assert first_id({"instances": records}, contract) == "7590-VHVEG"
    assert first_id({"dataframe_records": records}, contract) == "7590-VHVEG"
    split_body = {"columns": ["tenure", "customer_id"], "data": [[1, 42], [2, 43]]}
    assert first_id({"dataframe_split": split_body}, contract) == "42"
    assert first_id({"instances": [{"tenure": 1}]}, contract) is None
    assert first_id({"instances": records}, telco_contract) is None  # a contract without an id column
    for hostile in (
        [],
        "text",
        {"instances": []},
        {"instances": "x"},
        {"instances": [1, 2]},
        {"instances": [{"customer_id": {"nested": [1]}}]},
        {"instances": [{"customer_id": None}]},
        {"dataframe_split": {"columns": ["customer_id"], "data": [[]]}},
        {"dataframe_split": {"columns": ["customer_id"], "data": "x"}},
        {"dataframe_split": {"columns": "customer_id", "data": [[1]]}},
        {"dataframe_split": []},
    ):
        assert first_id(hostile, contract) is None, hostile
    assert first_id({"instances": [{"customer_id": "x" * 10_000}]}, contract) == "x" * 200


def test_a_canary_is_a_gated_version_other_than_the_champion_and_stops_at_weight_zero(store):
    client = store
    assert split.read_split(client, "churn") == Split()
    with pytest.raises(StageError, match="release gate failed"):
        registry.set_canary(client, "churn", "3", "5", None, "ana", "try")
    with pytest.raises(StageError, match="is the champion"):
        registry.set_canary(client, "churn", "champion", "5", None, "ana", "try")
    with pytest.raises(StageError, match="has no version '9'"):
        registry.set_canary(client, "churn", "9", "5", None, "ana", "try")
    with pytest.raises(StageError, match="has no canary"):
        registry.set_canary(client, "churn", None, "5", None, "ana", "try")
    assert split.read_split(client, "churn") == Split()

    version, now = registry.set_canary(client, "churn", "2", "5", "x-tier=premium", "ana", "first step")
    assert (version, now) == ("2", Split("2", 500, ("x-tier", "premium")))
    tags = client.get_model_version("churn", "2").tags
    assert tags["canary_by"] == "ana" and tags["canary_reason"] == "first step"
    assert registry.aliases(client, "churn") == {"champion": "1", "canary": "2"}
    _, now = registry.set_canary(client, "churn", None, "25", "", "ana", "second step")
    assert now == Split("2", 2500)
    assert registry.stop_canary(client, "churn", "bo", "scores shifted") == "2"
    assert split.read_split(client, "churn") == Split()
    tags = client.get_model_version("churn", "2").tags
    assert tags[split.WEIGHT_TAG] == "0" and tags["canary_stopped_reason"] == "scores shifted"
    with pytest.raises(StageError, match="no canary to stop"):
        registry.stop_canary(client, "churn", "bo", "again")
    # A segment ends with its canary: the next canary of the same version serves everyone.
    registry.set_canary(client, "churn", "2", "5", "x-tier=premium", "ana", "segment")
    registry.stop_canary(client, "churn", "ana", "done")
    assert registry.set_canary(client, "churn", "2", "5", None, "ana", "again")[1] == Split("2", 500)


def test_a_canary_that_becomes_the_champion_is_no_longer_a_canary(store):
    """Promoted, it serves all traffic as the stable model; rolled back to, likewise."""
    client = store
    registry.set_canary(client, "churn", "2", "5", "x-tier=premium", "ana", "try")
    client.set_model_version_tag("churn", "2", "gate_champion_version", "1")
    registry.promote(client, "churn", "2", "ana", "good")
    assert registry.aliases(client, "churn") == {"champion": "2"}
    assert split.read_split(client, "churn") == Split()
    tags = client.get_model_version("churn", "2").tags
    assert tags[split.WEIGHT_TAG] == "0" and split.SEGMENT_TAG not in tags
    client.set_registered_model_alias("churn", "canary", "1")  # an old champion as canary, by hand
    registry.rollback(client, "churn", "bo", "worse")
    assert registry.aliases(client, "churn") == {"champion": "1"}


def test_changing_weight_and_segment_never_passes_through_a_wider_split(store, monkeypatch):
    """Every split a service could read between the registry writes of one change: none sends
    a request to the canary that neither the old nor the new split would."""
    client = store
    seen: list[Split] = []

    def watching(write):
        def watched(*args, **kwargs):
            write(*args, **kwargs)
            seen.append(split.read_split(client, "churn"))

        return watched

    changes = [("5", ""), ("100", "x-tier=premium"), ("5", ""), ("50", "x-tier=premium"), ("10", "x-tier=basic")]
    registry.set_canary(client, "churn", "2", "5", None, "ana", "start")
    before = split.read_split(client, "churn")
    for method in ("set_model_version_tag", "delete_model_version_tag"):
        monkeypatch.setattr(client, method, watching(getattr(client, method)))
    for weight, segment in changes:
        seen.clear()
        after = registry.set_canary(client, "churn", None, weight, segment, "ana", "change")[1]
        for middle in seen:
            for tier in ("premium", "basic", None):
                headers = {"x-tier": tier} if tier else {}
                for key in ("a", "b", "c", "d", "e", "f", "g", "h"):
                    goes = middle.in_segment(headers) and middle.to_canary(key)
                    assert not goes or any(s.in_segment(headers) and s.to_canary(key) for s in (before, after)), (
                        before,
                        middle,
                        after,
                    )
        before = after


def test_the_canary_command(store, capsys, caplog):
    import logging

    caplog.set_level(logging.INFO)

    def run(*argv: str) -> str:
        """Exit status, output and log (the log's handler may be another test's: caplog reads it)."""
        caplog.clear()
        try:
            registry.main(list(argv))
            code = 0
        except SystemExit as stop:
            code = stop.code
        out = capsys.readouterr()
        return f"{code}: {out.out}{out.err}{caplog.text}"

    assert run("canary", "2", "--weight", "10", "--reason", "new features").startswith("0")
    assert split.read_split(store, "churn") == Split("2", 1000)
    shown = run("show")
    assert "version 2: gate true [canary 10%]" in shown
    for argv, message in [
        (("canary", "2", "--reason", "r"), "canary needs --weight PERCENT"),
        (("canary", "2", "--weight", "101", "--reason", "r"), "must be between 0 and 100"),
        (("canary", "--weight", "5", "--segment", "tier", "--reason", "r"), "expected HEADER=VALUE"),
        (("canary", "--stop", "--weight", "5", "--reason", "r"), "--stop takes no version"),
    ]:
        answer = run(*argv)
        assert answer.startswith("2") and message in answer and "Traceback" not in answer
    assert split.read_split(store, "churn") == Split("2", 1000)  # nothing changed by a refused command
    answer = run("canary", "3", "--weight", "5", "--reason", "r")
    assert answer.startswith("1") and "release gate failed" in answer and "Traceback" not in answer
    assert run("canary", "--stop", "--reason", "done").startswith("0")
    assert split.read_split(store, "churn") == Split()
