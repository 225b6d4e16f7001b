"""A canary served from the registry: a real `mlflow server` holds two versions of the telco
model (1: the default gradient boosting, champion; 2: logistic regression), `reprokit canary`
sets the alias and its weight, and a real `reprokit serve --canary canary` process follows them.
Load comes from a real HTTP client, eight requests at a time."""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from registered import NAME, nest_schema, register
from servers import BIN, metric, mlflow_server, scoring_service, wait_until

from reprokit.model import split
from reprokit.model.trust import load_package


@pytest.fixture(scope="module")
def server(tmp_path_factory, repo, telco_package, logistic_package):
    """A tracking server with versions 1 (champion) and 2 (gate passed) registered; its root
    folder (params.yaml, dataset.yaml), URL, and each version's probabilities of `records`."""
    root = tmp_path_factory.mktemp("canary")
    shutil.copy(repo / "params.yaml", root / "params.yaml")
    shutil.copy(repo / "dataset.yaml", root / "dataset.yaml")
    (root / "artifacts").mkdir()
    backend = f"sqlite:///{root / 'server.db'}"
    with mlflow_server(backend, str(root / "artifacts"), {}, root / "mlflow.log") as url:
        assert register(root, url, [telco_package, logistic_package]) == ["1", "2"]
        client = mlflow.MlflowClient(tracking_uri=url)
        client.set_registered_model_alias(NAME, "champion", "1")
        client.set_model_version_tag(NAME, "2", "gate_passed", "true")
        yield root, url, client


@pytest.fixture(scope="module")
def records(telco_splits, telco_contract) -> list[dict]:
    _, _, test, _ = telco_splits
    frame = test[telco_contract.feature_names].head(50)
    frame = frame.astype({c: "int64" for c in telco_contract.names_of("integer", "binary")})
    return json.loads(frame.to_json(orient="records"))


@pytest.fixture(scope="module")
def expected(telco_package, logistic_package, records) -> dict[str, np.ndarray]:
    """Each version's probabilities of `records`, as `pyfunc` gives them."""
    scored = {
        version: np.asarray(load_package(package).predict(pd.DataFrame(records)))[:, 1]
        for version, package in (("1", telco_package), ("2", logistic_package))
    }
    assert np.abs(scored["1"] - scored["2"]).min() > 1e-9  # every record tells the versions apart
    return scored


@pytest.fixture(scope="module")
def service(server, tmp_path_factory):
    root, url, _ = server
    log = tmp_path_factory.mktemp("canary-serve") / "serve.log"
    args = [f"models:/{NAME}@champion", "--canary", "canary", "--shadow", "challenger", "--poll-seconds", "0.3"]
    with scoring_service(args, log, env={"MLFLOW_TRACKING_URI": url}, cwd=root) as (address, _):
        with httpx.Client(base_url=address, timeout=60) as client:
            yield client, log


