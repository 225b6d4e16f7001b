"""The scoring service: `reprokit serve [MODEL]` (FastAPI on uvicorn).

MODEL is a package directory (default `models/package`) or `models:/<name>@<alias>`.
`POST /invocations` takes MLflow's wire formats (`dataframe_split`, `dataframe_records`,
`instances`) and answers, per record, the probability, the label at the package's
threshold, the model version and any warnings (`reprokit.model.scoring` holds the input
policy). The request handler checks a request's shape; its records are checked and scored
in one thread under the thread budget, on micro-batches: a request waits at most
`--max-wait-ms` for others to join, up to `--max-batch` rows, and never while it is the only
one in flight; the records of a micro-batch are checked together (the input policy's numpy
calls once per field for all of them, each request answered as it would be alone) and those
of the requests that pass scored in one model call.

Each worker process loads the model and runs a warm-up prediction before it accepts a
connection, so no request meets a worker without a model. `GET /health/live`,
`GET /health/ready` (200 once every one of the `--workers` processes has loaded its model:
they note it in a shared directory), `GET /version`, `GET /metrics` (Prometheus), `GET /openapi.json`
(record fields from the contract) and `GET /docs` (its interactive page). A 422 lists every
problem of a record, up to 20 in all, and the total; `--access-log LEVEL` logs one line per
request. Started on an alias, the service polls it and swaps in
the version it moves to without dropping a request; `--shadow ALIAS` scores that alias
beside every batch and reports the agreement in `/metrics`, never in a response.

`--canary ALIAS` serves that alias to the share of requests its version's `canary_weight` tag
sets in the registry (`reprokit canary`, `reprokit rollout`), optionally to one segment
(`canary_segment`, `header=value`). A request's routing key (the `X-Routing-Key` header, else
its first record's id field, else random) picks its side, the same side every time for a
given weight; `X-Model-Route: canary` or `stable` forces it. Responses name the version and
role (`X-Model-Version`, `X-Model-Role`); `/metrics` labels requests, latency and scores by both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import time
from typing import Any

from starlette.requests import Request  # resolved by FastAPI at run time: module level
from uvicorn.protocols.http.h11_impl import H11Protocol

from reprokit.model.scoring import labels
from reprokit.model.scoring_model import ScoringModel
from reprokit.model.split import KEY_HEADER, ROLES, ROUTE_HEADER
from reprokit.serving.metrics import Metrics
from reprokit.serving.requests import BadRequest, first_id, parse_payload, request_schema, shape_payload
from reprokit.serving.scorer import Scorer, WorkerRoll, loading_first
from reprokit.serving.settings import READY_DIR_ENV, SETTINGS_ENV, Settings, parse_args

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


# --- Request parsing: MLflow's wire formats to columns --------------------------------


# --- Metrics ----------------------------------------------------------------------


# --- Serving state: models, the micro-batcher, alias following ------------------------


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

    def refuse(exc: BadRequest, headers: dict[str, str] | None = None) -> Response:
        body: dict[str, Any] = {"error": exc.message}
        if exc.problems:  # the first MAX_PROBLEMS, and how many there are in all
            body["problems"], body["problems_total"] = exc.problems, exc.total
        return answer(exc.status, body, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return answer(exc.status_code, {"error": str(exc.detail)})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return answer(422, {"error": "invalid request"})

    access_level = None if settings.access_log == "off" else getattr(logging, settings.access_log.upper())

    @app.exception_handler(Exception)
    async def internal_error(request, exc):  # starlette re-raises it: `counted` logs it
        return answer(500, {"error": "internal error"})

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

    def route(headers, payload: Any, stable: ScoringModel) -> tuple[ScoringModel, str]:
        """The model and role that answer a request: the forced route, else the canary's
        split of its routing key (a header, else the first record's id, else random)."""
        canary = scorer.canary
        forced = headers.get(ROUTE_HEADER)
        if forced is not None:
            forced = forced.strip().lower()
            if forced not in ROLES:
                raise BadRequest(400, f"{ROUTE_HEADER}: expected stable or canary")
            if forced == "canary":
                if canary is None:
                    raise BadRequest(503, "no canary is being served")
                return canary.model, "canary"
            return stable, "stable"
        if canary is None or not canary.split.in_segment(headers):
            return stable, "stable"
        key = headers.get(KEY_HEADER)
        if key is None:
            key = first_id(payload, stable.contract)
        return (canary.model, "canary") if canary.split.to_canary(key) else (stable, "stable")

    @app.post("/invocations", openapi_extra={"requestBody": {"content": {"application/json": {"schema": {}}}}})
    async def invocations(request: Request):
        scorer.in_flight += 1
        metrics.in_flight.inc()
        answered: dict[str, str] = {}
        try:
            stable = scorer.model
            if stable is None:
                return answer(503, {"error": "the model is not loaded yet"})
            try:
                body = await read_body(request)
                try:
                    payload = orjson.loads(body)
                except orjson.JSONDecodeError:
                    raise BadRequest(400, "the body is not valid JSON") from None
                model, role = route(request.headers, payload, stable)
                answered = {"X-Model-Version": model.version, "X-Model-Role": role}
                columns, n = parse_payload(payload, model.contract)
                shaped = shape_payload(columns, n, model.contract, settings.max_records)
            except BadRequest as exc:
                return refuse(exc, answered)
            try:  # checked with the other requests of its micro-batch (`Scorer.batches`)
                proba, warnings = await scorer.score(shaped, model, role == "stable")
            except BadRequest as exc:
                return refuse(exc, answered)
            except Exception:  # noqa: BLE001 - counted under the version and role that failed
                log.exception("version %s (%s) failed to score a request", model.version, role)
                return answer(500, {"error": "internal error"}, answered)
        except Exception:  # noqa: BLE001 - after routing: a 500 under the version and role (a rollout counts it)
            if not answered:
                raise
            log.exception("version %s (%s) failed on a request", model.version, role)
            return answer(500, {"error": "internal error"}, answered)
        finally:
            scorer.in_flight -= 1
            metrics.in_flight.dec()
        try:
            return respond(model, role, proba, warnings, answered)
        except Exception:  # noqa: BLE001 - counted under the version and role that failed
            log.exception("version %s (%s) failed on a request", model.version, role)
            return answer(500, {"error": "internal error"}, answered)

    def respond(model: ScoringModel, role: str, proba, warnings, answered: dict[str, str]) -> Response:
        predicted = labels(proba, model.threshold, model.contract)
        histogram = metrics.scores.labels(model.version, role)
        for value in proba:
            histogram.observe(float(value))
        warned = sum(1 for w in warnings if w)
        if warned:
            metrics.warned.inc(warned)
        predictions = [
            {"probability": float(p), "label": label, "model_version": model.version, "warnings": w or []}
            for p, label, w in zip(proba, predicted, warnings, strict=True)
        ]
        if warned:
            answered["X-Reprokit-Warnings"] = str(warned)
        return answer(200, {"predictions": predictions}, answered)

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
        canary = scorer.canary
        if canary is not None:
            body["canary_version"], body["canary_weight"] = canary.model.version, canary.split.weight
            if canary.split.segment:
                body["canary_segment"] = "=".join(canary.split.segment)
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
    return loading_first(counted(app, metrics, access_level), scorer, roll)


def counted(app, metrics: Metrics, access_level: int | None):
    """`app` with every HTTP request counted and timed in `metrics` by route, status, model
    version and role (the response's X-Model-Version and X-Model-Role), and logged at
    `access_level`. Plain ASGI: starlette's `BaseHTTPMiddleware` costs a task and a stream
    per request."""
    import orjson

    failed = [(b"content-type", b"application/json")]

    async def asgi(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in ROUTES else "other"
        seen = {"status": 500, "version": "", "role": ""}

        async def sending(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for key, value in message.get("headers", ()):
                    if key == b"x-model-version":
                        seen["version"] = value.decode("latin-1")
                    elif key == b"x-model-role":
                        seen["role"] = value.decode("latin-1")
                seen["started"] = True
            await send(message)

        try:
            await app(scope, receive, sending)
        except Exception:  # noqa: BLE001 - never a stack trace to the client
            log.exception("unexpected error on %s", route)
            if "started" not in seen:
                body = orjson.dumps({"error": "internal error"})
                await send({"type": "http.response.start", "status": 500, "headers": failed})
                await send({"type": "http.response.body", "body": body})
        seconds = time.perf_counter() - started
        status, version, role = seen["status"], seen["version"], seen["role"]
        metrics.requests.labels(route, str(status), version, role).inc()
        metrics.latency.labels(route, version, role).observe(seconds)
        if access_level is not None:  # the route, never the raw path or query (they may carry secrets)
            log.log(access_level, "%s %s %d %.1f ms", scope["method"], route, status, seconds * 1000)

    return asgi


ROUTES = {"/invocations", "/health/live", "/health/ready", "/version", "/metrics", "/openapi.json", "/docs"}


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv, description=__doc__)
    from reprokit.core.progress import mlflow_bars_as_ours
    from reprokit.core.redaction import configure_logging

    configure_logging()
    with mlflow_bars_as_ours():  # a log file never gets MLflow's download bars (a registry version)
        serve(settings)


def serve(settings: Settings) -> None:
    """Run uvicorn with `settings`: one process, or `settings.workers` sharing metrics and readiness."""
    import tempfile

    import uvicorn

    log.info(  # each process loads the model before it accepts a connection: say so, in case it cannot
        "listening on http://%s:%d once the model is loaded (%d worker%s; docs: /docs, metrics: /metrics)",
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
        timeout_keep_alive=settings.keep_alive_seconds,
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
