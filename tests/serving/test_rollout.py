"""`reprokit rollout` with real parts on 127.0.0.1: an `mlflow server` (the registry and the
rollout's runs), `reprokit serve --canary canary` following it, a Prometheus server scraping the
service every second, and four client threads sending requests while weights and aliases move.

Every request sends the same record: the stable model and a canary of the same model give it
the same score, so their score histograms cannot differ by sampling, and a canary trained on
shifted data gives it another (the breach is the model's, never chance)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import threading
import time

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from registered import NAME, nest_schema, register
from servers import BIN, prometheus_server, scoring_service, start_mlflow, stop, wait_until

from reprokit.model import split
from reprokit.model.trust import load_package
from reprokit.release import registry, tracking
from reprokit.release import rollout as rollouts

ROLLOUT = {
    "steps": [25, 50, 100],
    "window_seconds": 4,
    "settle_seconds": 1,
    "min_requests": 40,
    "max_windows": 15,  # a loaded machine sends fewer requests: more windows, never another verdict
    "max_error_ratio_increase": 0.01,
    # Wide: latency is not what these tests judge, and a loaded machine makes it noisy (a healthy
    # canary measured 0.98-1.16 times the stable p95 here).
    "max_p95_latency_ratio": 5.0,
    "max_score_psi": 0.25,
    "alpha": 0.01,
    "prometheus_url": "http://127.0.0.1:9",  # each test gives --prometheus
    "selector": 'job="reprokit-serve"',
}


@dataclasses.dataclass
class Parts:
    root: object
    mlflow_url: str
    mlflow_process: subprocess.Popen
    prometheus_url: str
    service_url: str
    client: object  # MlflowClient
    record: dict


@pytest.fixture(scope="module")
def parts(tmp_path_factory, repo, telco_package, telco_splits, telco_contract):
    root = tmp_path_factory.mktemp("rollout")
    shutil.copy(repo / "dataset.yaml", root / "dataset.yaml")
    write_params(root, repo, "params.yaml")
    (root / "artifacts").mkdir()
    _, _, test, _ = telco_splits
    frame = test[telco_contract.feature_names].head(1)
    frame = frame.astype({c: "int64" for c in telco_contract.names_of("integer", "binary")})
    (record,) = json.loads(frame.to_json(orient="records"))
    url, process = start_mlflow(*store(root), root / "mlflow.log")
    try:
        assert register(root, url, [telco_package]) == ["1"]
        client = mlflow.MlflowClient(tracking_uri=url)
        client.set_registered_model_alias(NAME, "champion", "1")
        args = [f"models:/{NAME}@champion", "--canary", "canary", "--poll-seconds", "0.3"]
        env = {"MLFLOW_TRACKING_URI": url}
        with scoring_service(args, root / "serve.log", env=env, cwd=root) as (service, _):
            target = service.removeprefix("http://")
            with prometheus_server([target], root / "prometheus") as (prometheus, _):
                wait_scraped(prometheus)
                parts = Parts(root, url, process, prometheus, service, client, record)
                yield parts
    finally:
        stop(parts.mlflow_process if "parts" in locals() else process)


def wait_scraped(prometheus: str) -> None:
    """Until Prometheus holds the service's series (a rollout asks before it moves any traffic)."""
    asked = rollouts.Prometheus(prometheus)
    wait_until(lambda: asked.query("reprokit_model_info", time.time()), "Prometheus never scraped the service")


def store(root) -> tuple[str, str, dict]:
    """The tracking server's backend store, artifact store and environment (kept across restarts)."""
    return f"sqlite:///{root / 'server.db'}", str(root / "artifacts"), {}


def write_params(root, repo, name: str, **changes) -> str:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["rollout"] = {**ROLLOUT, **changes}
    (root / name).write_text(yaml.safe_dump(params))
    return name


def champion(parts: Parts) -> str:
    return str(parts.client.get_registered_model(NAME).aliases[tracking.CHAMPION])


def gated(parts: Parts, version: str) -> str:
    """Mark `version` as having passed its release gate against today's champion (the gate is
    tested on its own: here it only opens the door)."""
    parts.client.set_model_version_tag(NAME, version, "gate_passed", "true")
    parts.client.set_model_version_tag(NAME, version, tracking.GATE_CHAMPION_TAG, champion(parts))
    return version


