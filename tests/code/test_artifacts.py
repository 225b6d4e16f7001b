from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
import yaml
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from reprokit.core.artifacts import (
    FIXED_ZIP_TIME,
    canonical_skops_bytes,
    dump_skops,
    md5_file,
    save_skops,
    write_json,
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
