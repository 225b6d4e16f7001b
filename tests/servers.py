"""Real servers on 127.0.0.1 for the tests, started and stopped by their own process ids."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BIN = Path(sys.executable).parent


# Ports handed out by free_port, one empty file each, shared by every test process on the machine.
PORTS = Path(tempfile.gettempdir()) / "reprokit-test-ports"
# Below Linux's default ephemeral range (32768-60999), where the kernel picks the ports of `bind(0)`
# and of outgoing connections: no server's internal listener (Dask's, a test's own socket) can take
# a port free_port handed out.
RANGE = (20000, 32768)
# Long enough for any server to bind the port it was given (or a test to finish with a port that
# must stay unused), short enough that the range never runs dry.
HOLD_SECONDS = 600


def free_port() -> int:
    """A port free on 127.0.0.1 now that no other test process on this machine is given for the
    next HOLD_SECONDS: parallel workers, and a second run beside this one, would otherwise race
    between this check and their server's bind. A port with nothing listening, for a test that
    needs one, is one of these too."""
    PORTS.mkdir(exist_ok=True)
    if PORTS.stat().st_uid == os.geteuid():
        PORTS.chmod(0o1777)  # sticky and world-writable, as /tmp: the runner tests run a suite as another user
    while True:
        port = random.SystemRandom().randrange(*RANGE)  # not the global generator, which tests may seed
        marker = PORTS / str(port)
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            try:
                if time.time() - marker.stat().st_mtime > HOLD_SECONDS:
                    marker.unlink()  # an old hand-out: the port is someone's to take next time
            except OSError:
                pass  # another process removed it first, or it is another user's
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use outside the tests: keep the marker, try another
        return port


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited early with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    """Stop the server's own process group (it may have forked workers), never by name."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def moto_s3(env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[str]:
    """A real S3-compatible HTTP server (moto_server); yields its endpoint URL."""
    port = free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        if log:
            out.close()


def s3_client(endpoint: str, key: str = "testing", secret: str = "testing"):
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret
    )


def create_user_with_key(endpoint: str) -> tuple[str, str]:
    """On a moto server that enforces auth after a few actions: an IAM user allowed all of S3."""
    import boto3

    iam = boto3.client(
        "iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="boot", aws_secret_access_key="boot"
    )
    iam.create_user(UserName="dvc")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="dvc", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="dvc")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary: on PATH, or where Debian's packages put it."""
    import glob
    import shutil

    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found


def as_postgres(args: list[str]) -> list[str]:
    """Run as the `postgres` user when we are root (initdb refuses to run as root).
    `runuser` lives in /usr/sbin, which a non-login shell's PATH may lack."""
    if os.geteuid() != 0:
        return args
    import shutil

    runuser = shutil.which("runuser") or next(
        (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.path.exists(p)), None
    )
    if runuser is None:
        raise RuntimeError("runuser (util-linux) is needed to start PostgreSQL as root")
    return [runuser, "-u", "postgres", "--", *args]


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields a SQLAlchemy URI for database `mlflow`.

    Its folder is made directly under the system temp folder: the `postgres` user cannot
    enter the private temp folders that pytest makes for root.
    """
    import shutil

    workdir = Path(tempfile.mkdtemp(prefix="reprokit-pg-"))
    data, sockets = workdir / "pgdata", workdir / "pgsock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(sockets, "postgres")
    subprocess.run(
        as_postgres([pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = f"-h 127.0.0.1 -p {port} -k {sockets} -F"
    subprocess.run(
        as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(workdir / "pg.log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            as_postgres([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"]),
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(
            as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]), capture_output=True
        )
        shutil.rmtree(workdir, ignore_errors=True)


def wait_healthy(url: str, process: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    """Wait until `url` answers 200; fail with the end of the server's log if it exits or times out."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer within {timeout} s: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def metric(text: str, name: str) -> float:
    """The value of the first sample in a Prometheus text exposition whose line starts with `name`."""
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))


def wait_until(condition, failure: str, seconds: float = 120) -> None:
    """Poll `condition` until it holds; fail with `failure` after `seconds` (a bound no healthy
    run nears: the verdict never depends on how fast the machine is)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


def start_server(
    args: list[str], port: int, health: str, what: str, log: Path, timeout: float, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen]:
    """Start a server process in its own process group, its output appended to `log`; its URL
    and process once `health` (a path) answers 200. Stop it with `stop(process)`."""
    with open(log, "ab") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}{health}", process, timeout, what, log)
    except BaseException:
        stop(process)
        raise
    return url, process


def start_mlflow(backend_uri: str, artifacts: str, env: dict[str, str], log: Path, port: int | None = None):
    """A real `mlflow server` process (one worker, no job runner) on `port` (default: a free
    one): its URL and process, once it answers."""
    port = port or free_port()
    args = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    args += ["--backend-store-uri", backend_uri, "--artifacts-destination", artifacts, "--serve-artifacts"]
    server_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **env}
    return start_server(args, port, "/health", "mlflow server", log, 90, server_env)


@contextmanager
def mlflow_server(backend_uri: str, artifacts: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """A real `mlflow server` process for the block; yields its URL."""
    url, process = start_mlflow(backend_uri, artifacts, env, log)
    try:
        yield url
    finally:
        stop(process)


@contextmanager
def prometheus_server(
    targets: list[str], workdir: Path, scrape_seconds: float = 1.0
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real Prometheus server (Debian's `prometheus`) scraping `targets` (host:port of
    `/metrics`) every `scrape_seconds`; yields its URL and process."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": f"{scrape_seconds:g}s", "evaluation_interval": f"{scrape_seconds:g}s"},
                "scrape_configs": [{"job_name": "reprokit-serve", "static_configs": [{"targets": targets}]}],
            }
        )
    )
    port = free_port()
    args = [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={config}"]
    args += [f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"]
    url, process = start_server(args, port, "/-/ready", "prometheus", workdir / "prometheus.log", 60)
    try:
        yield url, process
    finally:
        stop(process)


@contextmanager
def tracking_server(workdir: Path) -> Iterator[dict[str, str]]:
    """MLflow server with a PostgreSQL backend store and an S3 (moto) artifact store.

    Yields the environment a client needs: MLFLOW_TRACKING_URI, plus the server's
    own S3 settings for tests that look into the bucket.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    with moto_s3(log=workdir / "moto.log") as s3, postgres() as database:
        s3_client(s3).create_bucket(Bucket="mlflow")
        server_env = {
            "MLFLOW_S3_ENDPOINT_URL": s3,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        with mlflow_server(database, "s3://mlflow/artifacts", server_env, workdir / "mlflow.log") as url:
            yield {"MLFLOW_TRACKING_URI": url, "S3_ENDPOINT": s3, "DATABASE_URI": database}


@contextmanager
def scoring_service(
    args: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    command: tuple[str, ...] = ("-m", "reprokit.serving.serve"),
):
    """A real `python -m reprokit.serving.serve` process (or `python COMMAND...` that starts the
    service); yields (base URL, process) once it is ready."""
    port = free_port()
    out = open(log, "wb")
    process = subprocess.Popen(
        [sys.executable, *command, *args, "--port", str(port)],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/health/ready", process, 120, "the scoring service", log)
        yield url, process
    finally:
        stop(process)
        out.close()
