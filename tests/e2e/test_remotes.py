"""DVC remote storage: a local folder remote and an S3 remote on a real S3-compatible server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import numpy as np
import pytest
from dvcclone import cache_snapshot, new_clone, ran_stages
from servers import create_user_with_key, free_port, moto_s3, s3_client

pytestmark = pytest.mark.e2e


def use_local(clone, path) -> None:
    clone.dvc("remote", "modify", "--local", "local", "url", str(path))


def use_s3(clone, endpoint: str, bucket: str, key: str = "testing", secret: str = "testing") -> None:
    clone.dvc("remote", "modify", "--local", "s3", "url", f"s3://{bucket}/storage")
    clone.dvc("remote", "modify", "--local", "s3", "endpointurl", endpoint)
    clone.env.update(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)


def workspace_state(clone) -> dict[str, str]:
    return clone.file_hashes(clone.locked_outputs())


def test_committed_config_has_both_remotes_and_no_credentials(repo):
    from dvc.repo import Repo

    config = Repo(str(repo)).config.read("repo")  # .dvc/config alone, not config.local
    assert config["core"]["remote"] == "local"
    assert config["remote"]["local"]["url"] == os.path.expanduser(
        "~/dvc-storage/reprokit"
    )  # no absolute path committed
    assert "url = ~/dvc-storage/reprokit" in (repo / ".dvc" / "config").read_text()
    s3 = config["remote"]["s3"]
    assert s3["url"].startswith("s3://") and s3["region"]
    assert "endpointurl" not in s3  # no test server in the committed config: tests set theirs with --local
    assert not {"access_key_id", "secret_access_key", "session_token"} & set(s3)
    assert "config.local" in (repo / ".dvc" / ".gitignore").read_text()


def test_local_remote_push_then_fresh_clone_pulls_everything(copy_of, tmp_path):
    origin = copy_of("local-origin")
    storage = tmp_path / "storage"
    use_local(origin, storage)
    assert "new:" in origin.dvc("status", "-c").stdout  # nothing pushed yet: all missing remotely
    origin.dvc("push")
    assert "Cache and remote 'local' are in sync" in origin.dvc("status", "-c").stdout
    expected = workspace_state(origin)

    fresh = new_clone(origin.root, tmp_path / "fresh")
    use_local(fresh, storage)
    assert "deleted:" in fresh.dvc("status").stdout  # a fresh clone has no outputs yet
    fresh.dvc("pull")
    assert workspace_state(fresh) == expected
    assert "Data and pipelines are up to date" in fresh.dvc("status").stdout
    assert ran_stages(fresh.dvc("repro").stdout) == []


def test_s3_remote_push_then_fresh_clone_pulls_everything(copy_of, tmp_path, s3_endpoint):
    bucket = f"dvc-{uuid.uuid4().hex[:8]}"
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    origin = copy_of("s3-origin")
    use_s3(origin, s3_endpoint, bucket)
    origin.dvc("push", "-r", "s3")
    assert "Cache and remote 's3' are in sync" in origin.dvc("status", "-c", "-r", "s3").stdout
    listing = s3_client(s3_endpoint).list_objects_v2(Bucket=bucket, MaxKeys=1000)["Contents"]
    stored = {o["Key"].split("/files/md5/")[-1] for o in listing}
    cached = {k.removeprefix("files/md5/") for k in cache_snapshot(origin.root) if k.startswith("files/")}
    # Every object sent is in the cache; the cache also keeps copies of git-kept metrics for
    # the run-cache, which are not pushed.
    assert stored and stored <= cached
    expected = workspace_state(origin)

    fresh = new_clone(origin.root, tmp_path / "fresh")
    use_s3(fresh, s3_endpoint, bucket)
    fresh.dvc("pull", "-r", "s3")
    assert workspace_state(fresh) == expected
    assert "Data and pipelines are up to date" in fresh.dvc("status").stdout
    assert ran_stages(fresh.dvc("repro").stdout) == []


def assert_failure_leaves_everything(clone, command, expected_dvc, expected_check, remote="s3"):
    cache, outputs = cache_snapshot(clone.root), workspace_state(clone)
    done = clone.dvc(*command, check=False)
    assert done.returncode != 0
    assert expected_dvc in done.stderr
    checked = clone.run(
        str(clone.env["PATH"].split(os.pathsep)[0] + "/python"),
        "-m",
        "reprokit.commands.remote",
        "check",
        "-r",
        remote,
        check=False,
    )
    assert checked.returncode == 1
    assert expected_check in checked.stderr
    assert cache_snapshot(clone.root) == cache
    assert workspace_state(clone) == outputs


def test_s3_server_down(copy_of):
    clone = copy_of("s3-down")
    use_s3(clone, f"http://127.0.0.1:{free_port()}", "any-bucket")
    # No time limit is asserted (the verdict would then depend on how busy the machine is): a
    # push that hangs fails at the command's own timeout.
    assert_failure_leaves_everything(
        clone, ["push", "-r", "s3"], "Could not connect to the endpoint URL", "cannot connect to http://127.0.0.1:"
    )


def test_s3_missing_bucket(copy_of, s3_endpoint):
    clone = copy_of("s3-nobucket")
    use_s3(clone, s3_endpoint, "no-such-bucket")
    assert_failure_leaves_everything(
        clone, ["push", "-r", "s3"], "The specified bucket does not exist", "bucket 'no-such-bucket' does not exist"
    )


def test_s3_wrong_credentials(copy_of, tmp_path):
    # A moto server that enforces IAM auth after the four set-up calls below.
    with moto_s3(env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"}, log=tmp_path / "moto.log") as endpoint:
        s3_client(endpoint, "boot", "boot").create_bucket(Bucket="guarded")
        key, secret = create_user_with_key(endpoint)
        clone = copy_of("s3-creds")
        use_s3(clone, endpoint, "guarded", key="NOT-A-REAL-KEY-ID", secret="wrong")
        assert_failure_leaves_everything(clone, ["push", "-r", "s3"], "Forbidden", "the credentials were rejected")
        clone.env.pop("AWS_ACCESS_KEY_ID"), clone.env.pop("AWS_SECRET_ACCESS_KEY")
        clone.env["HOME"] = str(tmp_path)  # no ~/.aws either
        assert_failure_leaves_everything(clone, ["push", "-r", "s3"], "", "no credentials found")
        use_s3(clone, endpoint, "guarded", key=key, secret=secret)  # the right key works
        clone.dvc("push", "-r", "s3")
        assert "are in sync" in clone.dvc("status", "-c", "-r", "s3").stdout


def test_local_remote_path_that_is_a_file(copy_of, tmp_path):
    clone = copy_of("local-bad")
    (tmp_path / "a-file").write_text("not a folder")
    use_local(clone, tmp_path / "a-file" / "storage")
    assert_failure_leaves_everything(clone, ["push"], "ERROR", "is a file, not a folder", remote="local")


def test_interrupted_s3_push_completes_when_run_again(copy_of, tmp_path, s3_endpoint):
    bucket = f"dvc-{uuid.uuid4().hex[:8]}"
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket=bucket)
    clone = copy_of("s3-interrupt")
    blobs = clone.root / "data" / "raw" / "blobs"
    blobs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(150):
        (blobs / f"{i:03d}.bin").write_bytes(rng.bytes(200_000))
    clone.dvc("add", "data/raw/blobs")
    use_s3(clone, s3_endpoint, bucket)
    push = subprocess.Popen(
        [clone.env["PATH"].split(os.pathsep)[0] + "/dvc", "push", "-r", "s3", "-j", "1"],
        cwd=clone.root,
        env=clone.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while client.list_objects_v2(Bucket=bucket)["KeyCount"] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(push.pid, signal.SIGKILL)  # as a lost connection or Ctrl-C would
    push.wait()
    partial = client.list_objects_v2(Bucket=bucket)["KeyCount"]
    assert "new:" in clone.dvc("status", "-c", "-r", "s3").stdout
    clone.dvc("push", "-r", "s3")
    assert "are in sync" in clone.dvc("status", "-c", "-r", "s3").stdout
    total = client.list_objects_v2(Bucket=bucket, MaxKeys=1000)["KeyCount"]
    assert 20 <= partial < total, "the push was not interrupted part-way"
    clone.git("add", "data/raw/blobs.dvc", "data/raw/.gitignore")
    clone.git("commit", "-qm", "Add blobs")
    fresh = new_clone(clone.root, tmp_path / "fresh")
    use_s3(fresh, s3_endpoint, bucket)
    fresh.dvc("pull", "-r", "s3")
    assert fresh.file_hashes(clone.locked_outputs()) == clone.file_hashes(clone.locked_outputs())
    originals = {p.name: p.read_bytes() for p in blobs.iterdir()}
    assert {p.name: p.read_bytes() for p in (fresh.root / "data/raw/blobs").iterdir()} == originals
