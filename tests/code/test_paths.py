"""The one path rule (`reprokit.core.paths`): values from outside name plain paths inside the
repository or allowed URLs; two names of one file are one file."""

from __future__ import annotations

import argparse
import os

import pytest
from hostile import ORDINARY, REFUSED

from reprokit.core.errors import StageError
from reprokit.core.paths import batch_location, cache_file, check_arguments, check_outputs, repository_path, same_place


@pytest.mark.parametrize("name", ORDINARY)
def test_an_ordinary_name_is_taken_as_it_is(tmp_path, name):
    assert repository_path(name, "x", tmp_path) == os.path.normpath(name)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_name_from_outside_is_refused_with_its_reason(tmp_path, name):
    with pytest.raises(StageError, match=REFUSED[name]) as caught:
        repository_path(name, "monitor.batch", tmp_path)
    assert str(caught.value).startswith("monitor.batch: ") and "\n" not in str(caught.value)


def test_a_symlink_that_leads_outside_the_repository_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "link").symlink_to(outside)
    with pytest.raises(StageError, match="leads outside the repository"):
        repository_path("data/link/x.csv", "b", repo)
    (repo / "data" / "inside").symlink_to(repo / "data")
    assert repository_path("data/inside/x.csv", "b", repo) == "data/inside/x.csv"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("s3://key:secret@bucket/b.parquet", "credentials"),
        ("https://h/b.csv?X-Amz-Signature=abc", "credentials or a query"),
        ("https://h/b.csv#frag", "credentials or a query"),
        ("file:///etc/passwd", "a URL must be one of"),
        ("ftp://h/b.csv", "a URL must be one of"),
        ("s3://bucket/with space.parquet", "blank or control"),
        ("s3://bucket/new\nline.parquet", "blank or control"),
    ],
)
def test_a_batch_url_is_a_storage_url_without_secrets(url, reason):
    with pytest.raises(StageError, match=reason) as caught:
        batch_location(url, "batch")
    assert "secret" not in str(caught.value) and "Signature" not in str(caught.value)


def test_a_plain_storage_url_is_taken():
    assert batch_location("s3://bucket/batches/2026-11-26.parquet", "b") == "s3://bucket/batches/2026-11-26.parquet"
    assert batch_location("https://example.com/b.csv", "b") == "https://example.com/b.csv"


def test_two_names_of_one_file_are_one_place(tmp_path):
    (tmp_path / "d").mkdir()
    good = tmp_path / "d" / "good.csv"
    good.write_text("a\n1\n")
    os.link(good, tmp_path / "hard.csv")
    (tmp_path / "soft.csv").symlink_to(good)
    for alias in (
        f"{tmp_path}/d/./good.csv",
        f"{tmp_path}/d/../d/good.csv",
        tmp_path / "hard.csv",
        tmp_path / "soft.csv",
    ):
        assert same_place(str(good), str(alias)), alias
    assert not same_place(str(good), str(tmp_path / "d" / "other.csv"))
    assert same_place("s3://bucket/x.parquet", "s3://bucket/x.parquet/") and not same_place("s3://b/x", "s3://b/y")


