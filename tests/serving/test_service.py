"""The scoring service, a real `python -m reprokit.serving.serve` process over HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import scoring_service

SECRET = "SECRET-INPUT-7f3a"


@pytest.fixture(scope="module")
def rows(telco_splits, telco_contract):
    """Test rows as a client holds them: JSON-ready records of the contract's columns."""
    _, _, test, _ = telco_splits
    frame = (
        test[telco_contract.feature_names]
        .head(40)
        .astype({n: "int64" for n in telco_contract.names_of("integer", "binary")})
    )
    return json.loads(frame.to_json(orient="records"))


def expected(pyfunc, records) -> np.ndarray:
    return np.asarray(pyfunc.predict(pd.DataFrame(records)))[:, 1]


def post(client, body, **kwargs):
    return client.post(
        "/invocations", content=json.dumps(body).encode(), headers={"content-type": "application/json"}, **kwargs
    )


@pytest.mark.parametrize("wire", ["dataframe_split", "dataframe_records", "instances"])
def test_every_mlflow_wire_format_scores_as_pyfunc_does(service, pyfunc, rows, wire):
    if wire == "dataframe_split":
        columns = list(rows[0])
        body = {wire: {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}}
    else:
        body = {wire: rows}
    answer = post(service, body)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    proba = np.array([p["probability"] for p in predictions])
    np.testing.assert_array_equal(proba, expected(pyfunc, rows))
    assert [p["label"] for p in predictions] == ["Yes" if p >= 0.5 else "No" for p in proba]
    version = service.get("/version").json()["model_version"]
    assert {p["model_version"] for p in predictions} == {version} == {answer.headers["x-model-version"]}
    assert all(p["warnings"] == [] for p in predictions) and "x-reprokit-warnings" not in answer.headers


