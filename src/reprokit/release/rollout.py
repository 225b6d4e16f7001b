"""An automated canary rollout, judged window by window on Prometheus, with rollback.

    reprokit rollout VERSION [--prometheus URL]     start, or resume, the rollout of VERSION
    reprokit rollout status [VERSION]               where a rollout stands

VERSION must have passed its release gate against the current champion. It becomes the canary
(`reprokit canary`) at the first of `rollout.steps`; after `settle_seconds` (every service reads
the new weight) a window of `window_seconds` opens, and at its end Prometheus's HTTP API is asked
for canary and stable figures over that window: requests, the 5xx share, p95 latency and the
score histogram. With at least `min_requests` canary requests, a window passes when the canary's
5xx share exceeds the stable model's by at most `max_error_ratio_increase`, its p95 is at most
`max_p95_latency_ratio` times the stable's, and the two score histograms are not apart (PSI at
least `max_score_psi` with a chi-square test significant at `alpha`, as the monitor judges drift).
A passing window raises the weight to the next step; a breach sets it to zero and removes the
alias (rollback), with the reason; after the last step passes, `champion` moves through
`promote` and the canary alias is removed. Too few requests for `max_windows` windows holds.

The registry holds the state (version tags `rollout_state`, `rollout_step`, `rollout_reason`,
`rollout_run_id`), so `reprokit rollout VERSION` resumes an interrupted or held rollout at its
step. Each rollout is one MLflow run (`rollout-v<VERSION>`) with every window's figures. If
Prometheus does not answer, or the command is interrupted (Ctrl-C, SIGTERM), the rollout holds at
its step: the canary's share goes to 0 (nothing watches it), nothing is promoted, exit status 1.
If the registry does not answer, nothing can move and the command stops with the state it had.
One process walks a rollout (`rollout_owner`, `rollout_lease_until`): a second is refused while the
first lives and holds its lease.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import socket
import time
import uuid
from typing import Any

from reprokit.core.config import RolloutParams
from reprokit.core.errors import StageError
from reprokit.core.redaction import redact
from reprokit.model import split
from reprokit.model.scoring import SCORE_BINS
from reprokit.release import registry, tracking
from reprokit.release.prometheus import (
    Figures,
    Prometheus,
    PrometheusUnavailable,
    figures,
)

log = logging.getLogger("reprokit.rollout")

STATE, STEP, REASON, RUN, LAST = (
    registry.ROLLOUT_STATE,
    "rollout_step",
    "rollout_reason",
    "rollout_run_id",
    "rollout_last",
)
STEPS, REFERENCE, WINDOWS = "rollout_steps", "rollout_stable_reference", "rollout_windows"
OWNER, LEASE = "rollout_owner", "rollout_lease_until"  # the process walking it, and until when it holds it
RUNNING, HELD, ROLLING_BACK, ROLLED_BACK, PROMOTED = "running", "held", "rolling_back", "rolled_back", "promoted"


def verdict(params: RolloutParams, canary: Figures, stable: Figures | None) -> tuple[str, str, dict[str, float]]:
    """("wait" | "pass" | "breach", reason, the window's figures) of one window; `stable` is the
    stable model's figures (at 100%, those of the last window that had stable traffic; None:
    none yet, so only a 5xx breach can be judged)."""
    import numpy as np

    from reprokit.core.drift import chi_square_p, psi

    shown: dict[str, float] = {"canary_requests": round(canary.requests, 1)}
    shown["canary_error_ratio"] = round(canary.error_ratio, 6)
    if canary.requests < params.min_requests:
        return "wait", f"{canary.requests:.0f} canary requests, fewer than rollout.min_requests", shown
    base_errors = stable.error_ratio if stable is not None else 0.0
    if stable is not None:
        shown["stable_requests"] = round(stable.requests, 1)
        shown["stable_error_ratio"] = round(stable.error_ratio, 6)
    if canary.error_ratio - base_errors > params.max_error_ratio_increase:
        return "breach", f"5xx share {canary.error_ratio:.4f} against {base_errors:.4f} for stable", shown
    if stable is None:
        return "wait", "no stable figures to compare with yet", shown
    if canary.p95_seconds is not None and stable.p95_seconds:
        ratio = canary.p95_seconds / stable.p95_seconds
        shown["p95_latency_ratio"] = round(ratio, 4)
        if ratio > params.max_p95_latency_ratio:
            return "breach", f"p95 latency {ratio:.2f} times the stable model's", shown
    ours, theirs = np.asarray(canary.scores), np.asarray(stable.scores)
    if ours.sum() > 0 and theirs.sum() > 0:
        distance, p_value = psi(theirs, ours), chi_square_p(theirs, ours)
        shown["score_psi"], shown["score_p_value"] = round(distance, 6), float(f"{p_value:.6g}")
        if distance >= params.max_score_psi and p_value < params.alpha:
            return "breach", f"scores apart from the stable model's: PSI {distance:.3f}, p {p_value:.2g}", shown
    return "pass", "within every limit", shown


class Rollout:
    """One version's rollout: the registry's state, the MLflow run, the windows."""

    def __init__(self, client, name: str, version: str, params: RolloutParams, prometheus: Prometheus, by: str):
        self.client, self.name, self.version, self.params = client, name, version, params
        self.prometheus, self.by = prometheus, by
        self.stable_reference: Figures | None = None
        self.owner = f"pid {os.getpid()} on {socket.gethostname()} ({uuid.uuid4().hex[:8]})"

    def stale_after(self) -> float:
        """How long a walker's lease lasts from its last renewal (every window and step): two
        windows with their settling, and a minute for a slow registry. It is written as a time
        (`rollout_lease_until`), so a claimer judges it by the walker's params, not its own."""
        return 2 * (self.params.window_seconds + self.params.settle_seconds) + 60

    def claim(self, tags: dict[str, str]) -> None:
        """Make this process the rollout's only walker. A rollout another process walks (its
        state running, its lease not over, the process alive as far as this host can tell: a CI
        re-run beside a terminal, say) is refused; MLflow has no compare-and-set, so two that
        claim at once both write, and the one whose claim was overwritten stops at its next
        window or step (`check_owner`)."""
        other = tags.get(OWNER)
        if tags.get(STATE) == RUNNING and other not in (None, self.owner):
            try:
                left = float(tags.get(LEASE, "0")) - time.time()  # the walker's own lease: its params' windows
            except ValueError:
                left = 0.0
            if left > 0 and alive(other):
                raise StageError(
                    f"the rollout of {self.name} version {self.version} is being walked by another process "
                    f"({other[:120]}): let it finish or stop it (Ctrl-C or kill: it holds); if it died "
                    f"without holding, its lease ends in {math.ceil(left)} s"
                )
        self.tag(OWNER, self.owner)
        self.renew()

    def renew(self) -> None:
        """Hold the rollout for two more windows and a minute (`stale_after`)."""
        self.tag(LEASE, str(round(time.time() + self.stale_after())))

    def check_owner(self) -> None:
        """Stop, changing nothing, where another process claimed the rollout (`claim`)."""
        if self.tags().get(OWNER) != self.owner:
            raise StageError(
                f"another process took over the rollout of {self.name} version {self.version}; this one "
                "stops without changing anything"
            )
        self.renew()

    def tags(self) -> dict[str, str]:
        return registry.version_tags(self.client, self.name, self.version)

    def tag(self, key: str, value: str) -> None:
        self.client.set_model_version_tag(self.name, self.version, key, value)

    def mark(self, state: str, step: int, reason: str, last: dict[str, Any] | None = None) -> None:
        for key, value in ((STATE, state), (STEP, str(step)), (REASON, reason[:400])):
            self.tag(key, value)
        if last is not None:
            self.tag(LAST, json.dumps(last, sort_keys=True))

    def steps_text(self) -> str:
        return json.dumps([float(s) for s in self.params.steps])  # 5 and 5.0 are one step

    def start_step(self, tags: dict[str, str] | None = None) -> int:
        """The step to (re)start from; refuses a version that cannot be rolled out now, and
        finishes a rollback an earlier run began (`tags`: the version's, if already read)."""
        tags = self.tags() if tags is None else tags
        state = tags.get(STATE)
        try:
            step = min(max(int(tags.get(STEP, "0")), 0), len(self.params.steps) - 1)
            reference = json.loads(tags[REFERENCE]) if REFERENCE in tags else None
            champion_now = registry.aliases(self.client, self.name).get(tracking.CHAMPION)
            if reference is not None and reference.get("version") == champion_now:
                # the stable figures to compare with where the stable model has no traffic
                self.stable_reference = Figures(
                    float(reference["requests"]),
                    float(reference["errors"]),
                    None if reference["p95_seconds"] is None else float(reference["p95_seconds"]),
                    tuple(float(count) for count in reference["scores"]),
                )
                if len(self.stable_reference.scores) != len(SCORE_BINS):
                    raise ValueError("score bins")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise StageError(
                f"{self.name} version {self.version}: its tags {STEP} or {REFERENCE} were edited by hand "
                f"({tags.get(STEP)!r}): set them back or register a new version"
            ) from None
        if state == ROLLING_BACK:  # an earlier run stopped between its verdict and the alias
            raise self.roll_back(step, tags.get(REASON, "an earlier run's breach"), None)
        if state in (ROLLED_BACK, PROMOTED):
            raise StageError(
                f"the rollout of {self.name} version {self.version} is over ({state}: {tags.get(REASON, '')}); "
                "register a new version to roll out"
            )
        current = registry.aliases(self.client, self.name)
        other = current.get(split.CANARY)
        if other not in (None, self.version):
            other_state = registry.version_tags(self.client, self.name, other).get(STATE)
            if other_state in registry.ROLLOUT_ACTIVE:
                raise StageError(f"version {other} is being rolled out ({other_state}): finish or stop it first")
        if current.get(tracking.CHAMPION) is None:
            raise StageError(f"{self.name} has no champion: promote one first (a canary is weighed against it)")
        registry.gate_passed(self.client, self.name, self.version, "roll out")
        measured = tags.get(tracking.GATE_CHAMPION_TAG, "none")
        if measured != current[tracking.CHAMPION]:
            raise StageError(
                f"refusing to roll out {self.name} version {self.version}: its release gate was measured against "
                f"champion {measured}, but the champion is {current[tracking.CHAMPION]}: run the gate again"
            )
        steps = self.steps_text()
        if state in (RUNNING, HELD):
            if tags.get(STEPS, steps) != steps:
                raise StageError(
                    f"rollout.steps are {steps} but the rollout of version {self.version} began with "
                    f"{tags[STEPS]}: put them back to resume it"
                )
            log.info("resuming the rollout of version %s at step %d (%s)", self.version, step + 1, state)
            return step
        return 0

    def preflight(self) -> None:
        """Ask Prometheus before any traffic moves: it answers, takes the selector, and holds
        the service's series."""
        selector = self.params.selector.strip()
        found = self.prometheus.query(f"count(reprokit_model_info{{{selector}}})", time.time())
        if not found:
            raise StageError(
                f"Prometheus at {redact(self.prometheus.url)} holds no reprokit_model_info series"
                + (f" matching {selector}" if selector else "")
                + ": is it scraping the services (README, Kubernetes)? Nothing was changed"
            )

    def finish_promotion(self, tags: dict[str, str]) -> str | None:
        """A run stopped inside `promote` left the champion moved and the state running: end
        the canary and record the promotion (the gate checks would refuse a resume)."""
        if tags.get(STATE) not in (RUNNING, HELD):
            return None
        current = registry.aliases(self.client, self.name)
        if current.get(tracking.CHAMPION) != self.version:
            return None
        if current.get(split.CANARY) == self.version:
            registry.end_canary(self.client, self.name, self.version)
        self.mark(PROMOTED, len(self.params.steps) - 1, "every step passed; champion (promotion finished on resume)")
        return f"{self.name} version {self.version} is the champion: its interrupted promotion is finished"

    def run(self, mlflow, experiment_id: str) -> str:
        tags = self.tags()  # read once: only this run writes them until it walks
        finished = self.finish_promotion(tags)
        if finished is not None:
            return finished
        step = self.start_step(tags)  # first: it names what is missing (no champion, no gate) in one line
        try:
            self.preflight()
        except PrometheusUnavailable as exc:
            raise StageError(f"{exc}; nothing was changed") from None
        self.claim(tags)
        if STEPS not in tags:  # a rollout resumes only with the steps it began with
            self.tag(STEPS, self.steps_text())
        stable_version = registry.aliases(self.client, self.name)[tracking.CHAMPION]
        run_id = tags.get(RUN)
        with mlflow.start_run(
            run_id=run_id,
            experiment_id=None if run_id else experiment_id,
            run_name=None if run_id else f"rollout-v{self.version}",
        ) as run:
            if not run_id:
                self.tag(RUN, run.info.run_id)
                mlflow.log_params({f"rollout.{k}": v for k, v in dataclasses.asdict(self.params).items()})
                mlflow.set_tags({"rollout_version": self.version, "rollout_stable_version": stable_version})
            try:
                windows = max(int(tags.get(WINDOWS, "0")), 0)
            except ValueError:
                raise StageError(f"{self.name} version {self.version}: its tag {WINDOWS} was edited by hand") from None
            try:
                outcome = self.walk(step, stable_version, windows, mlflow)
            except KeyboardInterrupt:
                raise self.hold(self.current_step(step), "interrupted") from None
            finally:
                with contextlib.suppress(Exception):  # the outcome is the registry's; the run records it if it can
                    mlflow.set_tag("rollout_outcome", self.tags().get(STATE, "unknown"))
            return outcome

    def current_step(self, default: int) -> int:
        try:
            return min(max(int(self.tags().get(STEP, default)), 0), len(self.params.steps) - 1)
        except ValueError:
            return default

    def hold(self, step: int, reason: str, last: dict[str, Any] | None = None) -> StageError:
        """Held at `step`, unless a rollback or the promotion already began: their state stays,
        so that a resumed run finishes them (never walks a rolled-back canary on). Nothing
        watches a held canary, so its share goes to 0 first (the stable model answers every
        request); the alias stays, and a resumed run sets the step's share again."""
        tags = self.tags()
        state = tags.get(STATE)
        if state in (ROLLING_BACK, ROLLED_BACK, PROMOTED):
            return StageError(
                f"{reason}; the rollout's state is {state}: `reprokit rollout {self.version}` finishes it"
            )
        if tags.get(OWNER) not in (None, self.owner):  # another process walks it now: its state, not ours
            return StageError(f"{reason}; another process walks the rollout now: this one changed nothing")
        if registry.aliases(self.client, self.name).get(split.CANARY) == self.version:
            self.tag(split.WEIGHT_TAG, "0")
        self.mark(HELD, step, reason, last)
        return StageError(
            f"{reason}; the canary's share is 0 while held, nothing promoted: "
            f"run `reprokit rollout {self.version}` to resume"
        )

    def roll_back(self, step: int, reason: str, last: dict[str, Any] | None) -> StageError:
        """Traffic off first: the state says `rolling_back` before the alias moves, so that a run
        stopped half-way finishes the rollback when resumed, never serves the canary again."""
        self.mark(ROLLING_BACK, step, reason, last)
        if registry.aliases(self.client, self.name).get(split.CANARY) == self.version:
            registry.stop_canary(self.client, self.name, self.by, f"rollout: {reason}")
        self.mark(ROLLED_BACK, step, f"rolled back at {self.params.steps[step]:g}%: {reason}", last)
        return StageError(f"version {self.version} rolled back at {self.params.steps[step]:g}%: {reason}")

    def walk(self, step: int, stable_version: str, windows: int, mlflow) -> str:
        params = self.params
        while step < len(params.steps):
            weight = params.steps[step]
            self.check_owner()  # a walker whose claim was taken moves no weight
            registry.set_canary(self.client, self.name, self.version, str(weight), "", self.by, "rollout", rollout=True)
            self.mark(RUNNING, step, f"step {step + 1} of {len(params.steps)}: {weight:g}%")
            log.info(
                "step %d of %d: version %s answers %g%% of requests", step + 1, len(params.steps), self.version, weight
            )
            time.sleep(params.settle_seconds)
            waited = 0
            while True:
                time.sleep(params.window_seconds)
                self.check_aliases(step, stable_version)
                at = time.time()
                try:
                    canary = figures(
                        self.prometheus, "canary", self.version, params.window_seconds, at, params.selector
                    )
                    stable = figures(
                        self.prometheus, "stable", stable_version, params.window_seconds, at, params.selector
                    )
                except PrometheusUnavailable as exc:
                    raise self.hold(step, f"held at {weight:g}%: {exc}") from None
                if stable.requests >= params.min_requests:
                    self.stable_reference = stable
                    reference = {**dataclasses.asdict(stable), "version": stable_version}
                    self.tag(REFERENCE, json.dumps(reference, default=lambda x: x))
                decision, reason, shown = verdict(params, canary, self.stable_reference)
                windows += 1
                last = {"window": windows, "weight": weight, "decision": decision, "reason": reason, **shown}
                log.info("window %d at %g%%: %s (%s) %s", windows, weight, decision, reason, json.dumps(shown))
                if decision == "breach":
                    error = self.roll_back(step, reason, last)
                    self.record(mlflow, windows, weight, shown)
                    raise error
                self.record(mlflow, windows, weight, shown)
                if decision == "pass":
                    self.mark(RUNNING, step, f"step {step + 1} passed: {reason}", last)
                    break
                waited += 1
                if waited >= params.max_windows:
                    raise self.hold(step, f"held at {weight:g}%: {waited} windows with {reason}", last)
            step += 1
            if step < len(params.steps):
                self.mark(RUNNING, step, f"step {step + 1} of {len(params.steps)}")
        self.check_aliases(len(params.steps) - 1, stable_version)  # a change made during the last window
        try:
            registry.promote(self.client, self.name, self.version, self.by, "rollout: every step passed", rollout=True)
        except StageError as exc:  # e.g. the champion moved after the last window: no traffic left unjudged
            registry.stop_canary(self.client, self.name, self.by, f"rollout: promotion refused: {exc}")
            raise self.hold(len(params.steps) - 1, f"promotion refused ({exc}); canary stopped") from None
        self.mark(PROMOTED, len(params.steps) - 1, "every step passed; champion")
        return f"{self.name} version {self.version} passed {len(params.steps)} steps and is the champion"

    def check_aliases(self, step: int, stable_version: str) -> None:
        """Hold where the registry changed by hand: the canary stopped or replaced, or the
        champion moved (the gate was measured against the old one; the canary is stopped).
        First, stop where another process has claimed the rollout."""
        self.check_owner()
        current = registry.aliases(self.client, self.name)
        if current.get(split.CANARY) != self.version:
            raise self.hold(step, "the canary was stopped or replaced by hand")
        if current.get(tracking.CHAMPION) != stable_version:
            registry.stop_canary(self.client, self.name, self.by, "rollout: the champion changed")
            with contextlib.suppress(Exception):  # figures of the old champion: never compared with again
                self.client.delete_model_version_tag(self.name, self.version, REFERENCE)
            raise self.hold(  # from the first step: the new champion has never been compared with
                0, f"the champion changed to {current.get(tracking.CHAMPION)}: canary stopped; gate again"
            )

    def record(self, mlflow, window: int, weight: float, shown: dict[str, float]) -> None:
        mlflow.log_metrics({"weight": float(weight), **shown}, step=window)
        self.tag(WINDOWS, str(window))


def alive(owner: str) -> bool:
    """Whether the process a `rollout_owner` tag names may still run: one on this host that is
    gone (the registry failed under it, it was killed) is not; one elsewhere cannot be asked."""
    found = re.fullmatch(r"pid (\d+) on (\S+) \(\w+\)", owner)
    if found is None or found.group(2) != socket.gethostname():
        return True
    if int(found.group(1)) == os.getpid():  # a process before this one with its pid (a container restarted)
        return False
    try:
        os.kill(int(found.group(1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or no pid at all
        return True
    return True