def canary(server, *argv: str) -> str:
    """`reprokit canary ARGV...` as a person runs it, in the server's project folder."""
    root, url, _ = server
    done = subprocess.run(
        [str(BIN / "reprokit"), "canary", *argv, "--by", "tester"],
        cwd=root,
        env={"MLFLOW_TRACKING_URI": url, "PATH": str(BIN)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def wait_for_split(client, version: str | None, weight: float | None = None) -> None:
    def seen() -> bool:
        shown = client.get("/version").json()
        return shown.get("canary_version") == version and (weight is None or shown.get("canary_weight") == weight)

    wait_until(seen, f"the service never served canary {version} at {weight}%")


def post(client, records: list[dict], headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post("/invocations", json={"instances": records}, headers=headers or {})


def answered(answer: httpx.Response, records_index: int, expected) -> str:
    """The role that answered; checks that version, role and probability agree with it."""
    assert answer.status_code == 200, answer.text
    role, version = answer.headers["x-model-role"], answer.headers["x-model-version"]
    assert (role, version) in (("stable", "1"), ("canary", "2"))
    (prediction,) = answer.json()["predictions"]
    assert prediction["model_version"] == version
    # Logistic regression's dot products may differ in the last bit with the batch's size (BLAS
    # kernels), and micro-batching joins requests: within 1e-12, far below the versions' difference.
    assert prediction["probability"] == pytest.approx(expected[version][records_index], rel=1e-12, abs=1e-15)
    return role


def counted(text: str, role: str, version: str) -> float:
    needle = f'reprokit_requests_total{{model_version="{version}",role="{role}",route="/invocations",status="200"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(needle))


def test_the_canary_answers_its_weights_share_and_a_key_always_meets_the_same_version(
    service, server, records, expected
):
    client, _ = service
    assert "canary_version" not in client.get("/version").json()
    assert post(client, records[:1], {"X-Model-Route": "canary"}).status_code == 503  # no canary yet
    shown = canary(server, "2", "--weight", "20", "--reason", "logistic regression, 20%")
    assert "version 2 is the canary at 20%" in shown
    wait_for_split(client, "2", 20.0)
    wait_until(lambda: client.get("/version").json().get("shadow_version") == "2", "the shadow never loaded")
    chosen = split.Split("2", split.weight_buckets("20"))
    before = client.get("/metrics").text
    roles: list[str] = []  # every answer of this test, for /metrics

    def one(i: int, key: str | None = None, route: str | None = None) -> str:
        headers = {"X-Routing-Key": key} if key else {}
        if route:
            headers["X-Model-Route"] = route
        role = answered(post(client, [records[i % 50]], headers), i % 50, expected)
        roles.append(role)
        return role

    with ThreadPoolExecutor(8) as pool:
        sides = dict(zip(range(1000), pool.map(lambda i: one(i, f"customer-{i}"), range(1000)), strict=True))
    n, p = len(sides), 0.2
    canaries = sum(role == "canary" for role in sides.values())
    assert abs(canaries - n * p) < 5 * (n * p * (1 - p)) ** 0.5  # binomial: five standard deviations
    # Each key's side is the one its bucket gives, in this process as in the service's.
    assert all((role == "canary") == chosen.to_canary(f"customer-{i}") for i, role in sides.items())
    # The same key meets the same version every time.
    for i in (3, 4, 5, 6):
        assert {one(i, f"customer-{i}") for _ in range(10)} == {sides[i]}
    # Without a key, each request draws at random: the share still matches the weight.
    with ThreadPoolExecutor(8) as pool:
        drawn = list(pool.map(one, range(600)))
    assert abs(drawn.count("canary") - 600 * p) < 5 * (600 * p * (1 - p)) ** 0.5
    # Forced routes for internal testers; a request of many records is answered by one version.
    assert one(0, "customer-0", "canary") == "canary" and one(0, route="Stable") == "stable"
    refused = post(client, records[:1], {"X-Model-Route": "canary; rm -rf /"})
    assert refused.status_code == 400 and "expected stable or canary" in refused.json()["error"]
    many = post(client, records, {"X-Model-Route": "canary"})
    np.testing.assert_allclose([p["probability"] for p in many.json()["predictions"]], expected["2"], rtol=1e-12)
    # /metrics counts each request under the version and role that answered it.
    text = client.get("/metrics").text
    assert counted(text, "canary", "2") - counted(before, "canary", "2") == roles.count("canary") + 1
    assert counted(text, "stable", "1") - counted(before, "stable", "1") == roles.count("stable")
    assert 'reprokit_model_info{model_version="2",role="canary"} 1.0' in text
    assert "reprokit_canary_weight_percent 20.0" in text
    scored = {
        line.split("{")[1].split("}")[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("reprokit_predicted_score_count{")
    }
    assert scored['model_version="2",role="canary"'] >= roles.count("canary") + len(records)
    # The shadow is compared with the stable model's batches only, never with the canary's.
    shadowed = roles.count("stable") + metric(before, "reprokit_shadow_records_total")
    wait_until(
        lambda: metric(client.get("/metrics").text, "reprokit_shadow_records_total") == shadowed,
        "the shadow did not compare exactly the stable model's records",
    )


def test_a_segment_gets_its_share_and_no_one_else_meets_the_canary(service, server, records, expected):
    client, _ = service
    canary(server, "2", "--weight", "100", "--segment", "x-customer-tier=premium", "--reason", "A/B on premium")
    wait_for_split(client, "2", 100.0)
    assert client.get("/version").json()["canary_segment"] == "x-customer-tier=premium"
    for i in range(20):
        premium = post(client, [records[i]], {"X-Customer-Tier": "premium", "X-Routing-Key": str(i)})
        basic = post(client, [records[i]], {"X-Customer-Tier": "basic", "X-Routing-Key": str(i)})
        assert answered(premium, i, expected) == "canary"
        assert answered(basic, i, expected) == "stable"
        assert answered(post(client, [records[i]]), i, expected) == "stable"
    canary(server, "--weight", "50", "--reason", "A/B on premium, half")
    wait_for_split(client, "2", 50.0)
    premium = [
        answered(post(client, [records[i % 50]], {"X-Customer-Tier": "premium"}), i % 50, expected) for i in range(300)
    ]
    assert abs(premium.count("canary") - 150) < 5 * (300 * 0.25) ** 0.5
    assert {answered(post(client, [records[i]], {"X-Customer-Tier": "Premium"}), i, expected) for i in range(50)} == {
        "stable"
    }  # the value matches case and all
    canary(server, "--weight", "0", "--segment", "", "--reason", "held at zero")
    wait_for_split(client, "2", 0.0)
    assert "canary_segment" not in client.get("/version").json()
    assert {answered(post(client, [records[i]]), i, expected) for i in range(50)} == {"stable"}
    assert answered(post(client, records[:1], {"X-Model-Route": "canary"}), 0, expected) == "canary"


def test_a_canary_that_cannot_load_never_receives_traffic_and_stop_ends_the_canary(
    service, server, records, expected, telco_package
):
    """A registered version whose model file nests without end: refused on load, so no request
    meets it whatever its weight; stopping the canary leaves all traffic on the champion."""
    client, log = service
    root, url, registry = server
    crafted = root / "crafted"
    shutil.copytree(telco_package, crafted)
    nest_schema(crafted)
    (version,) = register(root, url, [crafted])
    registry.set_model_version_tag(NAME, version, "gate_passed", "true")
    canary(server, version, "--weight", "100", "--reason", "cannot load")
    wait_until(lambda: f"version {version} cannot be loaded" in log.read_text(), "the canary was never tried")
    assert "canary_version" not in client.get("/version").json()
    assert {answered(post(client, [records[i]]), i, expected) for i in range(50)} == {"stable"}
    assert post(client, records[:1], {"X-Model-Route": "canary"}).status_code == 503
    assert client.get("/health/ready").status_code == 200
    canary(server, "2", "--weight", "50", "--reason", "back to a loadable version")
    wait_for_split(client, "2", 50.0)
    assert "version 2 is no longer a canary" in canary(server, "--stop", "--reason", "done")
    wait_for_split(client, None)
    assert split.read_split(registry, NAME) == split.Split()
    assert {answered(post(client, [records[i]]), i, expected) for i in range(50)} == {"stable"}
    assert "Traceback" not in log.read_text()