def test_an_mlflow_client_payload_works_unchanged(service, pyfunc, rows):
    """What MLflow's own client sends: `pandas.DataFrame.to_json(orient="split")` under dataframe_split."""
    from mlflow.models.utils import convert_input_example_to_serving_input

    payload = convert_input_example_to_serving_input(pd.DataFrame(rows[:3]))
    answer = service.post("/invocations", content=payload, headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    proba = [p["probability"] for p in answer.json()["predictions"]]
    np.testing.assert_array_equal(proba, expected(pyfunc, rows[:3]))


def test_values_outside_the_contract_are_scored_with_a_warning_as_pyfunc_scores_them(service, pyfunc, rows):
    odd = [{**rows[0], "contract": "Three year", "tenure": 500}, rows[1]]
    answer = post(service, {"instances": odd})
    assert answer.status_code == 200 and answer.headers["x-reprokit-warnings"] == "1"
    first, second = answer.json()["predictions"]
    assert first["warnings"] == [
        "tenure: outside the contract's range [0, 120]",
        "contract: a category the contract does not list",
    ]
    assert second["warnings"] == []
    np.testing.assert_array_equal([first["probability"], second["probability"]], expected(pyfunc, odd))


def test_health_version_and_metrics(service, rows):
    assert service.get("/health/live").json() == {"status": "live"}
    ready = service.get("/health/ready").json()
    assert ready["status"] == "ready" and ready["model_version"].startswith("package-")
    version = service.get("/version").json()
    assert version["threshold"] == 0.5 and version["compiled"] is True
    post(service, {"instances": rows[:5]})
    text = service.get("/metrics").text
    v = version["model_version"]
    assert f'reprokit_model_info{{model_version="{v}",role="stable"}} 1.0' in text
    answered = f'model_version="{v}",role="stable"'
    assert f'reprokit_requests_total{{{answered},route="/invocations",status="200"}}' in text
    assert f'reprokit_request_seconds_bucket{{le="0.01",{answered},route="/invocations"}}' in text
    assert 'reprokit_requests_total{model_version="",role="",route="/health/live",status="200"}' in text
    assert "reprokit_batch_rows_bucket" in text
    assert f'reprokit_predicted_score_bucket{{le="0.5",{answered}}}' in text
    assert "reprokit_canary_weight_percent 0.0" in text


def test_the_openapi_schema_describes_the_contracts_records(service, telco_contract):
    schema = service.get("/openapi.json").json()
    body = schema["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    formats = {next(iter(option["properties"])) for option in body["oneOf"]}
    assert formats == {"dataframe_split", "dataframe_records", "instances"}
    record = next(o for o in body["oneOf"] if "instances" in o["properties"])["properties"]["instances"]["items"]
    assert set(record["properties"]) == set(telco_contract.feature_names)
    assert record["properties"]["tenure"]["type"] == "integer" and record["properties"]["tenure"]["maximum"] == 120
    assert "total_charges" not in record["required"] and "tenure" in record["required"]  # nullable: optional
    assert record["additionalProperties"] is False


def bad_requests(rows):
    record = rows[0]
    return {
        "missing field": (422, {"instances": [{k: v for k, v in record.items() if k != "tenure"}]}, "tenure"),
        "extra field": (422, {"instances": [{**record, "customer_name": SECRET}]}, "customer_name"),
        "mistyped": (422, {"instances": [{**record, "tenure": SECRET}]}, "tenure"),
        "null not allowed": (422, {"instances": [{**record, "contract": None}]}, "contract"),
        "empty list": (422, {"instances": []}, "no records"),
        "no wire format": (422, {"records": [record]}, "dataframe_split"),
        "split rows of the wrong width": (422, {"dataframe_split": {"columns": ["tenure"], "data": [[1, 2]]}}, "data"),
        "not an object": (422, [record], "JSON object"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing field",
        "extra field",
        "mistyped",
        "null not allowed",
        "empty list",
        "no wire format",
        "split rows of the wrong width",
        "not an object",
    ],
)
def test_bad_input_gets_a_4xx_naming_the_problem_without_echo_or_trace(service, rows, case):
    status, body, named = bad_requests(rows)[case]
    answer = post(service, body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert named in answer.text
    assert SECRET not in answer.text and "Traceback" not in answer.text


@pytest.mark.parametrize(
    ("content", "content_type", "status", "named"),
    [
        (b'{"instances": [', "application/json", 400, "not valid JSON"),
        (b"tenure=1", "text/plain", 415, "application/json"),
        (b"x" * 300_000, "application/json", 413, "larger than 200000 bytes"),
    ],
)
def test_unreadable_bodies_get_a_4xx(service, content, content_type, status, named):
    answer = service.post("/invocations", content=content, headers={"content-type": content_type})
    assert answer.status_code == status and named in answer.json()["error"]


def test_a_chunked_body_over_the_limit_is_refused_too(service):
    def parts():
        for _ in range(40):
            yield b" " * 10_000

    answer = service.post("/invocations", content=parts(), headers={"content-type": "application/json"})
    assert answer.status_code == 413


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_requests_never_get_a_5xx(service, rows, data):
    """Records that start valid and get fields replaced, dropped or added, sent in each wire
    format (split rows ragged or not), or arbitrary JSON: always an answer below 500."""
    fields = list(rows[0])
    records = []
    for _ in range(data.draw(st.integers(0, 3))):
        record = dict(data.draw(st.sampled_from(rows)))
        for name in data.draw(st.lists(st.sampled_from(fields), max_size=3)):
            record[name] = data.draw(json_values)
        for name in data.draw(st.lists(st.sampled_from(fields), max_size=2)):
            record.pop(name, None)
        if data.draw(st.booleans()):
            record[data.draw(st.text(max_size=5))] = data.draw(json_values)
        records.append(record)
    kind = data.draw(st.sampled_from(["instances", "dataframe_records", "dataframe_split", "any JSON"]))
    if kind == "dataframe_split":
        columns = data.draw(st.one_of(st.just(fields), st.lists(st.sampled_from(fields + ["extra"]), max_size=5)))
        table = [[record.get(c) for c in columns] for record in records]
        if table and data.draw(st.booleans()):
            table[0] = table[0][:-1] or [data.draw(json_values)]  # a ragged row
        payload = {kind: {"columns": columns, "data": table}}
    elif kind == "any JSON":
        payload = data.draw(json_values)
    else:
        payload = {kind: records}
    answer = post(service, payload)
    assert answer.status_code < 500, answer.text
    assert "Traceback" not in answer.text


def test_the_service_is_healthy_after_fuzzing(service, rows):
    assert service.get("/health/ready").status_code == 200
    assert post(service, {"instances": rows[:1]}).status_code == 200
    answered = [line for line in service.get("/metrics").text.splitlines() if "/invocations" in line]
    assert answered and not [line for line in answered if 'status="5' in line]  # no 5xx ever


def test_concurrent_single_records_each_get_their_own_answer(tmp_path, telco_package, pyfunc, rows):
    """Eight clients at once, over HTTP: every record is scored once and answered to its own
    request (how many of them overlap depends on the machine's load: the sharing of model calls
    is shown in process, below)."""
    args = [str(telco_package), "--max-wait-ms", "2000", "--max-batch", "64"]
    with scoring_service(args, tmp_path / "serve.log") as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda r: post(client, {"instances": [r]}), rows[:8]))
            metrics = client.get("/metrics").text
    proba = [a.json()["predictions"][0]["probability"] for a in answers]
    np.testing.assert_array_equal(proba, expected(pyfunc, rows[:8]))
    rows_scored = float(
        next(line.split()[1] for line in metrics.splitlines() if line.startswith("reprokit_batch_rows_sum"))
    )
    assert rows_scored == 8  # warm-up is not counted


def in_flight_together(telco_package, records: list[dict]) -> tuple[list, Any]:
    """Each record as its own request, all queued while all are in flight on a real Scorer in
    process: their answers (or exceptions) and the metrics."""
    import asyncio

    from reprokit.serving.metrics import Metrics
    from reprokit.serving.requests import parse_payload, shape_payload
    from reprokit.serving.scorer import Scorer
    from reprokit.serving.settings import Settings

    async def run() -> tuple[list, Any]:
        metrics = Metrics()
        scorer = Scorer(Settings(model=str(telco_package), max_wait_ms=2000, max_batch=64), metrics)
        await scorer.start()
        try:
            model = scorer.model
            shaped = [
                shape_payload(*parse_payload({"instances": [r]}, model.contract), model.contract, 10) for r in records
            ]
            scorer.in_flight = len(shaped)  # as the request handler counts them
            answers = await asyncio.gather(*(scorer.score(p, model) for p in shaped), return_exceptions=True)
        finally:
            await scorer.stop()
        return answers, metrics.registry

    return in_own_thread(run)


def in_own_thread(run):
    """`asyncio.run(run())` on a thread of its own, as a service worker's loop: the thread
    budget `Scorer.start` sets on the loop's thread stays there, off the test process's."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, run()).result()


def test_requests_in_flight_together_share_one_model_call(telco_package, pyfunc, rows):
    """The micro-batcher, in process (no load can change what overlaps): eight single records
    queued while eight requests are in flight are checked together, and the seven that pass
    make one model call of seven rows; each request gets its own probability back, and the
    one that breaks the contract the 422 it gets alone."""
    from reprokit.serving.requests import BadRequest, check_payloads, parse_payload, shape_payload

    records = [*rows[:3], {**rows[3], "tenure": SECRET}, *rows[4:8]]
    answers, registry = in_flight_together(telco_package, records)
    refused = answers.pop(3)
    contract = pyfunc.contract
    _, (alone,) = check_payloads(
        [shape_payload(*parse_payload({"instances": [records[3]]}, contract), contract, 10)], contract
    )
    assert isinstance(refused, BadRequest)
    assert (refused.status, refused.message, refused.problems, refused.total) == (
        alone.status,
        alone.message,
        alone.problems,
        alone.total,
    )
    assert refused.problems == [{"record": 0, "field": "tenure", "problem": "expected a number, got text"}]
    np.testing.assert_array_equal([float(p[0]) for p, _ in answers], expected(pyfunc, rows[:3] + rows[4:8]))
    assert all(list(w) == [None] for _, w in answers)
    assert registry.get_sample_value("reprokit_batch_rows_count") == 1  # one model call
    assert registry.get_sample_value("reprokit_batch_rows_sum") == 7


def test_a_lone_small_request_is_scored_on_the_event_loop_others_on_the_prediction_thread(telco_package, pyfunc, rows):
    """In process: a request alone in flight, of at most INLINE_RECORDS records that the
    compiled trees score, is checked and scored on the event loop's thread (no hop to the
    prediction thread and back); a larger one, requests batched together, a model whose trees
    scikit-learn scores (a forest, a linear model) and any request while a shadow is compared,
    on the prediction thread. Every call runs under the thread budget and gives the answers
    pyfunc gives."""
    import asyncio
    import threading

    from threadpoolctl import threadpool_info

    from reprokit.serving.metrics import Metrics
    from reprokit.serving.requests import parse_payload, shape_payload
    from reprokit.serving.scorer import INLINE_RECORDS, Scorer
    from reprokit.serving.settings import Settings

    calls = []

    async def run():
        scorer = Scorer(Settings(model=str(telco_package), max_wait_ms=2000, max_batch=64, n_threads=1), Metrics())
        await scorer.start()
        loop_thread = threading.current_thread()
        model = scorer.model
        scored = model.probabilities_of

        def spy(columns):
            on_loop = threading.current_thread() is loop_thread
            calls.append((on_loop, len(next(iter(columns.values()))), {p["num_threads"] for p in threadpool_info()}))
            return scored(columns)

        model.probabilities_of = spy

        def payload(records):
            return shape_payload(*parse_payload({"instances": records}, model.contract), model.contract, 100)

        async def send(*group):
            scorer.in_flight = len(group)  # as the request handler counts them
            return await asyncio.gather(*(scorer.score(payload(g), model) for g in group))

        try:
            answers = []
            for group in ([rows[:1]], [rows[:INLINE_RECORDS]], [rows[: INLINE_RECORDS + 1]], [rows[:1], rows[1:2]]):
                answers += await send(*group)
            scorer.shadow = scorer.model  # compared on the prediction thread: never two computations at once
            answers += await send(rows[:1])
            await asyncio.sleep(0)
            scorer.shadow = None
            trees, model.compiled.trees = model.compiled.trees, None  # scikit-learn's model scores
            answers += await send(rows[:1])
            model.compiled.trees = trees
        finally:
            await scorer.stop()
        return answers

    answers = in_own_thread(run)
    assert [(on_loop, n) for on_loop, n, _ in calls] == [
        (True, 1),
        (True, INLINE_RECORDS),
        (False, INLINE_RECORDS + 1),
        (False, 2),
        (False, 1),  # with a shadow: the request, then the shadow's comparison
        (False, 1),
        (False, 1),  # scikit-learn's trees
    ]
    assert all(limits == {1} for _, _, limits in calls)  # the budget on either thread
    got = [float(p) for proba, _ in answers for p in proba]
    want = [rows[:1], rows[:INLINE_RECORDS], rows[: INLINE_RECORDS + 1], rows[:2], rows[:1], rows[:1]]
    np.testing.assert_array_equal(got, np.concatenate([expected(pyfunc, w) for w in want]))


def test_a_model_error_fails_the_scored_requests_and_the_refused_keep_their_422(
    telco_package, pyfunc, rows, monkeypatch
):
    """A refused request never reaches the model: when the model call of its micro-batch fails,
    it still gets its 422, and only the requests that passed get the error (a 500)."""
    from reprokit.model.scoring_model import ScoringModel
    from reprokit.serving.requests import BadRequest

    started = ScoringModel.probabilities_of
    calls = []

    def failing_on_the_batch(self, columns):  # the warm-up's probe records pass; the batch of two fails
        calls.append(len(next(iter(columns.values()))))
        if calls[-1] == 2:
            raise RuntimeError("the model failed")
        return started(self, columns)

    monkeypatch.setattr(ScoringModel, "probabilities_of", failing_on_the_batch)
    answers, registry = in_flight_together(telco_package, [rows[0], {**rows[1], "tenure": SECRET}, rows[2]])
    assert isinstance(answers[1], BadRequest) and answers[1].status == 422
    assert [type(a) for a in (answers[0], answers[2])] == [RuntimeError, RuntimeError]
    assert calls.count(2) == 1  # one model call, of the two records that passed
    assert registry.get_sample_value("reprokit_batch_rows_count") == 0  # no call scored


def test_a_joint_check_that_fails_checks_each_request_apart(telco_package, pyfunc, rows, monkeypatch):
    """Should the joint check of a micro-batch ever fail, its requests are checked and scored
    apart: each gets its own answer, and each model call is counted."""
    import reprokit.serving.scorer as scorer_module
    from reprokit.serving.requests import BadRequest

    joint = scorer_module.check_payloads

    def alone_only(payloads, contract):
        if len(payloads) > 1:
            raise ValueError("a joint check that cannot be done")
        return joint(payloads, contract)

    monkeypatch.setattr(scorer_module, "check_payloads", alone_only)
    answers, registry = in_flight_together(telco_package, [rows[0], {**rows[1], "tenure": SECRET}, rows[2]])
    assert isinstance(answers[1], BadRequest) and answers[1].problems[0]["record"] == 0
    np.testing.assert_array_equal([float(answers[i][0][0]) for i in (0, 2)], expected(pyfunc, [rows[0], rows[2]]))
    assert registry.get_sample_value("reprokit_batch_rows_count") == 2  # two model calls of one row
    assert registry.get_sample_value("reprokit_batch_rows_sum") == 2


def test_graceful_shutdown_finishes_the_request_in_flight(tmp_path, telco_package, pyfunc, rows):
    big = (rows * 250)[:10_000]  # long enough to be still in flight when the signal comes
    args = [str(telco_package), "--max-body-bytes", "50000000"]
    with scoring_service(args, tmp_path / "serve.log") as (url, process):
        result = {}

        def send():
            with httpx.Client(base_url=url, timeout=120) as client:
                result["answer"] = post(client, {"instances": big})

        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=url, timeout=10) as client:
            while "reprokit_requests_in_flight 1.0" not in client.get("/metrics").text:
                assert time.monotonic() < deadline, "the request never arrived"
                time.sleep(0.005)
        process.send_signal(signal.SIGTERM)
        sender.join(120)
        # uvicorn finishes the requests in flight, then re-raises the signal it caught
        assert process.wait(60) in (0, -signal.SIGTERM)
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
    answer = result["answer"]
    assert answer.status_code == 200
    proba = [p["probability"] for p in answer.json()["predictions"]]
    np.testing.assert_array_equal(proba, expected(pyfunc, big))


def idle_connection(url: str) -> http.client.HTTPConnection:
    """A keep-alive connection that has had one answer and now waits, as a proxy's pool holds it."""
    address = httpx.URL(url)
    connection = http.client.HTTPConnection(address.host, address.port, timeout=60)
    connection.request("GET", "/health/live")
    answer = connection.getresponse()
    assert answer.status == 200 and b"live" in answer.read()
    return connection


