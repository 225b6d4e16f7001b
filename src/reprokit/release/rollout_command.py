"""The command line of `reprokit rollout` (and `reprokit compare`): start or resume a rollout,
show where one stands, and the canary beside the stable model over a window. The walk itself,
its verdicts and its state in the registry: `reprokit.release.rollout`."""

from __future__ import annotations

import argparse
import math
import os
import signal
import time

from reprokit.core.config import load_section
from reprokit.core.errors import StageError
from reprokit.core.redaction import describe_error, redact
from reprokit.core.running import add_debug_option, run_stage
from reprokit.model import split
from reprokit.model.scoring import SCORE_BINS
from reprokit.release import registry, tracking
from reprokit.release import rollout as rollouts
from reprokit.release.prometheus import (
    PROMETHEUS_ENV,
    Prometheus,
    PrometheusUnavailable,
    check_selector,
    checked_url,
    figures,
)


def comparison(client, name: str, prometheus: Prometheus, window: float, selector: str) -> str:
    """The stable model and the canary side by side over the last `window` seconds: requests,
    5xx share, p95 latency, mean score and the score histograms, with their PSI and p-value."""
    import numpy as np

    from reprokit.core.drift import chi_square_p, psi

    current = registry.aliases(client, name)
    stable_version = current.get(tracking.CHAMPION)
    canary_version = current.get(split.CANARY)
    if stable_version is None:
        raise StageError(f"{name} has no champion: nothing is served to compare")
    now = time.time()
    rows = [("stable", stable_version, figures(prometheus, "stable", stable_version, window, now, selector))]
    if canary_version is not None:
        rows.append(("canary", canary_version, figures(prometheus, "canary", canary_version, window, now, selector)))
    mids = np.asarray([0.0, *SCORE_BINS[:-1]]) / 2 + np.asarray(SCORE_BINS) / 2
    share = split.read_split(client, name)
    segment = f" of requests with {'='.join(share.segment)}" if share.segment else ""
    lines = [
        f"{name}, the last {window:g} s (Prometheus {redact(prometheus.url)})"
        + (f"; canary at {share.weight:g}%{segment}" if canary_version else "; no canary"),
        f"{'role':<8}{'version':>9}{'requests':>11}{'5xx share':>11}{'p95 ms':>9}{'mean score':>12}",
    ]
    for role, version, got in rows:
        total = sum(got.scores)
        mean = f"{float(np.dot(mids, got.scores)) / total:.3f}" if total else "-"
        p95 = f"{got.p95_seconds * 1000:.1f}" if got.p95_seconds is not None else "-"
        lines.append(f"{role:<8}{version:>9}{got.requests:>11.0f}{got.error_ratio:>11.4f}{p95:>9}{mean:>12}")
    if len(rows) == 2 and sum(rows[0][2].scores) and sum(rows[1][2].scores):
        ours, theirs = np.asarray(rows[1][2].scores), np.asarray(rows[0][2].scores)
        lines.append(
            f"scores, canary against stable: PSI {psi(theirs, ours):.4f}, chi-square p {chi_square_p(theirs, ours):.3g}"
        )
    lines.append("score histogram (share of each role's scores, by upper bound):")
    for i, bound in enumerate(SCORE_BINS):
        shares = [got.scores[i] / sum(got.scores) if sum(got.scores) else 0.0 for _, _, got in rows]
        lines.append(
            f"  <= {bound:<5g}"
            + "".join(f"{role:>8} {value:.3f}" for (role, _, _), value in zip(rows, shares, strict=True))
        )
    return "\n".join(lines)


def status(client, name: str, version: str | None) -> str:
    """Where the rollout of `version` (default: the canary, else the latest rolled out) stands."""
    current = registry.aliases(client, name)
    if version is None:
        version = current.get(split.CANARY)
    if version is None:
        found = [v for v in tracking.model_versions(client, name) if rollouts.STATE in (v.tags or {})]
        if not found:
            return f"{name}: no rollout"
        version = str(max(found, key=lambda v: int(v.version)).version)
    version = current.get(version, version)
    tags = registry.version_tags(client, name, version)
    if rollouts.STATE not in tags:
        return f"{name} version {version}: no rollout"
    now = split.read_split(client, name)
    serving = f"; canary at {now.weight:g}%" if now.version == version else ""
    step = tags.get(rollouts.STEP, "0")[:20]
    shown = int(step) + 1 if step.isdigit() else step
    lines = [
        f"{name} version {version}: {tags[rollouts.STATE]} at step {shown}{serving}",
        f"  {tags.get(rollouts.REASON, '')}",
    ]
    if rollouts.LAST in tags:
        lines.append(f"  last window: {tags[rollouts.LAST]}")
    if rollouts.RUN in tags:
        lines.append(f"  MLflow run {tags[rollouts.RUN]}")
    return "\n".join(lines)


def interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in ("start", "status", "compare"):
        argv.insert(0, "start")  # `reprokit rollout 4`
    parser = argparse.ArgumentParser(description=rollouts.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    add_debug_option(common)
    common.add_argument("--params", default="params.yaml")
    common.add_argument("--contract", default="dataset.yaml", help="names the registered model by default")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", parents=[common], help="start or resume the rollout of VERSION (the default)")
    start.add_argument("version", help="version number or alias")
    start.add_argument("--prometheus", default=None, help=f"Prometheus URL (default: ${PROMETHEUS_ENV}, else params)")
    start.add_argument("--by", default=None, help="who (default: $GITHUB_ACTOR or the login name)")
    show = sub.add_parser("status", parents=[common], help="where a rollout stands (default: the canary's)")
    show.add_argument("version", nargs="?", default=None)
    show.add_argument("--prometheus", default=None, help=argparse.SUPPRESS)
    compare = sub.add_parser(
        "compare",
        parents=[common],
        help="the canary beside the stable model over a window (an A/B test's figures), from Prometheus",
    )
    compare.add_argument("--window", type=float, default=None, help="seconds (default: rollout.window_seconds)")
    compare.add_argument("--prometheus", default=None, help=f"Prometheus URL (default: ${PROMETHEUS_ENV}, else params)")
    args = parser.parse_args(argv)
    if args.command == "compare" and args.window is not None and not (math.isfinite(args.window) and args.window >= 1):
        compare.error("--window must be a number of seconds, at least 1")

    def body() -> str:
        from mlflow.exceptions import MlflowException

        params = tracking.settings(args.params, args.contract)
        if not params.enabled:
            raise StageError("tracking.enabled is false in params.yaml: there is no registry to roll out from")
        # A rollout talks to the registry for many minutes: a dropped keep-alive connection is
        # retried (every call it makes can be repeated), not taken for an outage.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        mlflow, experiment_id = tracking.open_store(params)
        client, name = mlflow.MlflowClient(), params.registered_model
        try:
            return command(client, name, mlflow, experiment_id)
        except MlflowException as exc:
            if args.command != "start":
                raise tracking.unavailable(exc) from None
            raise StageError(
                f"the registry at {redact(params.uri)} failed ({describe_error(exc)}); the rollout stopped where the "
                "registry last took it (`reprokit rollout status`): `reprokit rollout VERSION` resumes or finishes it"
            ) from None

    def command(client, name: str, mlflow, experiment_id: str) -> str:
        if args.command == "status":
            print(status(client, name, args.version))
            return "status shown"
        rollout_params = load_section("rollout", args.params)
        check_selector(rollout_params.selector, f"{args.params}: rollout.selector")
        url = checked_url(args.prometheus or os.environ.get(PROMETHEUS_ENV) or rollout_params.prometheus_url)
        if args.command == "compare":
            window = args.window or rollout_params.window_seconds
            try:
                print(comparison(client, name, Prometheus(url), window, rollout_params.selector))
            except PrometheusUnavailable as exc:
                raise StageError(str(exc)) from None
            return f"the last {window:g} s compared"
        version = registry.aliases(client, name).get(args.version, args.version)
        signal.signal(signal.SIGTERM, interrupted)  # a cancelled CI job or `kill`: held as Ctrl-C
        rollout = rollouts.Rollout(
            client, name, version, rollout_params, Prometheus(url), args.by or registry.default_user()
        )
        return rollout.run(mlflow, experiment_id)

    run_stage("compare" if args.command == "compare" else "rollout", body, debug=args.debug)


if __name__ == "__main__":
    main()