def test_an_output_over_an_input_or_another_output_is_refused(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("a\n1\n")
    with pytest.raises(StageError, match=r"^output \(.*\) and input \(.*\) are one file"):
        check_outputs({"input": str(good)}, {"output": f"{tmp_path}/./good.csv"})
    with pytest.raises(StageError, match=r"^output \(.*\) and output rejects \(.*\) are one file"):
        check_outputs({"input": str(good)}, {"output": str(tmp_path / "o.parquet"), "rejects": f"{tmp_path}/o.parquet"})
    with pytest.raises(StageError, match=r"^output \(.*\) lies inside input package \(.*\), a folder"):
        check_outputs({"package": str(tmp_path)}, {"output": str(tmp_path / "o.parquet")})
    check_outputs({"input": str(good), "model": str(good)}, {"output": str(tmp_path / "o.parquet")})  # inputs may share


def test_an_output_folder_may_hold_no_input(tmp_path):
    args = argparse.Namespace(
        reference=str(tmp_path / "plots" / "train.parquet"), plots_dir=str(tmp_path / "plots"), debug=False, n=3
    )
    with pytest.raises(StageError, match=r"input reference .* lies inside output plots-dir .*, a folder the command"):
        check_arguments(args, ("plots_dir",), ("plots_dir",))
    args.reference = str(tmp_path / "plots-elsewhere.parquet")
    check_arguments(args, ("plots_dir",), ("plots_dir",))


@pytest.mark.parametrize("md5", ["../../../../etc/passwd", "0" * 31, "0" * 33, "G" * 32, None, 12, "ab/" + "0" * 29])
def test_a_cache_path_is_built_only_from_an_md5(tmp_path, md5):
    with pytest.raises(StageError, match="is not an md5"):
        cache_file(tmp_path, md5)


def test_a_cache_path_of_an_md5(tmp_path):
    md5 = "0123456789abcdef0123456789abcdef"
    assert cache_file(tmp_path, md5) == tmp_path / ".dvc/cache/files/md5/01" / md5[2:]


def test_an_output_inside_another_output_folder_is_refused_whatever_the_names(tmp_path):
    for folder, inner in (("a_folder", "z_file"), ("z_folder", "a_file")):
        outputs = {folder: str(tmp_path / "out"), inner: str(tmp_path / "out" / "x.json")}
        with pytest.raises(StageError, match=f"output {inner} .* lies inside output {folder} .*, a folder the command"):
            check_outputs({}, outputs, (folder,))
    outputs = {"output": str(tmp_path / "out"), "rejects": str(tmp_path / "out" / "rejects.parquet")}
    with pytest.raises(StageError, match=r"^output rejects \(.*\) lies inside output \(.*\), a folder the command"):
        check_outputs({}, outputs, ("output", "rejects"))


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/hook", "http://", "127.0.0.1:9090", "http://h:notaport/T0/B1/s3cret", "file:///s3cret", "", None],
)
def test_a_server_url_is_http_with_a_host_and_the_error_never_shows_it(url):
    """The one check of a URL the project asks or posts to (Prometheus, the monitor's webhook)."""
    from reprokit.core.paths import web_url

    with pytest.raises(StageError, match=r"^REPROKIT_MONITOR_WEBHOOK: expected http\(s\)://HOST") as caught:
        web_url(url, "REPROKIT_MONITOR_WEBHOOK")
    assert "s3cret" not in str(caught.value)
    assert web_url("https://hooks.example.com:8443/T0/B1", "w") == "https://hooks.example.com:8443/T0/B1"


def test_the_monitor_refuses_a_webhook_that_is_not_http_before_anything_is_read(monkeypatch):
    from reprokit.monitoring.alerts import URL_VARIABLE, post_verdict

    monkeypatch.setenv(URL_VARIABLE, "gopher://hooks.example.com/T0/s3cret")
    with pytest.raises(StageError, match=f"{URL_VARIABLE}: expected http") as caught:
        post_verdict({"verdict": "ok"}, name="churn", batch="no/such/batch.parquet")
    assert "s3cret" not in str(caught.value)


def test_an_output_whose_name_says_another_format_is_refused_naming_it():
    """`reprokit gate --out README.md` replaced the README with JSON; `score ... dataset.yaml`
    wrote Parquet bytes into the contract."""
    from reprokit.core.errors import StageError
    from reprokit.core.paths import check_suffix

    check_suffix({"out": "metrics/gate.json", "other": None}, (".json",), "JSON")
    check_suffix({"output": "s3://bucket/Scores.PARQUET?versionId=1"}, (".parquet", ".pq"), "Parquet")
    for name in ("README.md", "gate.json.bak", "gate", "https://user:pw@host/x.md"):
        with pytest.raises(StageError, match=r"is written as JSON: give it a name ending \.json$") as error:
            check_suffix({"out": name}, (".json",), "JSON")
        assert str(error.value).startswith("output out (") and "pw" not in str(error.value)