def test_an_idle_connection_outlives_uvicorns_own_five_seconds(service):
    """A proxy reuses a pooled connection after an idle spell (ingress-nginx and AWS ALB keep one
    up to 60 s); a service that closes it first lets a request sent at that moment go unanswered
    (a 502 at the proxy). The service keeps an idle connection 90 s (`--keep-alive-seconds`),
    past uvicorn's default of 5 s."""
    connection = idle_connection(str(service.base_url))
    socket = connection.sock
    time.sleep(7)
    connection.request("GET", "/health/live")  # the server closed it: RemoteDisconnected
    assert connection.getresponse().status == 200 and connection.sock is socket
    connection.close()


def test_the_keep_alive_set_is_the_one_used(tmp_path, telco_package):
    """One second, with two worker processes as the ConfigMap runs them: a worker closes the
    idle connection well inside the 60 s this waits (the default would keep it 90 s)."""
    args = [str(telco_package), "--keep-alive-seconds", "1", "--workers", "2"]
    with scoring_service(args, tmp_path / "serve.log") as (url, _):
        connection = idle_connection(url)
        connection.sock.settimeout(60)
        assert connection.sock.recv(1) == b""  # closed by the service; a timeout raises
        connection.close()


def test_several_workers_share_one_metrics_view(tmp_path, telco_package, pyfunc, rows):
    with scoring_service([str(telco_package), "--workers", "2"], tmp_path / "serve.log") as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            deadline = time.monotonic() + 120
            while client.get("/metrics").text.count("reprokit_model_info{") < 2:
                assert time.monotonic() < deadline, "the second worker never loaded the model"
                time.sleep(0.2)
            answers = [post(client, {"instances": [r]}) for r in rows[:20]]
            text = client.get("/metrics").text
    np.testing.assert_array_equal(
        [a.json()["predictions"][0]["probability"] for a in answers], expected(pyfunc, rows[:20])
    )
    served = [
        line
        for line in text.splitlines()
        if line.startswith("reprokit_requests_total{") and 'route="/invocations",status="200"' in line
    ]
    assert sum(float(line.split()[-1]) for line in served) == 20  # counted across both processes


