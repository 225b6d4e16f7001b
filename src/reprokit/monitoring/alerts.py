"""Post a monitor verdict to a webhook: the hook for alerting and retraining.

The URL comes from the environment (`REPROKIT_MONITOR_WEBHOOK`), never from a tracked
file, so a secret in it stays out of git and DVC. The body is JSON: the verdict, the
drifted columns, the figures, the dataset and batch, and the model version. Each attempt
has a total deadline (`REPROKIT_MONITOR_WEBHOOK_TIMEOUT`, seconds, default 5) for
connecting, sending and receiving the answer's status and headers together, so a server that
answers one byte at a time cannot stall the stage; failed attempts are retried
(`REPROKIT_MONITOR_WEBHOOK_RETRIES`, default 3) with a doubling pause. A webhook that cannot
be reached in time is logged and the check goes on, unless the caller requires it.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from reprokit.core.errors import StageError
from reprokit.core.paths import web_url
from reprokit.core.redaction import redact

log = logging.getLogger("reprokit.alerts")

URL_VARIABLE = "REPROKIT_MONITOR_WEBHOOK"


def _setting(name: str, default: float, cast) -> Any:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise StageError(f"environment variable {name} must be a number, got {raw!r}") from None
    if not 0 <= value < float("inf"):  # NaN and infinity too: a socket takes neither
        raise StageError(f"environment variable {name} must be a finite number, not negative, got {raw!r}")
    return value


def verdict_body(figures: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
    """The JSON body a webhook receives."""
    return {
        "verdict": figures["verdict"],
        "drifted_columns": figures["drifted_columns"],
        "missing_changed": figures["missing_changed"],
        "figures": {
            "rows": figures["rows"],
            "rejected_rows": figures["rejected_rows"],
            "drifted_share": figures["drifted_share"],
            "prediction_psi": figures["prediction"]["psi"],
            "features": {name: entry["psi"] for name, entry in figures["features"].items()},
            "labels": figures["labels"],
        },
        "dataset": dataset,
        "model_version": figures.get("model_version"),
    }


def _remaining(deadline: float) -> float:
    """Seconds left until `deadline` (time.monotonic); TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the attempt's deadline passed")
    return left


class _DeadlineReader(io.RawIOBase):
    """A socket's reading end on which each read may take only what is left until the
    deadline: a socket timeout bounds one read, and a server that drips one byte per read
    never trips it."""

    def __init__(self, sock, deadline: float):
        self._sock, self._deadline = sock, deadline
        self._raw = sock.makefile("rb", buffering=0)  # counted by the socket, as http.client's own

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        self._sock.settimeout(_remaining(self._deadline))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """A connected socket whose answer is read against the deadline (all else as is)."""

    def __init__(self, sock, deadline: float):
        self._sock, self._deadline = sock, deadline

    def makefile(self, *args, **kwargs) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _TimedConnection(http.client.HTTPConnection):
    """An HTTP connection whose connect, sends and reading of the answer all end by
    `deadline` (time.monotonic), however the server paces its bytes."""

    deadline = math.inf

    def connect(self) -> None:
        self.timeout = _remaining(self.deadline)
        super().connect()
        # What is left also bounds the TLS handshake HTTPSConnection runs next on this socket.
        self.sock.settimeout(_remaining(self.deadline))

    def send(self, data) -> None:
        if self.sock is None:
            self.connect()
        self.sock.settimeout(_remaining(self.deadline))
        super().send(data)

    def getresponse(self) -> http.client.HTTPResponse:
        self.sock = _DeadlineSocket(self.sock, self.deadline)
        return super().getresponse()


class _TimedHTTPSConnection(http.client.HTTPSConnection, _TimedConnection):
    """HTTPS on a `_TimedConnection` (the MRO puts its connect under the TLS handshake)."""


class _DeadlineHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """urllib's http and https handlers (proxies and redirects as usual) on timed connections."""

    def __init__(self, deadline: float):
        urllib.request.AbstractHTTPHandler.__init__(self)
        self.deadline = deadline

    def _connection(self, kind: type[_TimedConnection]):
        def connection(host: str, **kwargs) -> _TimedConnection:
            made = kind(host, **kwargs)
            made.deadline = self.deadline
            return made

        return connection

    def http_open(self, req):
        return self.do_open(self._connection(_TimedConnection), req)

    def https_open(self, req):
        return self.do_open(self._connection(_TimedHTTPSConnection), req)


