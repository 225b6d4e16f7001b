"""Batch scoring, `python -m reprokit.serving.score IN OUT`, run as a user runs it."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from badfiles import SCORER_CORPUS


def score(*args, env=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m reprokit.serving.score ARGS` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "reprokit.serving.score", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def raw_csv(tmp_path_factory, telco_splits):
    """The raw source table as a CSV file, as it comes (rownames and the churn label included)."""
    raw, *_ = telco_splits
    path = tmp_path_factory.mktemp("raw") / "customers.csv"
    raw.to_csv(path, index=False)
    return path


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_scores_equal_pyfunc_row_for_row_and_bytes_repeat(tmp_path, raw_csv, telco_package, pyfunc, telco_contract):
    out = tmp_path / "scores.parquet"
    done = score(raw_csv, out, "--model", telco_package, "--chunk-rows", "1000")
    assert done.returncode == 0, done.stderr
    assert "7043 rows, 7043 scored" in done.stderr and "0 rejected" in done.stderr
    scored = pd.read_parquet(out)
    assert list(scored.columns) == ["row", "probability", "label", "model_version", "warnings"]
    raw = pd.read_csv(raw_csv)
    np.testing.assert_array_equal(scored["row"], np.arange(len(raw)))
    np.testing.assert_array_equal(scored["probability"], np.asarray(pyfunc.predict(raw))[:, 1])
    assert (scored["label"] == np.where(scored["probability"] >= 0.5, "Yes", "No")).all()
    assert scored["warnings"].isna().all() and scored["model_version"].str.startswith("package-").all()
    assert len(pd.read_parquet(tmp_path / "scores.rejects.parquet")) == 0
    again = tmp_path / "again.parquet"
    assert score(raw_csv, again, "--model", telco_package, "--chunk-rows", "1000").returncode == 0
    assert md5(again) == md5(out)  # byte-identical from run to run


def test_parquet_gzip_and_chunk_sizes_give_the_same_rows(tmp_path, raw_csv, telco_package):
    raw = pd.read_csv(raw_csv)
    raw.to_parquet(tmp_path / "in.parquet")
    (tmp_path / "in.csv.gz").write_bytes(gzip.compress(raw_csv.read_bytes(), mtime=0))
    results = []
    for source, chunk in (("in.parquet", 700), ("in.csv.gz", 2500), ("in.parquet", 100_000)):
        out = tmp_path / f"{source}-{chunk}.parquet"
        done = score(tmp_path / source, out, "--model", telco_package, "--chunk-rows", chunk)
        assert done.returncode == 0, done.stderr
        results.append(pd.read_parquet(out))
    for other in results[1:]:
        pd.testing.assert_frame_equal(other, results[0])


def test_bad_rows_go_to_the_rejects_file_with_their_reasons(tmp_path, raw_csv, telco_package, pyfunc):
    raw = pd.read_csv(raw_csv).head(50).astype({"tenure": object, "contract": object})
    raw.loc[3, "tenure"] = "twelve"  # not a number: the CSV reader must not fail the file
    raw.loc[7, "tenure"] = 12.5
    raw.loc[9, "contract"] = None
    raw.loc[11, "contract"] = "Three year"  # unknown category: scored, with a warning
    source = tmp_path / "bad.csv"
    raw.to_csv(source, index=False)
    out = tmp_path / "out.parquet"
    done = score(source, out, "--model", telco_package, "--rejects", tmp_path / "bad-rows.parquet")
    assert done.returncode == 0, done.stderr
    assert "50 rows, 47 scored" in done.stderr and "3 rejected" in done.stderr
    rejects = pd.read_parquet(tmp_path / "bad-rows.parquet")
    assert rejects["row"].tolist() == [3, 7, 9]
    assert rejects["reason"].tolist() == [
        "tenure: expected a number, got text",
        "tenure: expected a whole number",
        "contract: null where the contract requires a value",
    ]
    assert rejects.loc[0, "tenure"] == "twelve"  # the row as it was, to fix and send again
    scored = pd.read_parquet(out)
    assert 3 not in set(scored["row"]) and len(scored) == 47
    warned = scored.set_index("row").loc[11]
    assert warned["warnings"] == "contract: a category the contract does not list"
    good = raw.drop(index=[3, 7, 9]).astype({"tenure": "int64"})
    np.testing.assert_array_equal(scored["probability"], np.asarray(pyfunc.predict(good))[:, 1])


def test_an_id_column_keys_the_output(tmp_path, raw_csv, telco_package, telco_contract):
    """With `source.id_column` in the package's contract, rows are keyed by it."""
    package = with_contract(telco_package, tmp_path, lambda contract: contract["source"].update(id_column="customer"))
    raw = pd.read_csv(raw_csv).head(30)
    raw.insert(0, "customer", [f"C{i:04d}" for i in range(30)])
    raw.to_parquet(tmp_path / "in.parquet")
    done = score(tmp_path / "in.parquet", tmp_path / "out.parquet", "--model", package)
    assert done.returncode == 0, done.stderr
    assert pd.read_parquet(tmp_path / "out.parquet")["customer"].tolist() == raw["customer"].tolist()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda raw: raw.drop(columns=["tenure", "contract"]), "missing required column(s): tenure, contract"),
        (lambda raw: "not,a\ntable", "cannot read it (CSV parse error"),
    ],
)
def test_a_file_that_cannot_be_scored_is_one_error_and_writes_nothing(tmp_path, raw_csv, telco_package, make, message):
    made = make(pd.read_csv(raw_csv).head(20))
    source = tmp_path / "in.csv"
    if isinstance(made, str):
        source.write_text(made)
    else:
        made.to_csv(source, index=False)
    done = score(source, tmp_path / "out.parquet", "--model", telco_package)
    assert done.returncode == 1
    assert message in done.stderr and str(source) in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_a_missing_file_and_an_unknown_format_are_one_error(tmp_path, telco_package):
    done = score(tmp_path / "nothing.csv", tmp_path / "out.parquet", "--model", telco_package)
    assert done.returncode == 1 and "nothing.csv: no such file" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "in.xlsx").write_text("x")
    done = score(tmp_path / "in.xlsx", tmp_path / "out.parquet", "--model", telco_package)
    assert done.returncode == 1 and "cannot tell the format" in done.stderr


