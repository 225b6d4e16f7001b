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

`--canary ALIAS` serves that alias to the share of requests its version's `canary_weight` tag
sets in the registry (`reprokit canary`, `reprokit rollout`), optionally to one segment
(`canary_segment`, `header=value`). A request's routing key (the `X-Routing-Key` header, else
its first record's id field, else random) picks its side, the same side every time for a
given weight; `X-Model-Route: canary` or `stable` forces it. Responses name the version and
role (`X-Model-Version`, `X-Model-Role`); `/metrics` labels requests, latency and scores by both.
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
import re
import socket
import time
from typing import Any

from starlette.requests import Request  # resolved by FastAPI at run time: module level
from uvicorn.protocols.http.h11_impl import H11Protocol

from reprokit.model.scoring import labels
from reprokit.model.scoring_model import ScoringModel
from reprokit.model.split import KEY_HEADER, ROLES, ROUTE_HEADER
from reprokit.serving.metrics import Metrics
from reprokit.serving.requests import BadRequest, check_payload, first_id, parse_payload, request_schema
from reprokit.serving.scorer import READY_DIR_ENV, SETTINGS_ENV, Scorer, Settings, WorkerRoll, loading_first

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
                if n > 256:  # a large request is checked off the event loop: health checks keep answering
                    checked = await asyncio.to_thread(check_payload, columns, n, model, settings.max_records)
                else:
                    checked = check_payload(columns, n, model, settings.max_records)
            except BadRequest as exc:
                return refuse(exc, answered)
            try:
                proba = await scorer.score(checked, model, role == "stable")
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
            return respond(model, role, proba, checked, answered)
        except Exception:  # noqa: BLE001 - counted under the version and role that failed
            log.exception("version %s (%s) failed on a request", model.version, role)
            return answer(500, {"error": "internal error"}, answered)

    def respond(model: ScoringModel, role: str, proba, checked, answered: dict[str, str]) -> Response:
        predicted = labels(proba, model.threshold, model.contract)
        histogram = metrics.scores.labels(model.version, role)
        for value in proba:
            histogram.observe(float(value))
        warned = sum(1 for w in checked.warnings if w)
        if warned:
            metrics.warned.inc(warned)
        predictions = [
            {"probability": float(p), "label": label, "model_version": model.version, "warnings": w or []}
            for p, label, w in zip(proba, predicted, checked.warnings, strict=True)
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


ENV_PREFIX = "REPROKIT_SERVE_"


def build_parser(model_default: str = Settings.model, exit_on_error: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reprokit serve",
        description=__doc__,
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        exit_on_error=exit_on_error,
    )
    parser.add_argument("model", nargs="?", default=model_default, help="package directory or models:/<name>@<alias>")
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
    parser.add_argument(
        "--canary",
        default=None,
        help="alias served to a share of requests: its version's canary_weight tag in the registry (e.g. canary)",
    )
    parser.add_argument("--graceful-seconds", type=float, default=Settings.graceful_seconds)
    parser.add_argument(
        "--access-log",
        choices=("off", "debug", "info", "warning"),
        default=Settings.access_log,
        help="log one line per request (method, route, status, milliseconds) at this level (default: off)",
    )
    return parser


ENVIRONMENT_HELP = f"""\
Every option can also come from the environment (a Kubernetes ConfigMap's way in, see deploy/):
{ENV_PREFIX}<OPTION> with the option's name in capitals and `_` for `-`, e.g. {ENV_PREFIX}WORKERS=2,
{ENV_PREFIX}MAX_WAIT_MS=2; {ENV_PREFIX}MODEL for MODEL. The command line wins over the environment."""


def from_environment(environ) -> tuple[str | None, list[str]]:
    """MODEL and the options the environment sets (`REPROKIT_SERVE_<OPTION>`; an empty value is
    unset), each checked alone so that a bad value is one error naming its variable. Unknown
    `REPROKIT_SERVE_*` names are refused, so that a misspelt setting does not pass unnoticed; the
    two the service sets for its own worker processes are its own."""
    checker = build_parser(exit_on_error=False)
    options = [dest for dest in vars(checker.parse_args([])) if dest != "model"]  # each `--x-y` has dest `x_y`
    flags = {f"{ENV_PREFIX}{dest.upper()}": f"--{dest.replace('_', '-')}" for dest in options}
    args: list[str] = []
    for variable in sorted(name for name in environ if name.startswith(ENV_PREFIX)):
        value = environ[variable]
        if variable in (f"{ENV_PREFIX}MODEL", SETTINGS_ENV, READY_DIR_ENV) or value == "":
            continue
        if SERVICE_LINK.fullmatch(variable) and (variable not in flags or "://" in value):
            raise argparse.ArgumentTypeError(
                f"{variable}={value[:40]!r} looks like a Kubernetes service link (a Service named reprokit-serve "
                "in the namespace): set `enableServiceLinks: false` in the pod spec, as deploy/deployment.yaml does"
            )
        if variable not in flags:
            known = ", ".join(sorted([f"{ENV_PREFIX}MODEL", *flags]))
            raise argparse.ArgumentTypeError(f"{variable}: not a setting of reprokit serve (known: {known})")
        setting = f"{flags[variable]}={value}"  # one word: a value may start with `-`
        try:
            checker.parse_args([setting])
        except argparse.ArgumentError as exc:
            raise argparse.ArgumentTypeError(f"{variable}={value[:40]!r}: {exc.message}") from None
        args.append(setting)
    return environ.get(f"{ENV_PREFIX}MODEL") or None, args


# The variables Kubernetes gives a pod for each Service of its namespace (`<NAME>_SERVICE_HOST`,
# `<NAME>_PORT=tcp://...`, ...) when service links are on: for a Service named reprokit-serve they
# share this prefix, and `REPROKIT_SERVE_PORT` would be its address.
SERVICE_LINK = re.compile(rf"{ENV_PREFIX}(SERVICE_(HOST|PORT)\w*|PORT(_\d+_(TCP|UDP|SCTP)\w*)?)")


def parse_args(argv: list[str] | None = None, environ=None) -> Settings:
    import sys

    environ = os.environ if environ is None else environ
    try:
        model, env_args = from_environment(environ)
    except argparse.ArgumentTypeError as exc:
        build_parser().error(str(exc))
    parser = build_parser(model or Settings.model)
    args = parser.parse_args([*env_args, *(sys.argv[1:] if argv is None else argv)])
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
    for name, value in (
        ("--max-wait-ms", args.max_wait_ms),
        ("--poll-seconds", args.poll_seconds),
        ("--graceful-seconds", args.graceful_seconds),
    ):
        if not math.isfinite(value) or value < 0:
            parser.error(f"{name} must be a finite number of at least 0")
    from reprokit.model.split import ALIAS

    served = args.model.split("@", 1)[1] if "@" in args.model else None
    for name, alias in (("--shadow", args.shadow), ("--canary", args.canary)):
        if alias and not args.model.startswith("models:/"):
            parser.error(f"{name} needs a registry model: models:/<name>@<alias>")
        if alias and not ALIAS.fullmatch(alias):
            parser.error(f"{name} {alias[:80]!r}: an alias is letters, digits, _ and -")
        if alias and alias == served:
            parser.error(f"{name} {alias}: the alias the service serves as its stable model")
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
        canary=args.canary,
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
