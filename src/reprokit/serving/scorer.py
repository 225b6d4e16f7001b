"""The serving state of one process: the model, the micro-batcher that runs it under the thread
budget, alias following, the canary and its share, and the shadow version (Scorer), and
readiness across `--workers` processes (WorkerRoll)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from reprokit.core.threads import limit_threads, thread_budget
from reprokit.model.compiled import columns_form
from reprokit.model.scoring import InputError, probe_records
from reprokit.model.scoring_model import ScoringModel, resolve
from reprokit.model.split import Split
from reprokit.serving.metrics import Metrics
from reprokit.serving.requests import Payload, check_payloads
from reprokit.serving.settings import Settings

# A lone request of at most this many records, for compiled trees and no shadow, is scored
# on the event loop (`Scorer.batches`).
INLINE_RECORDS = 8

log = logging.getLogger("reprokit.serve")


RETRY_SECONDS = 60.0  # a canary version that failed to load is tried again after this


class Scorer:
    """The served model (and optional shadow), swapped atomically, and the micro-batcher
    feeding one prediction thread (a lone small request that the compiled trees score is
    scored on the event loop)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.model: ScoringModel | None = None
        self.shadow: ScoringModel | None = None
        self.canary: Canary | None = None  # replaced whole: a request reads one consistent split
        self.ready = False
        self.in_flight = 0  # requests being read, checked or waiting for the model
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self.queue: asyncio.Queue | None = None
        self.tasks: list[asyncio.Task] = []

    # Loading (a worker thread, so the event loop keeps answering health checks).
    def load(self, uri: str) -> ScoringModel:
        with thread_budget(self.settings.n_threads):
            model = ScoringModel.load(uri)
            probes = probe_records(model.contract)  # warm-up: every branch of the transform, both forms
            model.probabilities(probes)
            model.probabilities_of(columns_form(probes))
        return model

    async def start(self) -> None:
        """Load the model (the server accepts no connection before this returns), then batch."""
        self.queue = asyncio.Queue()
        self.executor.submit(limit_threads, self.settings.n_threads).result()
        limit_threads(self.settings.n_threads)  # this thread scores a lone small request (`batches`)
        await self.first_load()
        self.tasks.append(asyncio.create_task(self.batches()))

    async def first_load(self) -> None:
        with stop_requested() as stopping:
            while self.model is None:
                try:
                    model = await asyncio.get_running_loop().run_in_executor(
                        self.executor, self.load, self.settings.model
                    )
                except Exception as exc:  # noqa: BLE001 - a registry may recover: retry; a directory will not
                    if not self.settings.model.startswith("models:/"):
                        raise StartupFailed(f"cannot load {self.settings.model}: {exc}") from None
                    log.error(
                        "cannot load %s: %s; retrying in %.0f s", self.settings.model, exc, self.settings.poll_seconds
                    )
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stopping.wait(), self.settings.poll_seconds)
                    if stopping.is_set():
                        raise StartupFailed(f"stopped while waiting for {self.settings.model}") from None
                    continue
                self.model = model
                self.metrics.show_version(None, model.version)
        if self.settings.shadow:
            self.tasks.append(asyncio.create_task(self.follow_shadow()))
        if self.settings.canary:
            self.tasks.append(asyncio.create_task(self.follow_canary()))
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
        uri = registry_uri(self.settings.model, self.settings.shadow)
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

    async def follow_canary(self) -> None:
        """Poll the canary alias and its split tags. A new canary version receives traffic only
        once it is loaded and warmed up; one that cannot load (tried again after RETRY_SECONDS)
        or a removed alias means no canary traffic; a registry that does not answer holds the
        split last read."""
        uri = registry_uri(self.settings.model, self.settings.canary)
        name = uri[len("models:/") :].split("@")[0]
        loop = asyncio.get_running_loop()
        failed: dict[str, float] = {}  # version -> when it failed to load: tried again after RETRY_SECONDS
        said_unset = False
        while True:
            try:
                split = await loop.run_in_executor(None, read_canary, name, self.settings.canary)
            except Exception as exc:  # noqa: BLE001 - a registry outage holds the split last read
                log.error("canary %s: registry unavailable, keeping the current split: %s", uri, exc)
                await asyncio.sleep(self.settings.poll_seconds)
                continue
            current, model = self.canary, None
            if split.version is None or loop.time() - failed.get(split.version, -math.inf) < RETRY_SECONDS:
                pass
            elif current is not None and current.model.version == split.version:
                model = current.model
            else:
                try:
                    model = await loop.run_in_executor(None, self.load, f"models:/{name}/{split.version}")
                    failed.pop(split.version, None)
                except Exception as exc:  # noqa: BLE001 - a canary that cannot load gets no traffic
                    failed[split.version] = loop.time()
                    self.metrics.swap_failures.inc()
                    log.error("canary %s version %s cannot be loaded; no traffic to it: %s", uri, split.version, exc)
            if split.version is None and not said_unset:
                log.info("canary %s is not set: all traffic to the stable model", uri)
            said_unset = split.version is None
            self.set_canary(Canary(model, split) if model is not None else None)
            await asyncio.sleep(self.settings.poll_seconds)

    def set_canary(self, canary: Canary | None) -> None:
        old = self.canary
        if (old and (old.model.version, old.split)) == (canary and (canary.model.version, canary.split)):
            return
        self.canary = canary
        self.metrics.show_canary(old.model.version if old else None, canary.model.version if canary else None)
        self.metrics.canary_weight.set(canary.split.weight if canary else 0)
        if canary is None:
            log.info("canary: none (all traffic to stable)")
        else:
            segment = f" of requests with {'='.join(canary.split.segment)}" if canary.split.segment else ""
            log.info("canary: version %s at %g%%%s", canary.model.version, canary.split.weight, segment)

    async def score(self, payload: Payload, model: ScoringModel, stable: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """A request's records checked against `model` and scored by that same model (the
        shadow is compared with the stable model's batches only): their probabilities and
        warnings, or the request's `BadRequest`. A micro-batch checks the records of its
        requests together, and scores those of the requests that pass in one model call."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((payload, future, model, stable))
        return await future

    async def batches(self) -> None:
        """Collect queued requests into batches and run each on the prediction thread (or
        here: a lone small request)."""
        loop = asyncio.get_running_loop()
        max_wait = self.settings.max_wait_ms / 1000
        while True:
            items = [await self.queue.get()]
            rows = items[0][0].n
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
                rows += item[0].n
            groups: dict[tuple, list] = {}  # by the model each request was checked against (a swap may fall between)
            for item in items:
                groups.setdefault((id(item[2]), item[3]), []).append(item)
            # A batch that mixes stable and canary requests runs one model after the other, in
            # a random order: a fixed order would make one side wait one call longer every time,
            # and a rollout would read that as the canary's latency.
            order = list(groups)
            if len(order) > 1:
                random.shuffle(order)
            # A request alone in its batch, of a few records that the compiled trees score, is
            # checked and scored right here (about 0.3 ms): handing it to the prediction thread
            # and back cost more than that (single records at concurrency 1: p95 2.0 -> 1.3 ms).
            # Decided on the whole batch, never per model, so stable and canary requests take the
            # same path whatever their share; never with a shadow, whose comparison runs on the
            # prediction thread (one model computation at a time, as the thread budget says).
            first = items[0]
            inline = (
                len(items) == 1
                and first[0].n <= INLINE_RECORDS
                and self.shadow is None
                and first[2].scores_quickly(first[0].n)
            )
            for key in order:
                await self.run_batch(groups[key], loop, inline)

    async def run_batch(self, items: list, loop, inline: bool = False) -> None:
        """Check and score one batch of requests routed to the same model (on the prediction
        thread, or on this one when `inline`); resolve their futures."""
        model, shadow = items[0][2], self.shadow if items[0][3] else None
        try:
            if inline:
                answers, calls = self.check_and_score(model, [i[0] for i in items])
            else:
                answers, calls = await loop.run_in_executor(
                    self.executor, self.check_and_score, model, [i[0] for i in items]
                )
        except Exception as exc:  # noqa: BLE001 - handed to each waiting request
            for _, future, _, _ in items:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future, _, _), answer in zip(items, answers, strict=True):
            if not future.done():
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
        for columns, proba in calls:
            self.metrics.batch_rows.observe(len(proba))
            if shadow is not None:
                loop.run_in_executor(self.executor, self.compare, shadow, model, columns, proba)

    @staticmethod
    def check_and_score(model: ScoringModel, payloads: list[Payload]) -> tuple[list, list]:
        """On the prediction thread (or the event loop: `batches`): the batch's records checked
        together, those of the requests that pass scored in one model call. Returns each
        request's answer ((probabilities, warnings), its 422, or the model's exception) and the
        model calls made (columns and probabilities): a request gets the answer it would get alone."""
        try:
            checked, verdicts = check_payloads(payloads, model.contract)
        except Exception as exc:  # noqa: BLE001 - a request the check cannot take never fails its neighbours
            if len(payloads) == 1:
                raise
            log.warning("a micro-batch's joint check failed (%s): its requests are checked apart", type(exc).__name__)
            answers: list = []
            calls: list = []
            for payload in payloads:
                try:
                    answer, call = Scorer.check_and_score(model, [payload])
                except Exception as alone:  # noqa: BLE001 - that request's own answer
                    answer, call = [alone], []
                answers += answer
                calls += call
            return answers, calls
        counts = [p.n for p in payloads]
        passed = [verdict is None for verdict in verdicts]
        if not any(passed):
            return verdicts, []
        columns = checked.columns
        if not all(passed):
            keep = np.repeat(passed, counts)
            columns = {
                name: column[keep].reset_index(drop=True) if isinstance(column, pd.Series) else column[keep]
                for name, column in columns.items()
            }
        try:
            proba = model.probabilities_of(columns)
        except Exception as exc:  # noqa: BLE001 - the scored requests' answer; the refused keep their 422
            return [exc if verdict is None else verdict for verdict in verdicts], []
        answers, start, scored = [], 0, 0
        for n, verdict in zip(counts, verdicts, strict=True):
            if verdict is None:
                answers.append((proba[scored : scored + n], checked.warnings[start : start + n]))
                scored += n
            else:
                answers.append(verdict)
            start += n
        return answers, [(columns, proba)]

    def compare(self, shadow: ScoringModel, model: ScoringModel, columns: dict[str, Any], proba: np.ndarray) -> None:
        """Score the batch with the shadow model and record the agreement (prediction thread)."""
        try:
            other = shadow.probabilities_of(columns)
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


@contextlib.contextmanager
def stop_requested():
    """An event set by SIGTERM or SIGINT while the block runs. uvicorn's own handlers (kept, and
    called too) only end a server that has started: one still waiting for its registry model
    would otherwise wait through every stop request (a pod's, a terminal's Ctrl-C)."""
    import signal

    loop, stopping = asyncio.get_running_loop(), asyncio.Event()
    kept = {}

    def handler(signum, frame) -> None:
        loop.call_soon_threadsafe(stopping.set)
        if callable(kept[signum]):
            kept[signum](signum, frame)

    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            kept[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread (an app run in a test's thread): nothing to catch
        pass
    try:
        yield stopping
    finally:
        for signum, previous in kept.items():
            signal.signal(signum, previous)


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


@dataclasses.dataclass(frozen=True)
class Canary:
    """The canary model and the split that sends requests to it."""

    model: ScoringModel
    split: Split


def registry_uri(model: str, alias: str) -> str:
    """`models:/<name>@<alias>` of the registered model the service serves."""
    if not model.startswith("models:/"):
        raise InputError("--shadow and --canary need a registry model (models:/<name>@<alias>)")
    name = model[len("models:/") :].split("@")[0].split("/")[0]
    return f"models:/{name}@{alias}"


def read_canary(name: str, alias: str) -> Split:
    """The registry's split now (a worker thread: the client's first use may take a while)."""
    import mlflow

    from reprokit.model.split import read_split

    return read_split(mlflow.MlflowClient(), name, alias)
