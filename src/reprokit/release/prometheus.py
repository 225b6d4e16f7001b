"""The services' figures on Prometheus: instant queries against its HTTP API, and one role's
requests, 5xx answers, p95 latency and score histogram over a window (what the rollout judges
and `reprokit compare` shows). Answers are size-capped and checked; a server that does not
answer or answers something else is `PrometheusUnavailable`, its URL's credentials hidden."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from reprokit.core.errors import StageError
from reprokit.core.redaction import redact
from reprokit.model.scoring import SCORE_BINS

PROMETHEUS_ENV = "REPROKIT_PROMETHEUS_URL"
MAX_ANSWER_BYTES = 4 << 20  # a Prometheus answer larger than this is refused
SELECTOR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"([^"\\]|\\.)*"\s*(,\s*|$))*')


class PrometheusUnavailable(Exception):
    """Prometheus did not answer, or answered with an error: the rollout holds."""


class Prometheus:
    """Instant queries against a Prometheus server's HTTP API (`/api/v1/query`)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        import http.client
        import urllib.error
        import urllib.parse
        import urllib.request

        body = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"}).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/query", data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                raw = answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            try:  # Prometheus says why (a bad query: the selector)
                why = str(json.loads(exc.read(65536)).get("error", ""))[:300]
            except (ValueError, AttributeError, OSError):
                why = ""
            raise PrometheusUnavailable(
                f"Prometheus at {redact(self.url)} answered HTTP {exc.code}" + (f": {why}" if why else "")
            ) from None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # the URL's own text may hold a password
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else type(exc).__name__
            raise PrometheusUnavailable(f"Prometheus at {redact(self.url)} does not answer ({reason})") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise PrometheusUnavailable(
                f"Prometheus at {redact(self.url)}: answer larger than {MAX_ANSWER_BYTES} bytes"
            )
        try:
            data = json.loads(raw)
            if data.get("status") != "success" or data["data"]["resultType"] != "vector":
                raise ValueError(data.get("error", "not a vector"))
            return list(data["data"]["result"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PrometheusUnavailable(f"Prometheus at {redact(self.url)}: unexpected answer ({exc})") from None

    def number(self, promql: str, at: float) -> float | None:
        """The single value of a query (None: no series, or not a finite number)."""
        result = self.query(promql, at)
        if not result:
            return None
        value = self.value(result[0])
        return value if math.isfinite(value) else None

    def value(self, sample: Any, key: str = "value") -> float:
        """A sample's value (or, with `key="le"`, its bucket's bound); a malformed one is an
        unexpected answer, which holds the rollout like no answer."""
        try:
            return float(sample["value"][1] if key == "value" else sample["metric"].get(key, "nan"))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise PrometheusUnavailable(
                f"Prometheus at {redact(self.url)}: unexpected answer ({type(exc).__name__} in a sample)"
            ) from None


@dataclasses.dataclass(frozen=True)
class Figures:
    """One role's figures over one window."""

    requests: float
    errors: float
    p95_seconds: float | None
    scores: tuple[float, ...]  # per SCORE_BINS bin

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0


def figures(prometheus: Prometheus, role: str, version: str, window: float, at: float, selector: str) -> Figures:
    """Requests, 5xx answers, p95 latency and score counts of `role` answered by `version`."""
    labels = f'role="{role}",model_version="{version}"' + (f",{selector}" if selector.strip() else "")
    served = f'route="/invocations",{labels}'
    span = f"[{round(window * 1000)}ms]"  # whole milliseconds: every Prometheus reads them
    requests = prometheus.number(f"sum(increase(reprokit_requests_total{{{served}}}{span}))", at) or 0.0
    errors = prometheus.number(f'sum(increase(reprokit_requests_total{{{served},status=~"5.."}}{span}))', at) or 0.0
    p95 = prometheus.number(
        f"histogram_quantile(0.95, sum by (le) (increase(reprokit_request_seconds_bucket{{{served}}}{span})))", at
    )
    cumulative = {}
    for sample in prometheus.query(f"sum by (le) (increase(reprokit_predicted_score_bucket{{{labels}}}{span}))", at):
        bound = prometheus.value(sample, "le")
        cumulative[bound] = max(prometheus.value(sample), 0.0)
    counts, below = [], 0.0
    for bound in SCORE_BINS:
        total = cumulative.get(float(bound), below)
        counts.append(max(total - below, 0.0))
        below = max(total, below)
    return Figures(requests, errors, p95, tuple(counts))


def checked_url(url: str) -> str:
    """A Prometheus base URL, checked before anything is asked of it (one error, credentials hidden)."""
    from reprokit.core.paths import check_no_credentials, web_url

    checked = web_url(url, f"Prometheus URL {redact(url)!r}")
    # urllib would not send them: the request would fail as if the host were wrong
    check_no_credentials({"Prometheus URL": checked}, "give the address of a Prometheus that answers without them")
    return checked


def check_selector(selector: str, where: str) -> str:
    """`selector`, extra label matchers of the services' series (`job="reprokit-serve"`), else one
    error naming `where`: it goes inside every query's braces."""
    if not SELECTOR.fullmatch(selector):
        raise StageError(f'{where} {selector[:80]!r}: expected label matchers, e.g. job="reprokit-serve"')
    return selector