def test_too_many_records_and_many_bad_ones_are_refused_cheaply(service, rows):
    """The record limit, and a request of many empty records: one short answer listing the
    first problems, while health checks keep answering."""
    answer = post(service, {"instances": [{}] * 10_001})
    assert answer.status_code == 413 and "at most 10000" in answer.json()["error"]
    answer = post(service, {"instances": [{}] * 9_000})
    assert answer.status_code == 422 and len(answer.json()["problems"]) == 20
    required = 18  # the Telco contract's features but total_charges, which is nullable
    assert answer.json()["problems_total"] == 9_000 * required  # the total, though 20 are listed
    assert {p["problem"] for p in answer.json()["problems"]} == {"missing required field"}  # not also "null"
    assert service.get("/health/live").status_code == 200


def test_a_422_lists_every_problem_of_a_record_and_the_total(service, rows):
    """Three bad fields in the second record, one in the fourth: all four, in record then field
    order, and the total; the first and third records are fine."""
    second = {**rows[1], "tenure": "many", "contract": None}
    del second["partner"]
    fourth = {**rows[3], "tenure": 2.5}
    answer = post(service, {"instances": [rows[0], second, rows[2], fourth]})
    assert answer.status_code == 422, answer.text
    assert answer.json() == {
        "error": "the input does not match the contract",
        "problems": [
            {"record": 1, "field": "contract", "problem": "null where the contract requires a value"},
            {"record": 1, "field": "partner", "problem": "missing required field"},
            {"record": 1, "field": "tenure", "problem": "expected a number, got text"},
            {"record": 3, "field": "tenure", "problem": "expected a whole number"},
        ],
        "problems_total": 4,
    }
    unknown = {**rows[0], **{f"extra_{i}": 1 for i in range(25)}}
    answer = post(service, {"instances": [unknown]}).json()
    assert len(answer["problems"]) == 20 and answer["problems_total"] == 25


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/package"], "not a package directory"),
        (["--port", "99999"], "--port must be between 1 and 65535"),
        (["--max-batch", "0"], "--max-batch must be at least 1"),
        (["--keep-alive-seconds", "-1"], "--keep-alive-seconds must be a finite number above 0"),
        (["--keep-alive-seconds", "0"], "--keep-alive-seconds must be a finite number above 0"),
        (["--keep-alive-seconds", "nan"], "--keep-alive-seconds must be a finite number above 0"),
        (["--shadow", "challenger"], "--shadow needs a registry model"),
        (["--canary", "canary"], "--canary needs a registry model"),
        (["models:/m@champion", "--canary", "champion"], "the alias the service serves as its stable model"),
        (["models:/m@champion", "--canary", "can ary;rm -rf ~"], "an alias is letters, digits, _ and -"),
    ],
)
def test_bad_settings_are_one_clear_error(tmp_path, telco_package, args, message):
    import subprocess
    import sys

    model = [] if args[0].startswith(("/", "models:/")) else [str(telco_package)]
    done = subprocess.run(
        [sys.executable, "-m", "reprokit.serving.serve", *model, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            lambda copy: (copy / "MLmodel").write_text((copy / "MLmodel").read_text() + "::: not yaml: [\n"),
            "not an MLflow scikit-learn model (MLmodel: line ",
        ),
        (lambda copy: (copy / "model.skops").unlink(), "model.skops: the model file is missing"),
    ],
    ids=["MLmodel not YAML", "model file missing"],
)
def test_a_package_directory_that_cannot_load_stops_the_service_with_one_line(tmp_path, telco_package, edit, problem):
    """Exit status 3 (uvicorn's for a failed start-up), our one line naming what is wrong, then
    uvicorn's own closing line, and no trace."""
    import shutil
    import subprocess
    import sys

    from servers import free_port

    copy = tmp_path / "package"
    shutil.copytree(telco_package, copy)
    edit(copy)
    done = subprocess.run(
        [sys.executable, "-m", "reprokit.serving.serve", str(copy), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    lines = done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("ERROR")]
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
    assert len(errors) == 2 and f"cannot load {copy}: " in errors[0] and problem in errors[0], done.stderr
    assert errors[1].endswith("Application startup failed. Exiting."), done.stderr
    assert all(line.startswith(("INFO ", "ERROR")) for line in lines), done.stderr  # no line goes on the error


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_service_waiting_for_its_registry_model_stops_on_a_signal(tmp_path, signum):
    """uvicorn's handlers end only a started server: one retrying `models:/...` every 30 s used
    to wait through every SIGTERM (a pod's stop) and Ctrl-C, until SIGKILL."""
    import signal
    import subprocess
    import sys

    from servers import free_port

    log = tmp_path / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    argv = ["models:/nosuch@champion", "--port", str(free_port()), "--poll-seconds", "30"]
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "reprokit.serving.serve", *argv], stderr=stderr, cwd=tmp_path, env=env
        )
    try:
        deadline = time.monotonic() + 300  # only catches a hang
        while "retrying in 30 s" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(getattr(signal, signum))
        assert process.wait(timeout=120) == 3, log.read_text()
    finally:
        process.kill()
    text = log.read_text()
    assert "stopped while waiting for models:/nosuch@champion" in text and "Traceback" not in text, text


