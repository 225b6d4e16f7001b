from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from reprokit.core import artifacts
from reprokit.core.artifacts import (
    FIXED_ZIP_TIME,
    ROW_GROUP_ROWS,
    canonical_skops_bytes,
    dump_skops,
    md5_file,
    read_features,
    save_skops,
    write_json,
    write_parquet,
)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + rng.normal(size=200) > 0).astype(int)
    model = make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=20, random_state=0)).fit(x, y)
    return model, x


def test_skops_alone_is_not_byte_stable_which_is_why_we_canonicalize(fitted):
    model, _ = fitted
    assert sio.dumps(model) != sio.dumps(model)


def test_canonical_bytes_are_equal_for_equal_objects(fitted):
    model, _ = fitted
    assert dump_skops(model) == dump_skops(model)
    assert canonical_skops_bytes(sio.dumps(model)) == canonical_skops_bytes(sio.dumps(model))


def test_canonical_archive_has_fixed_names_and_times(fitted):
    model, _ = fitted
    archive = zipfile.ZipFile(io.BytesIO(dump_skops(model)))
    names = archive.namelist()
    assert names == sorted(names) and "schema.json" in names
    assert all(info.date_time == FIXED_ZIP_TIME for info in archive.infolist())
    assert {n for n in names if n != "schema.json"} == {f"{i:04d}.npy" for i in range(len(names) - 1)}
    schema = json.loads(archive.read("schema.json"))
    ids = []

    def walk(node):
        if isinstance(node, dict):
            if "__id__" in node:
                ids.append(node["__id__"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert max(ids) < 100_000  # sequence numbers, not memory addresses


def test_round_trip_keeps_predictions(tmp_path, fitted):
    model, x = fitted
    path = tmp_path / "model.skops"
    save_skops(model, path)
    data = path.read_bytes()  # any object, not only the pipeline's own (those load with trust.load_skops)
    loaded = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_md5_matches_hashlib_and_json_is_deterministic(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"b": 1.5, "a": [1, 2]})
    first = path.read_bytes()
    write_json(path, {"a": [1, 2], "b": 1.5})
    assert path.read_bytes() == first == b'{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1.5\n}\n'
    assert md5_file(path) == hashlib.md5(first).hexdigest()
    with pytest.raises(ValueError):
        write_json(path, {"x": float("nan")})
    assert path.read_bytes() == first  # a failed write leaves the old file


def test_a_directory_output_is_built_fresh_and_replaced_only_on_success(tmp_path):
    from reprokit.core.artifacts import fresh_dir

    out = tmp_path / "plots"
    out.mkdir()
    (out / "stale.json").write_text("from an earlier run\n")
    (tmp_path / ".plots.partial-killed").mkdir()  # what a killed earlier run left behind
    with fresh_dir(out) as staged:
        assert staged != out and not any(staged.iterdir())
        (staged / "roc.json").write_text("[]\n")
    assert sorted(p.name for p in out.iterdir()) == ["roc.json"]  # no stale file survives
    with pytest.raises(RuntimeError, match="boom"):
        with fresh_dir(out) as staged:
            (staged / "half.json").write_text("{")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["roc.json"]  # a failure keeps the old directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plots"]  # no staging folder left


def test_dvc_md5_is_what_dvc_records(tmp_path):
    """The hash the registry tags and the gate compare is the one `dvc add` writes, for a
    file and for a folder with nested files, odd names and an empty file."""
    import subprocess
    import sys
    from pathlib import Path

    from reprokit.core.artifacts import dvc_md5

    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    folder = tmp_path / "package"
    (folder / "sub dir").mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    (folder / "sub dir" / "$(touch x); `y`.txt").write_bytes(b"\x00\x01" * 100)
    (folder / "empty").write_bytes(b"")
    (tmp_path / "one.bin").write_bytes(b"data\r\n")
    for name in ("package", "one.bin"):
        subprocess.run([dvc, "add", "-q", name], cwd=tmp_path, check=True)
        recorded = yaml.safe_load((tmp_path / f"{name}.dvc").read_text())["outs"][0]["md5"]
        assert dvc_md5(tmp_path / name) == recorded
    assert not (tmp_path / "x").exists()


def parquet_frames() -> dict[str, pd.DataFrame]:
    """Frames of every kind the stages write: numbers, text with nulls, categoricals, a named
    index, a text column null in every row of one row group, no rows, attrs, names that are not text."""
    rows = 2_500
    frame = pd.DataFrame(
        {
            "x": np.linspace(0, 1, rows),
            "n": np.arange(rows, dtype="int64"),
            "t": ["a", None, "b", "c", None] * (rows // 5),
            "c": pd.Categorical(["u", "v"] * (rows // 2)),
            "y": np.arange(rows, dtype="int8") % 2,
        },
        index=pd.Index(np.arange(rows)[::-1], name="row"),
    )
    late = pd.DataFrame({"s": pd.Series([None] * (rows - 3) + ["x", "y", "z"], dtype=object)})
    noted = frame.head(10).copy()
    noted.attrs["source"] = "written by pandas with its attrs"
    numbered = pd.DataFrame({0: [1.0, 2.0], 1: ["a", "b"]})  # names that are not text: pandas writes them
    return {
        "mixed": frame,
        "text null in a whole row group": late,
        "no rows": frame.iloc[:0],
        "attrs": noted,
        "integer column names": numbered,
    }


@pytest.mark.parametrize("name", list(parquet_frames()))
@pytest.mark.parametrize("index", [True, False])
@pytest.mark.parametrize("row_group", [1_000, ROW_GROUP_ROWS])
def test_parquet_written_a_row_group_at_a_time_has_the_bytes_of_a_one_shot_write(
    tmp_path, monkeypatch, name, index, row_group
):
    """write_parquet converts one row group at a time; the file is byte for byte what pandas
    writes in one go with that row group size (pyarrow's default at ROW_GROUP_ROWS), so
    dvc.lock's hashes do not move."""
    import pyarrow.parquet as pq

    frame = parquet_frames()[name]
    monkeypatch.setattr(artifacts, "ROW_GROUP_ROWS", row_group)
    write_parquet(frame, tmp_path / "out.parquet", index=index)
    expected = io.BytesIO()
    size = {} if row_group == ROW_GROUP_ROWS else {"row_group_size": row_group}  # pyarrow's default, as stages wrote
    frame.to_parquet(expected, engine="pyarrow", index=index, compression="zstd", **size)
    assert (tmp_path / "out.parquet").read_bytes() == expected.getvalue()
    if len(frame) > row_group:
        assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups == -(-len(frame) // row_group)


def test_features_are_read_as_one_block_with_the_values_pandas_reads(tmp_path):
    """read_features: the feature columns as one float64 block (no copy on the way to the
    estimator), the target apart; the same values, names and order as the frame pandas reads."""
    rows = 1_000
    frame = pd.DataFrame(
        {
            "a": np.linspace(-1, 1, rows),
            "b": np.where(np.arange(rows) % 7 == 0, np.nan, 1.5),
            "churn": np.arange(rows) % 2,
        },
        index=pd.Index(np.arange(rows) + 10, name="row"),
    ).astype({"churn": "int8"})
    write_parquet(frame, tmp_path / "features.parquet")
    x, y = read_features(tmp_path / "features.parquet", "churn")
    assert list(x.columns) == ["a", "b"] and y.dtype == np.int8
    np.testing.assert_array_equal(y, frame["churn"].to_numpy())
    np.testing.assert_array_equal(x.to_numpy(), frame[["a", "b"]].to_numpy())
    block = x._mgr.blocks[0].values  # pandas' one block: a view of the array read into, not a copy of it
    assert len(x._mgr.blocks) == 1 and not block.flags.owndata and np.shares_memory(np.asarray(x), block)

    frame["n"] = np.arange(rows)  # a column of another type: read as pandas reads it
    write_parquet(frame, tmp_path / "mixed.parquet")
    x, y = read_features(tmp_path / "mixed.parquet", "churn")
    pd.testing.assert_frame_equal(x, frame.drop(columns=["churn"]))


def test_a_model_fitted_on_the_read_block_has_the_bytes_of_one_fitted_on_the_frame(tmp_path):
    """The train stage fits on read_features' block; the model's bytes are those of a fit on
    the frame pandas reads (names, values and types alike)."""
    from reprokit.core.config import load_section
    from reprokit.model.estimators import fit, fit_xy

    fitted_params = load_section("train")  # the committed model and its settings
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(3_000, 4)), columns=list("abcd"))
    frame["churn"] = (frame["a"] + rng.normal(size=3_000) > 0).astype("int8")
    write_parquet(frame, tmp_path / "features.parquet")
    on_frame = fit(pd.read_parquet(tmp_path / "features.parquet"), "churn", fitted_params, 0, 1)
    on_block = fit_xy(*read_features(tmp_path / "features.parquet", "churn"), fitted_params, 0, 1)
    save_skops(on_frame, tmp_path / "frame.skops")
    save_skops(on_block, tmp_path / "block.skops")
    assert (tmp_path / "frame.skops").read_bytes() == (tmp_path / "block.skops").read_bytes()


def test_a_split_that_is_missing_not_parquet_or_short_of_a_column_is_one_error_naming_it(tmp_path):
    """The gate and the monitor read the prepared splits through `read_split`: pyarrow's own
    errors (ArrowInvalid) were tracebacks."""
    from reprokit.core.errors import StageError

    good = tmp_path / "test.parquet"
    pd.DataFrame({"x": [1.0], "churn": [0]}).to_parquet(good)
    (tmp_path / "bad.parquet").write_text("not parquet")
    cases = {
        str(tmp_path / "nosuch.parquet"): ({}, "no such file"),
        str(tmp_path / "bad.parquet"): ({}, "not a readable Parquet split"),
        str(good): ({"required": ("label",)}, "no column label"),
    }
    for path, (options, message) in cases.items():
        with pytest.raises(StageError, match=message) as error:
            artifacts.read_split(path, **options)
        assert str(error.value).startswith(f"{path}: ")
    assert artifacts.read_split(good, columns=["churn"]).columns.tolist() == ["churn"]
