"""The scoring service: `reprokit serve [MODEL]` (FastAPI on uvicorn).

MODEL is a package directory (default `models/package`) or `models:/<name>@<alias>`.
`POST /invocations` takes MLflow's wire formats (`dataframe_split`, `dataframe_records`,
`instances`) and answers, per record, the probability, the label at the package's
threshold, the model version and any warnings (`reprokit.model.scoring` holds the input
policy). Records are checked in the request handler; the model runs in one thread under
the thread budget, on micro-batches: a request waits at most `--max-wait-ms` for others
to join, up to `--max-batch` rows, and never while it is the only one in flight.

Each worker process loads the model and runs a warm-up prediction before it accepts a
connection, so no request meets a worker without a model. `GET /health/live`,
`GET /health/ready` (200 once every one of the `--workers` processes has loaded its model:
they note it in a shared directory), `GET /version`, `GET /metrics` (Prometheus), `GET /openapi.json`
(record fields from the contract) and `GET /docs` (its interactive page). A 422 lists every
problem of a record, up to 20 in all, and the total; `--access-log LEVEL` logs one line per
request. Started on an alias, the service polls it and swaps in
the version it moves to without dropping a request; `--shadow ALIAS` scores that alias
beside every batch and reports the agreement in `/metrics`, never in a response.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from starlette.requests import Request  # resolved by FastAPI at run time: module level
from uvicorn.protocols.http.h11_impl import H11Protocol

from reprokit.core.threads import limit_threads
from reprokit.model.scoring import SCORE_BINS, InputError, check_records, is_text, is_whole, labels
from reprokit.model.scoring_model import ScoringModel, resolve

log = logging.getLogger("reprokit.serve")


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with Nagle's algorithm off on every connection. asyncio turns
    it off only on sockets it recognises as TCP; a socket handed to uvicorn's worker processes
    is not, and a keep-alive response then waits ~40 ms for the client's delayed ACK."""

    def connection_made(self, transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


SETTINGS_ENV = "REPROKIT_SERVE_SETTINGS"
READY_DIR_ENV = "REPROKIT_SERVE_READY_DIR"  # where workers > 1 note that they have loaded the model
MAX_PROBLEMS = 20  # problems listed in one 422 answer
WIRE_FORMATS = ("dataframe_split", "dataframe_records", "instances")


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str = "models/package"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    n_threads: int = 1
    max_batch: int = 64
    max_wait_ms: float = 2.0
    max_body_bytes: int = 1 << 20
    max_records: int = 10_000
    poll_seconds: float = 10.0
    shadow: str | None = None
    graceful_seconds: float = 30.0
    access_log: str = "off"  # the level of one line per request: off, debug, info or warning


class BadRequest(Exception):
    """A request the service refuses: HTTP status and a message naming what is wrong."""

    def __init__(self, status: int, message: str, problems: list[dict[str, Any]] | None = None, total: int = 0):
        super().__init__(message)
        self.status, self.message, self.problems = status, message, problems or []
        self.total = max(total, len(self.problems))  # problems in all; the answer lists the first


# --- Request parsing: MLflow's wire formats to columns --------------------------------


def parse_payload(payload: Any, features: list[str]) -> tuple[dict[str, list[Any]], int]:
    """Columns (feature name -> values) and the record count of a decoded JSON body."""
    if not isinstance(payload, dict):
        raise BadRequest(422, f"expected a JSON object with one of the keys {', '.join(WIRE_FORMATS)}")
    keys = [key for key in WIRE_FORMATS if key in payload]
    if len(keys) != 1 or set(payload) - set(WIRE_FORMATS) - {"params"}:
        raise BadRequest(422, f"expected exactly one of the keys {', '.join(WIRE_FORMATS)}")
    body = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(body, dict) or not isinstance(body.get("columns"), list) or "data" not in body:
            raise BadRequest(422, "dataframe_split: expected an object with 'columns' and 'data'")
        columns, data = body["columns"], body["data"]
        if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
            raise BadRequest(422, "dataframe_split.columns: expected distinct column names")
        if not isinstance(data, list) or not all(isinstance(row, list) and len(row) == len(columns) for row in data):
            raise BadRequest(422, f"dataframe_split.data: expected a list of rows of {len(columns)} values each")
        check_names(columns, features)
        return {name: [row[i] for row in data] for i, name in enumerate(columns)}, len(data)
    if not isinstance(body, list) or not all(isinstance(record, dict) for record in body):
        raise BadRequest(422, f"{keys[0]}: expected a list of records (JSON objects)")
    names: set[str] = set()
    for record in body:
        names.update(record)
    check_names(sorted(names), features)
    return {name: [record.get(name, _MISSING) for record in body] for name in features}, len(body)


class _Missing:
    """A field absent from a record (told apart from an explicit null)."""


_MISSING = _Missing()


def _raise(problems: list[dict[str, Any]], total: int):
    raise BadRequest(422, "the input does not match the contract", problems, total)


def check_names(names: list[str], features: list[str]) -> None:
    unknown = [name for name in names if name not in set(features)]
    if unknown:
        shown = unknown[:MAX_PROBLEMS]
        _raise([{"field": name[:80], "problem": "not a field of the contract"} for name in shown], len(unknown))


def check_payload(columns: dict[str, list[Any]], n: int, model: ScoringModel, max_records: int):
    """Checked records, or a 4xx listing the first problems (record, field, problem: every
    problem of a record, up to MAX_PROBLEMS in all) and how many there are in all."""
    if n == 0:
        raise BadRequest(422, "no records: send at least one")
    if n > max_records:
        raise BadRequest(413, f"{n} records: at most {max_records} per request (--max-records)")
    absent: dict[str, np.ndarray] = {}
    nullable = {f.name for f in model.contract.features if f.nullable}
    for name, values in columns.items():
        rows = [i for i, value in enumerate(values) if value is _MISSING]
        for i in rows:
            values[i] = None
        if rows and name not in nullable:
            absent[name] = np.asarray(rows, dtype=np.int64)
    try:
        checked = check_records(columns, n, model.contract)
    except InputError as exc:
        raise BadRequest(422, str(exc)) from None
    # A missing required field is that, not also a null: its records leave the field's reasons.
    checked.reasons = [
        (field, np.setdiff1d(rows, absent[field], assume_unique=True) if field in absent else rows, message)
        for field, rows, message in checked.reasons
    ]
    checked.reasons += [(field, rows, "missing required field") for field, rows in absent.items()]
    listed, total = checked.problems(MAX_PROBLEMS)
    if total:
        _raise([{"record": i, "field": field, "problem": problem} for i, field, problem in listed], total)
    return checked


# --- Metrics ----------------------------------------------------------------------


class Metrics:
    """The service's Prometheus metrics (one registry per app; shared files with workers > 1)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        if multiprocess:
            from prometheus_client import multiprocess as mp

            mp_collector = mp.MultiProcessCollector(self.registry)
        reg = None if multiprocess else self.registry
        self.requests = Counter(
            "reprokit_requests", "HTTP requests by route and status", ["route", "status"], registry=reg
        )
        self.latency = Histogram(
            "reprokit_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=reg,
        )
        self.batch_rows = Histogram(
            "reprokit_batch_rows", "Rows per model call", buckets=tuple(2.0**i for i in range(11)), registry=reg
        )
        self.scores = Histogram(
            "reprokit_predicted_score", "Predicted probabilities", ["model_version"], buckets=SCORE_BINS, registry=reg
        )
        gauge = {"multiprocess_mode": "livesum"} if multiprocess else {}
        self.in_flight = Gauge("reprokit_requests_in_flight", "Scoring requests being handled", registry=reg, **gauge)
        self.warned = Counter("reprokit_records_warned", "Records scored with a warning", registry=reg)
        gauge = {"multiprocess_mode": "liveall"} if multiprocess else {}
        self.model_info = Gauge(
            "reprokit_model_info", "The model version served", ["model_version"], registry=reg, **gauge
        )
        self.swaps = Counter("reprokit_model_swaps", "Model versions swapped in by alias following", registry=reg)
        self.swap_failures = Counter("reprokit_model_swap_failures", "New versions that failed to load", registry=reg)
        self.shadow_diff = Histogram(
            "reprokit_shadow_score_difference",
            "Shadow minus served probability, per record",
            buckets=(-0.5, -0.2, -0.1, -0.05, -0.02, -0.01, 0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
            registry=reg,
        )
        self.shadow_records = Counter("reprokit_shadow_records", "Records scored by the shadow model", registry=reg)
        self.shadow_agreements = Counter(
            "reprokit_shadow_label_agreements", "Shadow records whose label equals the served one", registry=reg
        )
        # The ratio of the two sums over every worker, when scraped; absent until a record was
        # compared (a per-worker gauge made an idle worker report 0, total disagreement).
        sources = [mp_collector] if multiprocess else [self.shadow_records, self.shadow_agreements]
        self.registry.register(AgreementRatio(sources))

    def show_version(self, old: str | None, new: str) -> None:
        if old is not None:
            self.model_info.labels(old).set(0)
            if not self.multiprocess:  # (worker processes' shared files cannot drop a label)
                self.model_info.remove(old)
        self.model_info.labels(new).set(1)


class AgreementRatio:
    """`reprokit_shadow_label_agreement_ratio`: shadow records whose label agreed over records
    compared, both summed over the `sources` collectors (every worker's counters)."""

    NAME = "reprokit_shadow_label_agreement_ratio"
    PARTS = ("reprokit_shadow_records_total", "reprokit_shadow_label_agreements_total")

    def __init__(self, sources: list[Any]) -> None:
        self.sources = sources

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        totals = dict.fromkeys(self.PARTS, 0.0)
        for source in self.sources:
            for family in source.collect():
                for sample in family.samples:
                    if sample.name in totals:
                        totals[sample.name] += sample.value
        records, agreements = totals[self.PARTS[0]], totals[self.PARTS[1]]
        if records > 0:
            yield GaugeMetricFamily(self.NAME, "Label agreement of shadow and served models", agreements / records)


# --- Serving state: models, the micro-batcher, alias following ------------------------


class Scorer:
    """The served model (and optional shadow), swapped atomically, and the micro-batcher
    feeding one prediction thread."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.model: ScoringModel | None = None
        self.shadow: ScoringModel | None = None
        self.ready = False
        self.in_flight = 0  # requests being checked or waiting for the model
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self.queue: asyncio.Queue | None = None
        self.tasks: list[asyncio.Task] = []

    # Loading (a worker thread, so the event loop keeps answering health checks).
    def load(self, uri: str) -> ScoringModel:
        from reprokit.core.threads import thread_budget
        from reprokit.model.scoring import probe_records

        with thread_budget(self.settings.n_threads):
            model = ScoringModel.load(uri)
            model.probabilities(probe_records(model.contract))  # warm-up: every branch of the transform
        return model

    async def start(self) -> None:
        """Load the model (the server accepts no connection before this returns), then batch."""
        self.queue = asyncio.Queue()
        self.executor.submit(limit_threads, self.settings.n_threads).result()
        await self.first_load()
        self.tasks.append(asyncio.create_task(self.batches()))

    async def first_load(self) -> None:
        while self.model is None:
            try:
                model = await asyncio.get_running_loop().run_in_executor(self.executor, self.load, self.settings.model)
            except Exception as exc:  # noqa: BLE001 - a registry may recover: retry; a directory will not
                if not self.settings.model.startswith("models:/"):
                    raise StartupFailed(f"cannot load {self.settings.model}: {exc}") from None
                log.error(
                    "cannot load %s: %s; retrying in %.0f s", self.settings.model, exc, self.settings.poll_seconds
                )
                await asyncio.sleep(self.settings.poll_seconds)
                continue
            self.model = model
            self.metrics.show_version(None, model.version)
        if self.settings.shadow:
            self.tasks.append(asyncio.create_task(self.follow_shadow()))
        self.ready = True
        log.info("serving %s version %s", self.settings.model, self.model.version)
        if "@" in self.settings.model:
            self.tasks.append(asyncio.create_task(self.follow(self.settings.model)))

    async def follow(self, uri: str) -> None:
        """Poll the alias; when it moves, load and warm up the new version, then swap."""

        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            try:
                _, version = await loop.run_in_executor(None, resolve, uri)
                if version == self.model.version:
                    continue
                model = await loop.run_in_executor(None, self.load, uri)
            except Exception as exc:  # noqa: BLE001 - a registry outage must not stop serving
                self.metrics.swap_failures.inc()
                log.error("alias %s: keeping version %s: %s", uri, self.model.version, exc)
                continue
            old, self.model = self.model, model
            self.metrics.show_version(old.version, model.version)
            self.metrics.swaps.inc()
            log.info("alias %s moved: now serving version %s (was %s)", uri, model.version, old.version)

    async def follow_shadow(self) -> None:
        uri = shadow_uri(self.settings.model, self.settings.shadow)
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, version = await loop.run_in_executor(None, resolve, uri)
                if self.shadow is None or version != self.shadow.version:
                    self.shadow = await loop.run_in_executor(None, self.load, uri)
                    log.info("shadow %s: version %s", uri, self.shadow.version)
            except Exception as exc:  # noqa: BLE001 - no shadow is no harm to responses
                log.error("shadow %s unavailable: %s", uri, exc)
            await asyncio.sleep(self.settings.poll_seconds)

    async def score(self, inputs: pd.DataFrame, model: ScoringModel) -> np.ndarray:
        """Probabilities of records checked against `model`, by that same model."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((inputs, future, model))
        return await future

    async def batches(self) -> None:
        """Collect queued requests into batches and run each on the prediction thread."""
        loop = asyncio.get_running_loop()
        max_wait = self.settings.max_wait_ms / 1000
        while True:
            items = [await self.queue.get()]
            rows = len(items[0][0])
            deadline = loop.time() + max_wait
            while rows < self.settings.max_batch and len(items) < self.in_flight:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    break
                items.append(item)
                rows += len(item[0])
            groups: dict[int, list] = {}  # by the model each request was checked against (a swap may fall between)
            for item in items:
                groups.setdefault(id(item[2]), []).append(item)
            for group in groups.values():
                await self.run_batch(group, loop)

    async def run_batch(self, items: list, loop) -> None:
        """Score one batch of requests checked against the same model; resolve their futures."""
        model, shadow = items[0][2], self.shadow
        frame = items[0][0] if len(items) == 1 else pd.concat([i[0] for i in items], ignore_index=True)
        try:
            proba = await loop.run_in_executor(self.executor, model.probabilities, frame)
        except Exception as exc:  # noqa: BLE001 - handed to each waiting request
            for _, future, _ in items:
                if not future.done():
                    future.set_exception(exc)
            return
        self.metrics.batch_rows.observe(len(frame))
        start = 0
        for inputs, future, _ in items:
            if not future.done():
                future.set_result(proba[start : start + len(inputs)])
            start += len(inputs)
        if shadow is not None:
            loop.run_in_executor(self.executor, self.compare, shadow, model, frame, proba)

    def compare(self, shadow: ScoringModel, model: ScoringModel, frame: pd.DataFrame, proba: np.ndarray) -> None:
        """Score the batch with the shadow model and record the agreement (prediction thread)."""
        try:
            other = shadow.probabilities(frame)
        except Exception as exc:  # noqa: BLE001 - the shadow never affects serving
            log.error("shadow scoring failed: %s", exc)
            return
        for diff in other - proba:
            self.metrics.shadow_diff.observe(float(diff))
        agree = int(np.sum((other >= shadow.threshold) == (proba >= model.threshold)))
        self.metrics.shadow_records.inc(len(proba))
        self.metrics.shadow_agreements.inc(agree)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        # A load still waiting on the registry must not hold the shutdown up.
        self.executor.shutdown(wait=False, cancel_futures=True)


class StartupFailed(Exception):
    """The model cannot be loaded: the worker stops before it accepts a connection."""


class WorkerRoll:
    """Which of the `expected` worker processes have loaded their model: one file, named by
    process id, in a `directory` they share; without one, this process alone."""

    def __init__(self, directory: str | None, expected: int) -> None:
        self.directory, self.expected, self.loaded = directory, expected, False

    def mark_loaded(self) -> None:
        self.loaded = True
        if self.directory:
            with open(os.path.join(self.directory, str(os.getpid())), "w"):
                pass

    def withdraw(self) -> None:
        self.loaded = False
        if self.directory:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.directory, str(os.getpid())))

    def count(self) -> int:
        """Workers alive with a loaded model (a worker that was killed leaves a file: not counted)."""
        if not self.directory:
            return int(self.loaded)
        return sum(1 for name in os.listdir(self.directory) if name.isdigit() and process_alive(int(name)))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def loading_first(app, scorer: Scorer, roll: WorkerRoll):
    """`app` with the lifespan that loads the model before uvicorn accepts connections; a model
    that cannot be loaded fails the start-up with one line (uvicorn exits with status 3)."""

    async def asgi(scope, receive, send):
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await scorer.start()
                except StartupFailed as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                roll.mark_loaded()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                roll.withdraw()
                await scorer.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    return asgi