def test_docs_serves_the_interactive_openapi_page(service):
    page = service.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in page.text and "/openapi.json" in page.text
    assert (
        'reprokit_requests_total{model_version="",role="",route="/docs",status="200"}' in service.get("/metrics").text
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_the_service_logs_where_it_listens_and_one_line_per_request_at_the_chosen_level(
    tmp_path, telco_package, rows, workers
):
    log = tmp_path / "serve.log"
    args = [str(telco_package), "--workers", str(workers), "--access-log", "info"]
    with scoring_service(args, log) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            assert post(client, {"instances": rows[:3]}).status_code == 200
            assert post(client, {"instances": [{}]}).status_code == 422
            client.get("/version?token=SECRET-QUERY")
        deadline = time.monotonic() + 30
        while log.read_text().count("POST /invocations") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    text = log.read_text()
    port = url.rsplit(":", 1)[1]
    worker_note = "2 workers" if workers == 2 else "1 worker;"
    assert f"INFO reprokit.serve: listening on http://127.0.0.1:{port} once the model is loaded ({worker_note}" in text
    lines = [line for line in text.splitlines() if "reprokit.serve: POST /invocations" in line]
    assert [line.split(": ", 1)[1].rsplit(" ", 2)[0] for line in lines] == [
        "POST /invocations 200",
        "POST /invocations 422",
    ]
    assert all(line.startswith("INFO ") and line.endswith(" ms") for line in lines)
    assert "GET /version 200" in text and "SECRET-QUERY" not in text  # the route, never the query


def test_requests_are_not_logged_by_default(tmp_path, telco_package, rows):
    log = tmp_path / "serve.log"
    with scoring_service([str(telco_package)], log) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            assert post(client, {"instances": rows[:1]}).status_code == 200
    assert "listening on http://127.0.0.1:" in log.read_text() and "POST /invocations" not in log.read_text()


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_an_unexpected_error_is_a_json_500_counted_and_logged_never_a_trace(telco_package, rows, monkeypatch, caplog):
    """A bug past the routing: one JSON line to the client, a 500 counted under the version and
    role that answered (a rollout judges the canary's 5xx share by them), the trace in the log.
    A bug before it: the same answer, counted without a version (in process)."""
    import orjson
    from starlette.testclient import TestClient

    from reprokit.serving import serve
    from reprokit.serving.settings import Settings

    def broken(*args, **kwargs):
        raise RuntimeError("a bug SECRET-DETAIL")

    with TestClient(serve.create_app(Settings(model=str(telco_package)))) as client:
        version = client.get("/version").json()["model_version"]
        for target, labels in (
            (serve, f'model_version="{version}",role="stable"'),
            (orjson, 'model_version="",role=""'),
        ):
            with monkeypatch.context() as patch:
                patch.setattr(target, "labels" if target is serve else "loads", broken)
                answer = client.post("/invocations", json={"instances": rows[:1]})
            assert answer.status_code == 500 and answer.json() == {"error": "internal error"}
            assert "SECRET-DETAIL" not in answer.text
            assert f'reprokit_requests_total{{{labels},route="/invocations",status="500"}} 1.0' in (
                client.get("/metrics").text
            )
        assert client.post("/invocations", json={"instances": rows[:1]}).status_code == 200  # still answering
    assert "failed on a request" in caplog.text and "unexpected error on /invocations" in caplog.text
    assert "SECRET-DETAIL" in caplog.text