def same_model_again(parts: Parts) -> str:
    """A new version of the champion's own logged model: a healthy canary."""
    first = parts.client.get_model_version(NAME, champion(parts))
    model_id = first.source.rsplit("/", 1)[-1]
    created = parts.client.create_model_version(NAME, first.source, run_id=first.run_id, model_id=model_id)
    return gated(parts, str(created.version))


def user_env(parts: Parts) -> dict[str, str]:
    """The environment a user's shell gives `reprokit`: without the MLflow request settings this
    test process took from `tracking.open_store` (no retries), which the rollout would inherit."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
    return {**inherited, "MLFLOW_TRACKING_URI": parts.mlflow_url}


def rollout(parts: Parts, *argv: str, prometheus: str | None = None, wait: bool = True):
    command = [str(BIN / "reprokit"), "rollout", *argv, "--prometheus", prometheus or parts.prometheus_url]
    env = user_env(parts)
    if not wait:
        return subprocess.Popen(command, cwd=parts.root, env=env, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=parts.root, env=env, capture_output=True, text=True, timeout=600)


def share(parts: Parts) -> float:
    return split.read_split(parts.client, NAME).weight


def step_passed(parts: Parts, version: str, running: subprocess.Popen) -> None:
    """Until the rollout running in `running` passed its first step (it may be at the last)."""
    wait_until(
        lambda: running.poll() is not None or tags(parts, version).get(rollouts.STEP) in ("1", "2"),
        "no step passed",
        300,
    )
    assert running.poll() is None, f"the rollout stopped before any step passed: {running.stderr.read()[-3000:]}"


@dataclasses.dataclass
class Seen:
    answers: list = dataclasses.field(default_factory=list)  # (role, version)
    sent: list = dataclasses.field(default_factory=list)  # (when the request was sent, role)
    failures: list = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def load(parts: Parts, threads: int = 4):
    """Four clients sending the record, one request at a time each, until the block ends."""
    seen, done = Seen(), threading.Event()

    def client() -> None:
        with httpx.Client(base_url=parts.service_url, timeout=60) as http:
            while not done.is_set():
                sent = time.monotonic()
                try:
                    answer = http.post("/invocations", json={"instances": [parts.record]})
                except httpx.HTTPError as exc:
                    seen.failures.append(repr(exc))
                    continue
                if answer.status_code != 200:
                    seen.failures.append(f"{answer.status_code} {answer.text[:200]}")
                else:
                    seen.answers.append((answer.headers["x-model-role"], answer.headers["x-model-version"]))
                    seen.sent.append((sent, answer.headers["x-model-role"]))

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield seen
    finally:
        done.set()
        for worker in workers:
            worker.join(60)


def tags(parts: Parts, version: str) -> dict[str, str]:
    return dict(parts.client.get_model_version(NAME, version).tags)


def history(parts: Parts, version: str, metric: str) -> list[float]:
    run = tags(parts, version)[rollouts.RUN]
    return [m.value for m in sorted(parts.client.get_metric_history(run, metric), key=lambda m: m.step)]


def no_canary_served(parts: Parts) -> bool:
    return "canary_version" not in httpx.get(f"{parts.service_url}/version", timeout=30).json()


def test_a_healthy_canary_walks_every_step_and_ends_as_champion_with_no_request_lost(parts):
    before = champion(parts)
    version = same_model_again(parts)
    with load(parts) as seen:
        done = rollout(parts, version)
        wait_until(
            lambda: httpx.get(f"{parts.service_url}/version", timeout=30).json()["model_version"] == version,
            "the service never followed the new champion",
        )
    assert done.returncode == 0, done.stderr
    assert f"version {version} passed 3 steps and is the champion" in done.stderr
    assert seen.failures == [] and len(seen.answers) > 100
    assert {answer for answer in seen.answers} <= {("stable", before), ("canary", version), ("stable", version)}
    assert ("canary", version) in seen.answers  # the canary answered before it became the champion
    assert registry_aliases(parts) == {"champion": version, "challenger": "1"}
    state = tags(parts, version)
    assert state[rollouts.STATE] == "promoted" and state["promoted_reason"] == "rollout: every step passed"
    assert state[rollouts.STEPS] == "[25.0, 50.0, 100.0]"
    weights = history(parts, version, "weight")
    assert sorted(set(weights)) == [25.0, 50.0, 100.0] and weights == sorted(weights)
    assert all(psi == 0.0 for psi in history(parts, version, "score_psi"))
    shown = rollout(parts, "status", version)
    assert shown.returncode == 0 and f"version {version}: promoted at step 3" in shown.stdout
    again = rollout(parts, version)
    assert again.returncode == 1 and "is over (promoted" in again.stderr and "Traceback" not in again.stderr


def registry_aliases(parts: Parts) -> dict[str, str]:
    return {alias: str(v) for alias, v in parts.client.get_registered_model(NAME).aliases.items()}


def test_a_canary_with_shifted_scores_is_rolled_back_at_its_first_window_with_enough_traffic(
    parts, shifted_package, telco_package
):
    before = champion(parts)
    record = pd.DataFrame([parts.record])
    scores = [float(np.asarray(load_package(p).predict(record))[0, 1]) for p in (telco_package, shifted_package)]
    assert np.searchsorted(split_bins(), scores[0]) != np.searchsorted(split_bins(), scores[1])  # other bins
    (version,) = register(parts.root, parts.mlflow_url, [shifted_package])
    gated(parts, version)
    with load(parts) as seen:
        done = rollout(parts, version)
        wait_until(lambda: no_canary_served(parts), f"the service kept the canary: {done.stderr[-2000:]}")
        switched = time.monotonic()  # a request sent after this is routed after the canary left
        wait_until(lambda: sum(t > switched for t, _ in list(seen.sent)) > 20, "no request after the rollback")
        late = [role for t, role in list(seen.sent) if t > switched]
    assert done.returncode == 1 and f"version {version} rolled back at 25%: scores apart" in done.stderr
    assert "Traceback" not in done.stderr
    assert seen.failures == [] and ("canary", version) in seen.answers
    assert set(late) == {"stable"}  # all traffic back on the champion
    assert champion(parts) == before and "canary" not in registry_aliases(parts)
    state = tags(parts, version)
    assert state[rollouts.STATE] == "rolled_back" and state[split.WEIGHT_TAG] == "0"
    assert "scores apart" in state[rollouts.REASON] and "scores apart" in state["canary_stopped_reason"]
    # Rolled back at the first window with enough canary traffic: every window before it had too little.
    requests = history(parts, version, "canary_requests")
    assert requests[-1] >= ROLLOUT["min_requests"] and all(n < ROLLOUT["min_requests"] for n in requests[:-1])
    assert history(parts, version, "score_psi")[-1] >= ROLLOUT["max_score_psi"]


def split_bins() -> np.ndarray:
    from reprokit.model.scoring import SCORE_BINS

    return np.asarray(SCORE_BINS[:-1])


def test_prometheus_down_or_sigterm_mid_rollout_holds_at_share_0_and_the_rollout_resumes(parts, repo, tmp_path):
    """A hold takes the canary's share to 0 (nothing watches it), keeps its alias and step, and
    promotes nothing; a resumed run sets the step's share again. Prometheus going away holds the
    first run; a SIGTERM (a cancelled CI job) holds the second; the third finishes."""
    before = champion(parts)
    version = same_model_again(parts)
    target = parts.service_url.removeprefix("http://")
    with load(parts) as seen, prometheus_server([target], tmp_path / "own") as (own, process):
        wait_scraped(own)
        running = rollout(parts, version, prometheus=own, wait=False)
        try:
            step_passed(parts, version, running)
            stop(process)  # Prometheus goes away while the canary answers 50% (100% on a slow machine)
            _, stderr = running.communicate(timeout=300)
        finally:
            running.kill()
        step = int(tags(parts, version)[rollouts.STEP])
        weight = ROLLOUT["steps"][step]
        assert running.returncode == 1, stderr
        assert f"held at {weight}%" in stderr and "does not answer" in stderr and "nothing promoted" in stderr
        assert "Traceback" not in stderr
        assert champion(parts) == before
        assert "the canary's share is 0 while held" in stderr
        assert split.read_split(parts.client, NAME) == split.Split(version, 0)  # held: the alias kept, no traffic
        assert tags(parts, version)[rollouts.STATE] == "held"
        shown = rollout(parts, "status")
        assert f"version {version}: held at step {step + 1}; canary at 0%" in shown.stdout
        run = tags(parts, version)[rollouts.RUN]
        # The suite's Prometheus, from the step it held at; a long window: no verdict before the signal
        stopped = rollout(
            parts,
            version,
            "--params",
            write_params(parts.root, repo, "params-long.yaml", window_seconds=600),
            wait=False,
        )
        try:
            wait_until(lambda: stopped.poll() is not None or share(parts) > 0, "the resumed rollout set no share")
            stopped.terminate()
            _, stderr = stopped.communicate(timeout=120)
        finally:
            stopped.kill()
        assert stopped.returncode == 1 and "interrupted; the canary's share is 0 while held" in stderr, stderr
        assert "Traceback" not in stderr and f"at step {step + 1} (held)" in stderr
        assert split.read_split(parts.client, NAME) == split.Split(version, 0)
        assert tags(parts, version)[rollouts.STATE] == "held" and champion(parts) == before
        resumed = rollout(parts, version)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the rollout of version" in resumed.stderr and "(held)" in resumed.stderr
    assert champion(parts) == version and tags(parts, version)[rollouts.RUN] == run  # one run per rollout
    assert seen.failures == []
    weights = history(parts, version, "weight")
    assert weights[0] == 25.0 and weights[-1] == 100.0 and weights == sorted(weights)


def test_a_canary_that_cannot_become_ready_gets_no_traffic_and_the_rollout_holds(parts, repo, telco_package):
    before = champion(parts)
    crafted = parts.root / "crafted"
    shutil.copytree(telco_package, crafted)
    nest_schema(crafted)
    (version,) = register(parts.root, parts.mlflow_url, [crafted])
    gated(parts, version)
    params = write_params(parts.root, repo, "params-short.yaml", max_windows=2)
    try:
        with load(parts) as seen:
            done = rollout(parts, version, "--params", params)
    finally:
        subprocess.run(
            [str(BIN / "reprokit"), "canary", "--stop", "--reason", "test over"],
            cwd=parts.root,
            env={"MLFLOW_TRACKING_URI": parts.mlflow_url, "PATH": str(BIN)},
            capture_output=True,
        )
    assert done.returncode == 1 and "held at 25%: 2 windows with 0 canary requests" in done.stderr
    assert seen.failures == [] and all(role == "stable" for role, _ in seen.answers)
    assert champion(parts) == before
    assert history(parts, version, "canary_requests") == [0.0, 0.0]


def test_the_registry_down_mid_rollout_promotes_nothing_and_the_rollout_resumes(parts):
    """The tracking server stops while the canary answers 50%: the rollout stops with one error
    line and nothing promoted, the service keeps answering with the split it last read, and
    once the registry is back `reprokit rollout VERSION` resumes at the step it had reached."""
    before = champion(parts)
    version = same_model_again(parts)
    with load(parts) as seen:
        running = rollout(parts, version, wait=False)
        try:
            step_passed(parts, version, running)
            stop(parts.mlflow_process)
            _, stderr = running.communicate(timeout=300)
        finally:
            running.kill()
        answered_while_down = len(seen.answers)
        wait_until(lambda: len(seen.answers) > answered_while_down + 50, "the service stopped answering")
        port = int(parts.mlflow_url.rsplit(":", 1)[1])
        parts.mlflow_url, parts.mlflow_process = start_mlflow(*store(parts.root), parts.root / "mlflow.log", port)
        assert running.returncode == 1, stderr
        assert "the registry at" in stderr and "resumes or finishes it" in stderr and "Traceback" not in stderr
        assert champion(parts) == before
        step = tags(parts, version)[rollouts.STEP]
        assert tags(parts, version)[rollouts.STATE] == "running" and step in ("1", "2")
        resumed = rollout(parts, version)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {int(step) + 1} (running)" in resumed.stderr and champion(parts) == version
    assert seen.failures == []


def test_compare_prints_the_canary_beside_the_stable_model_from_prometheus(parts):
    """An A/B test held at 50%: `reprokit compare` shows both versions' figures over a window."""
    stable = champion(parts)
    version = same_model_again(parts)
    env = user_env(parts)
    reprokit = [str(BIN / "reprokit")]
    started = subprocess.run(
        [*reprokit, "canary", version, "--weight", "50", "--reason", "A/B"],
        cwd=parts.root,
        env=env,
        capture_output=True,
    )
    assert started.returncode == 0, started.stderr
    try:
        with load(parts) as seen:
            wait_until(lambda: ("canary", version) in seen.answers, "the canary never answered")
            counted = len(seen.answers)
            wait_until(lambda: len(seen.answers) > counted + 200, "too few requests")
            time.sleep(3)  # two more scrapes
            shown = subprocess.run(
                [*reprokit, "compare", "--window", "10", "--prometheus", parts.prometheus_url],
                cwd=parts.root,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
    finally:
        subprocess.run([*reprokit, "canary", "--stop", "--reason", "A/B over"], cwd=parts.root, env=env)
    assert shown.returncode == 0, shown.stderr
    rows = {
        line.split()[0]: line.split() for line in shown.stdout.splitlines() if line.startswith(("stable ", "canary "))
    }
    assert rows["stable"][1] == stable and rows["canary"][1] == version
    assert float(rows["stable"][2]) > 0 and float(rows["canary"][2]) > 0 and rows["canary"][3] == "0.0000"
    assert "canary at 50%" in shown.stdout and "PSI 0.0000, chi-square p 1" in shown.stdout  # one record: one score
    refused = subprocess.run([*reprokit, "compare", "--window", "nan"], cwd=parts.root, env=env, capture_output=True)
    assert refused.returncode == 2 and b"--window must be a number of seconds" in refused.stderr


def test_a_prometheus_without_the_services_series_changes_nothing(parts, repo):
    """A wrong selector (or a Prometheus scraping something else) is found before any traffic moves."""
    version = same_model_again(parts)
    params = write_params(parts.root, repo, "nowhere.yaml", selector='job="nowhere"')
    done = rollout(parts, version, "--params", params)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert 'holds no reprokit_model_info series matching job="nowhere"' in done.stderr, done.stderr
    assert "Nothing was changed" in done.stderr
    assert "canary" not in registry_aliases(parts)
    assert not any(key.startswith(("rollout_", "canary_")) for key in tags(parts, version))


def test_a_canary_stopped_or_a_champion_moved_by_hand_holds_the_rollout(parts):
    """Each window reads the registry first: a canary stopped by hand holds the rollout; a
    champion moved by hand (the gate measured the old one) stops the canary and holds it."""
    before = champion(parts)
    version = same_model_again(parts)
    with load(parts) as seen:
        running = rollout(parts, version, wait=False)
        try:
            wait_until(lambda: registry_aliases(parts).get("canary") == version, "the canary never started", 300)
            # In this process: a command's start-up on a loaded machine may outlast the rollout.
            assert registry.stop_canary(parts.client, NAME, "tester", "by hand") == version
            _, stderr = running.communicate(timeout=300)
        finally:
            running.kill()
        assert running.returncode == 1 and "the canary was stopped or replaced by hand" in stderr, stderr
        assert tags(parts, version)[rollouts.STATE] == "held" and champion(parts) == before

        other = same_model_again(parts)
        running = rollout(parts, version, wait=False)  # resumed
        try:
            wait_until(lambda: registry_aliases(parts).get("canary") == version, "the canary never restarted", 300)
            parts.client.set_registered_model_alias(NAME, tracking.CHAMPION, other)
            _, stderr = running.communicate(timeout=300)
        finally:
            running.kill()
            parts.client.set_registered_model_alias(NAME, tracking.CHAMPION, before)
    assert running.returncode == 1 and f"the champion changed to {other}: canary stopped" in stderr, stderr
    assert "Traceback" not in stderr and "canary" not in registry_aliases(parts)
    assert tags(parts, version)[rollouts.STATE] == "held" and seen.failures == []