def shadow_uri(model: str, alias: str) -> str:
    if not model.startswith("models:/"):
        raise InputError("--shadow needs a registry model (models:/<name>@<alias>)")
    name = model[len("models:/") :].split("@")[0].split("/")[0]
    return f"models:/{name}@{alias}"


# --- The application ------------------------------------------------------------------


def create_app(settings: Settings | None = None):
    """The FastAPI application (uvicorn's factory; settings from the environment with workers > 1)."""
    import orjson
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if settings is None:  # a worker process of `--workers N`: its own logging, through the same redaction
        from reprokit.core.redaction import configure_logging

        configure_logging()
        settings = Settings(**json.loads(os.environ[SETTINGS_ENV]))
    if settings.access_log == "debug":
        log.setLevel(logging.DEBUG)
    metrics = Metrics()
    scorer = Scorer(settings, metrics)
    roll = WorkerRoll(os.environ.get(READY_DIR_ENV) if settings.workers > 1 else None, settings.workers)
    app = FastAPI(title="reprokit scoring service", docs_url="/docs", redoc_url=None)
    app.state.scorer = scorer

    def answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
        return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)

    def refuse(exc: BadRequest) -> Response:
        body: dict[str, Any] = {"error": exc.message}
        if exc.problems:  # the first MAX_PROBLEMS, and how many there are in all
            body["problems"], body["problems_total"] = exc.problems, exc.total
        return answer(exc.status, body)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return answer(exc.status_code, {"error": str(exc.detail)})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return answer(422, {"error": "invalid request"})

    access_level = None if settings.access_log == "off" else getattr(logging, settings.access_log.upper())

    @app.middleware("http")
    async def count(request: Request, call_next):
        started = time.perf_counter()
        route = request.url.path if request.url.path in ROUTES else "other"
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - never a stack trace to the client
            log.exception("unexpected error on %s", route)
            response = answer(500, {"error": "internal error"})
        seconds = time.perf_counter() - started
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(seconds)
        if access_level is not None:  # the route, never the raw path or query (they may carry secrets)
            log.log(access_level, "%s %s %d %.1f ms", request.method, route, response.status_code, seconds * 1000)
        return response

    async def read_body(request: Request) -> bytes:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise BadRequest(415, "send the records as application/json")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise BadRequest(413, f"body larger than {settings.max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise BadRequest(413, f"body larger than {settings.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/invocations", openapi_extra={"requestBody": {"content": {"application/json": {"schema": {}}}}})
    async def invocations(request: Request):
        scorer.in_flight += 1
        metrics.in_flight.inc()
        try:
            model = scorer.model
            if model is None:
                return answer(503, {"error": "the model is not loaded yet"})
            try:
                body = await read_body(request)
                try:
                    payload = orjson.loads(body)
                except orjson.JSONDecodeError:
                    raise BadRequest(400, "the body is not valid JSON") from None
                columns, n = parse_payload(payload, model.contract.feature_names)
                if n > 256:  # a large request is checked off the event loop: health checks keep answering
                    checked = await asyncio.to_thread(check_payload, columns, n, model, settings.max_records)
                else:
                    checked = check_payload(columns, n, model, settings.max_records)
            except BadRequest as exc:
                return refuse(exc)
            proba = await scorer.score(checked.inputs, model)
            used = model
        finally:
            scorer.in_flight -= 1
            metrics.in_flight.dec()
        predicted = labels(proba, used.threshold, used.contract)
        for value in proba:
            metrics.scores.labels(used.version).observe(float(value))
        warned = sum(1 for w in checked.warnings if w)
        if warned:
            metrics.warned.inc(warned)
        predictions = [
            {"probability": float(p), "label": label, "model_version": used.version, "warnings": w or []}
            for p, label, w in zip(proba, predicted, checked.warnings, strict=True)
        ]
        headers = {"X-Model-Version": used.version}
        if warned:
            headers["X-Reprokit-Warnings"] = str(warned)
        return answer(200, {"predictions": predictions}, headers)

    @app.get("/health/live")
    async def live():
        return answer(200, {"status": "live"})

    @app.get("/health/ready")
    async def ready():
        loaded = roll.count()
        if not scorer.ready or loaded < settings.workers:
            return answer(503, {"status": "not ready", "model": settings.model, "workers_loaded": loaded})
        return answer(200, {"status": "ready", "model_version": scorer.model.version, "workers_loaded": loaded})

    @app.get("/version")
    async def version():
        if scorer.model is None:
            return answer(503, {"error": "the model is not loaded yet"})
        model = scorer.model
        body = {"model": settings.model, "model_version": model.version, "threshold": model.threshold}
        body["compiled"] = model.compiled is not None
        if scorer.shadow is not None:
            body["shadow_version"] = scorer.shadow.version
        return answer(200, body)

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi():
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version="1", routes=app.routes)
        if scorer.model is not None:
            request = request_schema(scorer.model)
            schema["paths"]["/invocations"]["post"]["requestBody"] = request
        return schema

    app.openapi = openapi
    return loading_first(app, scorer, roll)


ROUTES = {"/invocations", "/health/live", "/health/ready", "/version", "/metrics", "/openapi.json", "/docs"}


def record_schema(model: ScoringModel) -> dict[str, Any]:
    """The JSON schema of one record, from the package's contract."""
    properties, required = {}, []
    for feature in model.contract.features:
        if is_text(feature):
            spec: dict[str, Any] = {"type": "string", "examples": list(feature.values)}
        else:
            spec = {"type": "integer" if is_whole(feature) else "number"}
            if feature.min is not None:
                spec["minimum"] = feature.min
            if feature.max is not None:
                spec["maximum"] = feature.max
            if feature.values is not None:
                spec["examples"] = list(feature.values)
        if feature.nullable:
            spec = {"anyOf": [spec, {"type": "null"}]}
        else:
            required.append(feature.name)
        spec["description"] = f"{feature.type} feature of the dataset contract"
        properties[feature.name] = spec
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def request_schema(model: ScoringModel) -> dict[str, Any]:
    """The `/invocations` request body: MLflow's three wire formats of contract records."""
    record = record_schema(model)
    records = {"type": "array", "items": record, "minItems": 1}
    split = {
        "type": "object",
        "required": ["columns", "data"],
        "properties": {
            "columns": {"type": "array", "items": {"type": "string", "enum": model.contract.feature_names}},
            "data": {"type": "array", "items": {"type": "array"}, "minItems": 1},
        },
    }
    options = [
        {"type": "object", "required": [key], "properties": {key: value}, "additionalProperties": False}
        for key, value in (("dataframe_split", split), ("dataframe_records", records), ("instances", records))
    ]
    return {"required": True, "content": {"application/json": {"schema": {"oneOf": options}}}}


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="reprokit serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="?", default=Settings.model, help="package directory or models:/<name>@<alias>")
    parser.add_argument("--host", default=Settings.host, help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=Settings.port)
    parser.add_argument("--workers", type=int, default=Settings.workers, help="server processes")
    parser.add_argument("--params", default="params.yaml", help="serve.n_threads is the thread budget (if present)")
    parser.add_argument(
        "--threads", type=int, default=None, help="thread budget per worker (default: params' serve.n_threads, else 1)"
    )
    parser.add_argument("--max-batch", type=int, default=Settings.max_batch, help="rows per model call")
    parser.add_argument("--max-wait-ms", type=float, default=Settings.max_wait_ms, help="longest wait for a batch")
    parser.add_argument("--max-body-bytes", type=int, default=Settings.max_body_bytes)
    parser.add_argument("--max-records", type=int, default=Settings.max_records, help="records per request")
    parser.add_argument("--poll-seconds", type=float, default=Settings.poll_seconds, help="alias check interval")
    parser.add_argument("--shadow", default=None, help="alias scored beside the served model (e.g. challenger)")
    parser.add_argument("--graceful-seconds", type=float, default=Settings.graceful_seconds)
    parser.add_argument(
        "--access-log",
        choices=("off", "debug", "info", "warning"),
        default=Settings.access_log,
        help="log one line per request (method, route, status, milliseconds) at this level (default: off)",
    )
    args = parser.parse_args(argv)
    from reprokit.core.config import ConfigError
    from reprokit.model.scoring_model import thread_budget_setting

    try:
        n_threads = thread_budget_setting(args.threads, args.params, "serve")
    except ConfigError as exc:
        parser.error(str(exc))
    if not args.model.startswith("models:/") and not os.path.isfile(os.path.join(args.model, "MLmodel")):
        parser.error(
            f"{args.model}: not a package directory (no MLmodel); run `dvc repro` or give models:/<name>@<alias>"
        )
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    for name, value, low in (
        ("--workers", args.workers, 1),
        ("--threads", n_threads, 1),
        ("--max-batch", args.max_batch, 1),
        ("--max-body-bytes", args.max_body_bytes, 1),
        ("--max-records", args.max_records, 1),
    ):
        if value < low:
            parser.error(f"{name} must be at least {low}")
    for name, value in (("--max-wait-ms", args.max_wait_ms), ("--poll-seconds", args.poll_seconds)):
        if not math.isfinite(value) or value < 0:
            parser.error(f"{name} must be a finite number of at least 0")
    if args.shadow and not args.model.startswith("models:/"):
        parser.error("--shadow needs a registry model: models:/<name>@<alias>")
    return Settings(
        model=args.model,
        host=args.host,
        port=args.port,
        workers=args.workers,
        n_threads=n_threads,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_body_bytes=args.max_body_bytes,
        max_records=args.max_records,
        poll_seconds=args.poll_seconds,
        shadow=args.shadow,
        graceful_seconds=args.graceful_seconds,
        access_log=args.access_log,
    )


def main(argv: list[str] | None = None) -> None:
    import tempfile

    import uvicorn

    settings = parse_args(argv)
    from reprokit.core.redaction import configure_logging

    configure_logging()
    log.info(
        "listening on http://%s:%d (%d worker%s; docs: /docs, metrics: /metrics)",
        settings.host if ":" not in settings.host else f"[{settings.host}]",
        settings.port,
        settings.workers,
        "s" if settings.workers > 1 else "",
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.n_threads))  # before any OpenMP runtime starts
    common = dict(
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=settings.graceful_seconds,
        http=NoDelayH11Protocol,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)
        return
    os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
    with tempfile.TemporaryDirectory(prefix="reprokit-metrics-") as shared:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
        os.environ[READY_DIR_ENV] = os.path.join(shared, "loaded")
        os.mkdir(os.environ[READY_DIR_ENV])
        uvicorn.run("reprokit.serving.serve:create_app", factory=True, workers=settings.workers, **common)


if __name__ == "__main__":
    main()
