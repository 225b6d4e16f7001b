"""The service's Prometheus metrics: requests, latency, batch sizes, the score histogram, the
model versions and the canary's weight, and the shadow comparison, summed across `--workers`
processes. Requests, latency and scores carry the version and role (stable or canary) that
answered, so that any Prometheus can compare a canary with the stable model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from reprokit.model.scoring import SCORE_BINS


class Metrics:
    """The service's Prometheus metrics (one registry per app; shared files with workers > 1)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        if multiprocess:
            mp_collector = WorkerFiles(os.environ["PROMETHEUS_MULTIPROC_DIR"])
            self.registry.register(mp_collector)
        reg = None if multiprocess else self.registry
        self.requests = Counter(
            "reprokit_requests",
            "HTTP requests by route, status, and the model version and role that answered (empty: none)",
            ["route", "status", "model_version", "role"],
            registry=reg,
        )
        self.latency = Histogram(
            "reprokit_request_seconds",
            "Request latency by route, and the model version and role that answered",
            ["route", "model_version", "role"],
            buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=reg,
        )
        self.batch_rows = Histogram(
            "reprokit_batch_rows", "Rows per model call", buckets=tuple(2.0**i for i in range(11)), registry=reg
        )
        self.scores = Histogram(
            "reprokit_predicted_score",
            "Predicted probabilities by model version and role",
            ["model_version", "role"],
            buckets=SCORE_BINS,
            registry=reg,
        )
        gauge = {"multiprocess_mode": "livesum"} if multiprocess else {}
        self.in_flight = Gauge("reprokit_requests_in_flight", "Scoring requests being handled", registry=reg, **gauge)
        self.warned = Counter("reprokit_records_warned", "Records scored with a warning", registry=reg)
        gauge = {"multiprocess_mode": "liveall"} if multiprocess else {}
        self.model_info = Gauge(
            "reprokit_model_info",
            "The model versions served, by role",
            ["model_version", "role"],
            registry=reg,
            **gauge,
        )
        self.canary_weight = Gauge(
            "reprokit_canary_weight_percent", "The share of requests routed to the canary", registry=reg, **gauge
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

    def show_version(self, old: str | None, new: str | None, role: str = "stable") -> None:
        if old is not None:
            self.model_info.labels(old, role).set(0)
            if not self.multiprocess:  # (worker processes' shared files cannot drop a label)
                self.model_info.remove(old, role)
        if new is not None:
            self.model_info.labels(new, role).set(1)

    def show_canary(self, old: str | None, new: str | None) -> None:
        if old != new:
            self.show_version(old, new, "canary")


class WorkerFiles:
    """Every worker's metrics, merged from the files in the shared folder as prometheus_client's
    MultiProcessCollector merges them, less the files a starting worker has created but not yet
    sized: read in that moment, one empty file failed the whole merge and the starting worker
    with it (prometheus/client_python#1199). A file only grows, so a sized one reads whole."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self):
        from prometheus_client.multiprocess import MultiProcessCollector

        sized = []
        for file in Path(self.path).glob("*.db"):
            try:
                if file.stat().st_size > 0:
                    sized.append(str(file))
            except FileNotFoundError:  # a file removed since the listing
                continue
        return MultiProcessCollector.merge(sized, accumulate=True)


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