def test_memory_stays_flat_as_the_file_grows(tmp_path, raw_csv, telco_package):
    """Peak RSS for 10x the rows grows by far less than 10x: the file is streamed in chunks."""
    raw = pd.read_csv(raw_csv)
    peaks = {}
    for copies in (2, 20):
        source = tmp_path / f"in-{copies}.parquet"
        pd.concat([raw] * copies, ignore_index=True).to_parquet(source, row_group_size=5000)
        code = (
            "import resource, sys\n"
            "from reprokit.serving.score import main\n"
            "try:\n    main(sys.argv[1:])\nfinally:\n"
            "    print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        )
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                str(source),
                str(tmp_path / f"out-{copies}.parquet"),
                "--model",
                str(telco_package),
                "--chunk-rows",
                "5000",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        peaks[copies] = int(done.stderr.split("PEAK ")[1].split()[0])
    # 140,860 rows against 14,086: the model and libraries dominate; the rows add little.
    assert peaks[20] < peaks[2] * 1.5, peaks


def test_an_s3_file_in_and_out(tmp_path, raw_csv, telco_package):
    """fsspec URLs both ways, against a real S3-compatible server (moto) on 127.0.0.1; the
    endpoint and credentials come from the environment, as for any AWS client."""
    import os

    from servers import moto_s3, s3_client

    with moto_s3(log=tmp_path / "moto.log") as endpoint:
        client = s3_client(endpoint)
        client.create_bucket(Bucket="batches")
        client.put_object(Bucket="batches", Key="in/customers.csv", Body=raw_csv.read_bytes())
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        done = score(
            "s3://batches/in/customers.csv", "s3://batches/out/scores.parquet", "--model", telco_package, env=env
        )
        assert done.returncode == 0, done.stderr
        remote = client.get_object(Bucket="batches", Key="out/scores.parquet")["Body"].read()
        rejects = client.get_object(Bucket="batches", Key="out/scores.rejects.parquet")["Body"].read()
    local = tmp_path / "local.parquet"
    assert score(raw_csv, local, "--model", telco_package).returncode == 0
    assert remote == local.read_bytes()  # the same bytes wherever they are written
    assert len(pd.read_parquet(io.BytesIO(rejects))) == 0


def with_contract(telco_package, tmp_path, edit):
    """A copy of the package whose carried contract is edited (as another dataset.yaml would make it)."""
    import shutil

    import yaml

    package = tmp_path / "package"
    shutil.copytree(telco_package, package)
    mlmodel = yaml.safe_load((package / "MLmodel").read_text())
    edit(mlmodel["metadata"]["reprokit"]["contract"])
    (package / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return package


def test_rejects_in_several_chunks_and_a_first_chunk_all_rejected(tmp_path, raw_csv, telco_package, pyfunc):
    raw = pd.read_csv(raw_csv).head(12).astype({"contract": object})
    raw.loc[[0, 1, 2, 10], "contract"] = None  # chunk 1 (rows 0-2) holds no scorable row
    raw.to_csv(tmp_path / "in.csv", index=False)
    done = score(tmp_path / "in.csv", tmp_path / "out.parquet", "--model", telco_package, "--chunk-rows", "3")
    assert done.returncode == 0, done.stderr
    scored, rejects = pd.read_parquet(tmp_path / "out.parquet"), pd.read_parquet(tmp_path / "out.rejects.parquet")
    assert rejects["row"].tolist() == [0, 1, 2, 10] and scored["row"].tolist() == [3, 4, 5, 6, 7, 8, 9, 11]
    assert str(scored["label"].dtype) in ("str", "string", "object") and set(scored["label"]) <= {"Yes", "No"}
    good = raw.drop(index=[0, 1, 2, 10])
    np.testing.assert_array_equal(scored["probability"], np.asarray(pyfunc.predict(good))[:, 1])


def test_a_file_where_every_row_is_rejected_keeps_its_column_types(tmp_path, raw_csv, telco_package):
    raw = pd.read_csv(raw_csv).head(5).assign(contract=None)
    raw.to_csv(tmp_path / "in.csv", index=False)
    assert score(tmp_path / "in.csv", tmp_path / "out.parquet", "--model", telco_package).returncode == 0
    import pyarrow.parquet as pq

    schema = pq.read_schema(tmp_path / "out.parquet")
    assert [str(t) for t in schema.types] == ["int64", "double", "string", "string", "string"]
    assert pq.read_metadata(tmp_path / "out.parquet").num_rows == 0
    assert len(pd.read_parquet(tmp_path / "out.rejects.parquet")) == 5


def test_a_failure_part_way_leaves_no_output_and_does_not_hang(tmp_path, raw_csv, telco_package):
    """A broken line in a later block of a large CSV: one error, no partial file, prompt exit."""
    text = raw_csv.read_text()
    header, body = text.split("\n", 1)
    (tmp_path / "in.csv").write_text(header + "\n" + body * 6 + "1,2,3\n" + body)
    done = score(
        tmp_path / "in.csv", tmp_path / "out.parquet", "--model", telco_package, "--chunk-rows", 5000, timeout=300
    )
    assert done.returncode == 1 and "cannot read it" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_csv_blanks_delimiter_and_encoding_are_read_as_pandas_and_the_contract_say(
    tmp_path, raw_csv, telco_package, pyfunc
):
    """`NA` reads as null in batch scoring as in `pd.read_csv`; the contract's delimiter and
    encoding apply, as in the prepare stage."""
    raw = pd.read_csv(raw_csv).head(30).astype({"total_charges": object})
    raw.loc[4, "total_charges"] = "NA"
    raw.to_csv(tmp_path / "na.csv", index=False)
    done = score(tmp_path / "na.csv", tmp_path / "na.parquet", "--model", telco_package)
    assert done.returncode == 0 and "30 scored" in done.stderr, done.stderr
    expected = np.asarray(pyfunc.predict(pd.read_csv(tmp_path / "na.csv")))[:, 1]
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "na.parquet")["probability"], expected)

    def semicolons(contract):
        contract["source"].update(delimiter=";", encoding="latin-1")

    package = with_contract(telco_package, tmp_path, semicolons)
    (tmp_path / "semi.csv").write_bytes(pd.read_csv(tmp_path / "na.csv").to_csv(index=False, sep=";").encode("latin-1"))
    done = score(tmp_path / "semi.csv", tmp_path / "semi.parquet", "--model", package)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "semi.parquet")["probability"], expected)
    # the package's own contract reads commas: the file's settings given on the command line
    done = score(tmp_path / "semi.csv", tmp_path / "opts.parquet", "--model", telco_package)
    assert done.returncode == 1 and "looks ';'-separated" in done.stderr and "set --delimiter to ';'" in done.stderr
    options = ("--delimiter", ";", "--encoding", "latin-1")
    done = score(tmp_path / "semi.csv", tmp_path / "opts.parquet", "--model", telco_package, *options)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "opts.parquet")["probability"], expected)
    for option, value, message in [
        ("--delimiter", ";;", "--delimiter: expected one character"),
        ("--encoding", "klingon", "--encoding: 'klingon' is not an encoding Python knows"),
    ]:
        done = score(tmp_path / "semi.csv", tmp_path / "bad.parquet", "--model", telco_package, option, value)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_no_output_overwrites_the_input_whatever_its_name(tmp_path, raw_csv, telco_package):
    """`score DIR/good.csv DIR/./good.csv` used to replace the CSV with Parquet bytes: names were
    compared as strings. Every alias of the input, as output or rejects, is refused; nothing changes."""
    import os

    folder = tmp_path / "d"
    folder.mkdir()
    good = folder / "good.csv"
    good.write_bytes(raw_csv.read_bytes())
    os.link(good, tmp_path / "hard.csv")
    (tmp_path / "soft.csv").symlink_to(good)
    before = md5(good)
    aliases = [f"{folder}/./good.csv", f"{folder}/../d/good.csv", tmp_path / "hard.csv", tmp_path / "soft.csv"]
    for alias in aliases:
        for args in ([good, alias], [good, tmp_path / "o.parquet", "--rejects", alias], [alias, good]):
            done = score(*args, "--model", telco_package)
            assert done.returncode == 1 and "Traceback" not in done.stderr, (args, done.stderr)
            assert "are one file" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = score(good, tmp_path / "o.parquet", "--rejects", f"{tmp_path}/./o.parquet", "--model", telco_package)
    assert done.returncode == 1 and "ERROR reprokit: score failed: output (" in done.stderr, done.stderr
    assert ") and output rejects (" in done.stderr and "output output" not in done.stderr, done.stderr
    done = score(good, f"{telco_package}/MLmodel", "--model", telco_package)
    assert done.returncode == 1 and "input model" in done.stderr
    mistyped = (
        [tmp_path / "scores.csv"],
        [tmp_path / "o.parquet", "--rejects", tmp_path / "rejects.csv.gz"],
        [tmp_path / "dataset.yaml"],  # a mistyped argument would replace a tracked file with Parquet bytes
        [tmp_path / "scores"],
    )
    for args in mistyped:
        done = score(good, *args, "--model", telco_package)
        assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "is written as Parquet: give it a name ending .parquet or .pq" in done.stderr, done.stderr
    assert md5(good) == before and not (tmp_path / "o.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "hard.csv", "soft.csv"]


def test_credentials_in_a_url_never_reach_the_output(tmp_path, raw_csv, telco_package):
    """s3://key:secret@..., presigned URLs: the error names the place, never the secret."""
    import os

    from servers import moto_s3

    with moto_s3(log=tmp_path / "moto.log") as endpoint:
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        for source, out in [
            ("s3://AKIAHOSTILE:s3cr3tValue@nobucket/in.csv", tmp_path / "o.parquet"),
            (
                f"{endpoint}/nobucket/in.csv?X-Amz-Signature=s3cr3tValue&X-Amz-Credential=AKIAHOSTILE",
                tmp_path / "o.parquet",
            ),
            (raw_csv, "s3://AKIAHOSTILE:s3cr3tValue@nobucket/out.parquet"),
        ]:
            done = score(source, out, "--model", telco_package, env=env)
            assert done.returncode == 1, done.stderr
            assert "s3cr3tValue" not in done.stderr + done.stdout and "AKIAHOSTILE" not in done.stderr, done.stderr
            assert "***@nobucket" in done.stderr or "/nobucket/in.csv" in done.stderr, done.stderr


@pytest.fixture(scope="module")
def good_rows(telco_splits):
    _, _, test, _ = telco_splits
    return test.head(20).reset_index(drop=True)


@pytest.mark.parametrize("case", sorted(SCORER_CORPUS))
def test_every_file_of_the_corpus_is_scored_exactly_or_refused_naming_the_cause(
    tmp_path, good_rows, telco_package, case
):
    name, make, expected = SCORER_CORPUS[case]
    source = tmp_path / name
    source.write_bytes(make(good_rows))
    out = tmp_path / "out.parquet"
    done = score(source, out, "--model", telco_package)
    assert "Traceback" not in done.stderr and "terminate called" not in done.stderr, done.stderr
    if expected[0] == "refused":
        assert done.returncode == 1, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and str(source) in done.stderr, done.stderr
        for fragment in expected[1]:
            assert fragment in done.stderr, done.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing written
        return
    _, scored, rejected, reasons, warned, exact = expected
    assert done.returncode == 0, done.stderr
    assert len(pd.read_parquet(out)) == scored
    assert int(pd.read_parquet(out)["warnings"].notna().sum()) == warned
    rejects = pd.read_parquet(tmp_path / "out.rejects.parquet")
    assert len(rejects) == rejected
    for fragment in reasons:
        assert rejects["reason"].str.contains(fragment, regex=False).all(), rejects["reason"].tolist()
    if exact:  # every row read exactly: the same scores as the plain file
        plain = tmp_path / "plain.csv"
        good_rows.to_csv(plain, index=False)
        assert score(plain, tmp_path / "plain.parquet", "--model", telco_package).returncode == 0
        expected_scores = pd.read_parquet(tmp_path / "plain.parquet")["probability"]
        np.testing.assert_array_equal(pd.read_parquet(out)["probability"], expected_scores)


def test_a_wrong_file_is_refused_before_the_model_is_loaded(tmp_path, raw_csv, telco_package):
    """The columns are checked against the contract the package's MLmodel carries first: with a
    package whose model file cannot load, a file missing a column still gets the column error."""
    import shutil

    broken = tmp_path / "package"
    shutil.copytree(telco_package, broken)
    (broken / "model.skops").write_bytes(b"not a skops archive")
    missing = tmp_path / "missing.csv"
    pd.read_csv(raw_csv).drop(columns="tenure").to_csv(missing, index=False)
    done = score(missing, tmp_path / "out.parquet", "--model", broken)
    assert done.returncode == 1 and "missing required column(s): tenure" in done.stderr, done.stderr
    good = score(raw_csv, tmp_path / "out.parquet", "--model", broken)
    assert good.returncode == 1 and "model.skops" in good.stderr, good.stderr  # the package does not load
    assert not (tmp_path / "out.parquet").exists()
