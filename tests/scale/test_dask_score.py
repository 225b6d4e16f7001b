"""Batch scoring of a partitioned dataset, `python -m reprokit.serving.score IN_DIR OUT_DIR`, in this
process and with `--engine dask` on a real Dask cluster: the same bytes per partition, the
same scores as `pyfunc`, bad rows rejected per partition, local folders and S3 alike."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from dasks import executed, local_cluster, worker_state

from reprokit.model.trust import load_package

PARTS = ("part-0.parquet", "part-1.parquet", "day=2/part-2.parquet")


def score(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reprokit.serving.score", *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def frames(telco_splits):
    """Three partitions of the raw table; the second has a null contract (rejected) and an
    unknown category (scored with a warning)."""
    raw, *_ = telco_splits
    raw = raw.drop(columns=["churn"])
    parts = [raw.iloc[:2000], raw.iloc[2000:4500].copy(), raw.iloc[4500:]]
    parts[1]["contract"] = parts[1]["contract"].astype(object)
    parts[1].iloc[5, parts[1].columns.get_loc("contract")] = None
    parts[1].iloc[8, parts[1].columns.get_loc("contract")] = "Three year"
    return [part.reset_index(drop=True) for part in parts]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, frames):
    root = tmp_path_factory.mktemp("partitioned") / "batch"
    for name, frame in zip(PARTS, frames, strict=True):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / name, index=False)
    return root


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, dataset, telco_package):
    out = tmp_path_factory.mktemp("local") / "scores"
    done = score(dataset, out, "--model", telco_package)
    assert done.returncode == 0, done.stderr
    assert "3 partitions, 7043 rows, 7042 scored" in done.stderr and "1 rejected" in done.stderr
    return out


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_each_partition_is_scored_as_the_same_file_alone(tmp_path, dataset, local_run, telco_package, frames):
    pyfunc = load_package(telco_package)
    for name, frame in zip(PARTS, frames, strict=True):
        alone = tmp_path / name.replace("/", "_")
        done = score(dataset / name, alone, "--model", telco_package)
        assert done.returncode == 0, done.stderr
        assert md5(local_run / name) == md5(alone)
        assert md5(local_run.with_name("scores.rejects") / name) == md5(alone.with_suffix(".rejects.parquet"))
        scored = pd.read_parquet(local_run / name)
        good = frame.drop(index=[5]) if name == PARTS[1] else frame
        expected = np.asarray(pyfunc.predict(good.astype({"contract": str})))[:, 1]
        np.testing.assert_array_equal(scored["probability"], expected)
    rejects = pd.read_parquet(local_run.with_name("scores.rejects") / PARTS[1])
    assert rejects["row"].tolist() == [5] and rejects["reason"].tolist() == [
        "contract: null where the contract requires a value"
    ]
    warned = pd.read_parquet(local_run / PARTS[1]).set_index("row").loc[8, "warnings"]
    assert warned == "contract: a category the contract does not list"


def test_the_dask_engine_writes_the_same_bytes_per_partition(tmp_path, dataset, local_run, telco_package, cluster):
    before = executed(cluster)
    out = tmp_path / "scores"
    done = score(dataset, out, "--model", telco_package, "--engine", "dask", "--scheduler", cluster.scheduler_address)
    assert done.returncode == 0, done.stderr
    assert "3 partitions, 7043 rows, 7042 scored" in done.stderr and "1 rejected" in done.stderr
    for name in PARTS:
        assert md5(out / name) == md5(local_run / name)
        assert md5(tmp_path / "scores.rejects" / name) == md5(local_run.with_name("scores.rejects") / name)
    after = executed(cluster)
    assert sum(after.values()) > sum(before.values())  # the partitions were scored on the workers

    def loads():
        from reprokit.model import loading as module

        return module.WORKER_LOADS[0]

    # three partitions on two workers: one worker scored two of them, with the model it kept
    loaded = worker_state(cluster, loads)
    assert sum(loaded.values()) >= 1 and all(count <= 1 for count in loaded.values())


def test_the_dask_engine_reads_and_writes_s3(tmp_path, dataset, local_run, telco_package):
    """Partitioned Parquet on a real S3-compatible server (moto) on 127.0.0.1, read and
    written by the workers through fsspec, the endpoint and credentials from their environment."""
    from servers import moto_s3, s3_client

    with moto_s3(log=tmp_path / "moto.log") as endpoint:
        client = s3_client(endpoint)
        client.create_bucket(Bucket="batches")
        for name in PARTS:
            client.put_object(Bucket="batches", Key=f"in/{name}", Body=(dataset / name).read_bytes())
        aws = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        with local_cluster(env=aws) as s3_cluster:
            done = score(
                "s3://batches/in/",
                "s3://batches/out",
                "--model",
                telco_package,
                "--engine",
                "dask",
                "--scheduler",
                s3_cluster.scheduler_address,
                env={**os.environ, **aws},
            )
        assert done.returncode == 0, done.stderr
        for name in PARTS:
            remote = client.get_object(Bucket="batches", Key=f"out/{name}")["Body"].read()
            assert remote == (local_run / name).read_bytes()
        rejects = client.get_object(Bucket="batches", Key=f"out.rejects/{PARTS[1]}")["Body"].read()
        assert pd.read_parquet(io.BytesIO(rejects))["row"].tolist() == [5]


def test_no_scheduler_or_no_partitions_is_one_error(tmp_path, telco_package):
    done = score(tmp_path, tmp_path / "out", "--model", telco_package, "--engine", "dask")
    assert done.returncode == 2 and "--engine dask needs --scheduler ADDRESS" in done.stderr
    (tmp_path / "empty").mkdir()
    done = score(tmp_path / "empty", tmp_path / "out", "--model", telco_package)
    assert done.returncode == 1 and "no .parquet files in it" in done.stderr and "Traceback" not in done.stderr


def test_overlapping_directories_are_refused_before_anything_is_written(tmp_path, dataset, telco_package):
    import shutil

    copy = tmp_path / "batch"
    shutil.copytree(dataset, copy)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    for out in (copy / "scores", f"{tmp_path}/./batch", tmp_path):
        done = score(copy, out, "--model", telco_package)
        assert done.returncode == 1 and "overlap" in done.stderr and "Traceback" not in done.stderr, out
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before