def post_verdict(figures: dict[str, Any], name: str, batch: str, required: bool = False) -> bool:
    """Post the verdict on `batch` of dataset `name` to the webhook in the environment, if
    any; True when it was delivered. A failure raises `StageError` when `required`, else it
    is logged."""
    url = os.environ.get(URL_VARIABLE, "").strip()
    if not url:
        if required:
            raise StageError(f"--webhook-required, but {URL_VARIABLE} is not set")
        return False
    web_url(url, URL_VARIABLE)
    dataset = {"name": name, "batch": redact(batch)}
    if os.path.isfile(batch):  # read only when there is somewhere to post it
        from reprokit.core.artifacts import md5_file

        dataset["batch_md5"] = md5_file(batch)
    timeout = _setting(f"{URL_VARIABLE}_TIMEOUT", 5.0, float)
    if timeout == 0:
        raise StageError(f"environment variable {URL_VARIABLE}_TIMEOUT must be more than 0 seconds")
    retries = int(_setting(f"{URL_VARIABLE}_RETRIES", 3, int))
    data = json.dumps(verdict_body(figures, dataset), sort_keys=True).encode()
    problem = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
        request = urllib.request.Request(
            url, data=data, method="POST", headers={"Content-Type": "application/json", "User-Agent": "reprokit"}
        )
        deadline = time.monotonic() + timeout
        try:
            # A 2xx status is the delivery: the body is not read (a server may send it slowly).
            opener = urllib.request.build_opener(_DeadlineHandler(deadline))
            with opener.open(request, timeout=timeout):
                pass
            log.info("posted the verdict %r to the webhook", figures["verdict"])
            return True
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
            if exc.code < 500 and exc.code != 429:  # the request is wrong: retrying will not help
                break
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                problem = f"no answer within the {timeout:g} s deadline"
            elif isinstance(exc, (http.client.HTTPException, ValueError)):
                problem = type(exc).__name__
            else:
                problem = str(reason)
    # The URL may hold a token: name the host only.
    host = urllib.parse.urlsplit(url).hostname
    message = f"could not post the verdict to the webhook at {host} ({problem}) after {attempt + 1} attempt(s)"
    if required:
        raise StageError(message)
    log.warning("%s; the check goes on", message)
    return False


SCORE_METRIC = "reprokit_predicted_score"  # the scoring service's histogram (reprokit.serving.serve)


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes the `le` label (prometheus-client, and Prometheus 3's
    normalized form): `0.05`, `1.0`."""
    return repr(float(bound))


def prometheus_rules(reference_scores, params, version: str) -> str:
    """Prometheus recording and alerting rules that compute, over `params.live_window`, the PSI
    of the scoring service's live score histogram against the reference's scores on the same
    bins (`reprokit.model.scoring.SCORE_BINS`), and alert at the monitor's own PSI levels once the
    window holds `params.live_min_scores` scores. YAML text, byte-stable."""
    import numpy as np
    import yaml

    from reprokit.core.drift import MIN_SHARE, score_counts
    from reprokit.model.scoring import SCORE_BINS

    counts = score_counts(np.asarray(reference_scores), SCORE_BINS)
    shares = counts / max(int(counts.sum()), 1)
    window = params.live_window
    total = f"sum(increase({SCORE_METRIC}_count[{window}]))"
    rules: list[dict] = []
    for bound, share in zip(SCORE_BINS, shares, strict=True):
        rules.append(
            {
                "record": "reprokit:predicted_score_reference_share",
                "expr": f"vector({max(share, MIN_SHARE):.6f})",
                "labels": {"bin": _le(bound)},
            }
        )
    previous = None
    for bound in SCORE_BINS:
        upper = f'sum(increase({SCORE_METRIC}_bucket{{le="{_le(bound)}"}}[{window}]))'
        count = (
            upper
            if previous is None
            else f'{upper} - sum(increase({SCORE_METRIC}_bucket{{le="{_le(previous)}"}}[{window}]))'
        )
        rules.append(
            {
                "record": "reprokit:predicted_score_share:window",
                "expr": f"clamp_min(({count}) / {total}, {MIN_SHARE})",
                "labels": {"bin": _le(bound)},
            }
        )
        previous = bound
    live, ref = "reprokit:predicted_score_share:window", "reprokit:predicted_score_reference_share"
    rules.append(
        {
            "record": "reprokit:predicted_score_psi:window",
            "expr": f"sum(({live} - on(bin) {ref}) * ln({live} / on(bin) {ref}))",
        }
    )
    for name, level, severity in (
        ("ReprokitScoreDriftAlert", params.psi_alert, "critical"),
        ("ReprokitScoreDriftWarning", params.psi_warn, "warning"),
    ):
        rules.append(
            {
                "alert": name,
                "expr": f"reprokit:predicted_score_psi:window >= {level} and on() {total} >= {params.live_min_scores}",
                "for": "10m",
                "labels": {"severity": severity},
                "annotations": {
                    "summary": f"Live predicted scores drifted from the reference (PSI >= {level})",
                    "description": (
                        f"The PSI of the last {window} of live scores against the reference scores of {version} "
                        f"is at least {level} (reprokit:predicted_score_psi:window). "
                        "Run the monitor on the latest batch."
                    ),
                },
            }
        )
    header = (
        "# Generated by the monitor stage (reprokit monitor --rules-out): do not edit.\n"
        "# Live score drift: the scoring service's reprokit_predicted_score histogram against the\n"
        f"# reference scores of {version} on the same bins, as a PSI over {window}.\n"
    )
    body = yaml.safe_dump({"groups": [{"name": "reprokit-score-drift", "rules": rules}]}, sort_keys=False, width=1000)
    return header + body
