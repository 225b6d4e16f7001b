"""A corpus of bad source files: each one stops `prepare` with one clear error, no traceback.

Every case runs the stage's own entry point on a file written here and expects exit
status 1 and a single error naming the file, the column where there is one, and the
cause in the user's terms. Files that are only unusual (a byte-order mark, CRLF line
ends, a gzipped CSV) must read exactly like the plain file.
"""

from __future__ import annotations

import gzip
import logging

import pytest
import yaml
from badfiles import CORPUS, csv_text, http_server, plain, write_case
from synthetic import loans_contract

from reprokit.stages import prepare


def run_prepare(root, uri: str, caplog, *extra: str, **source) -> int:
    contract = loans_contract(uri)
    contract["source"].update(source)
    regions = contract["features"]["region"]["values"]
    contract["features"]["region"]["values"] = [*regions, "norté"]
    (root / "dataset.yaml").write_text(yaml.safe_dump(contract))
    (root / "params.yaml").write_text("base: {seed: 1}\nsplit: {test_size: 0.2}\nscale: {rows: 0, jitter: 0.05}\n")
    args = ["--contract", str(root / "dataset.yaml"), "--params", str(root / "params.yaml")]
    args += ["--train-out", str(root / "out/train.parquet"), "--test-out", str(root / "out/test.parquet")]
    args += ["--quality-out", str(root / "out/quality.json"), *extra]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="reprokit"):
        try:
            prepare.main(args)
        except SystemExit as exc:
            return int(exc.code)
    return 0


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_bad_file_gives_one_clear_error(tmp_path, caplog, name):
    path = write_case(tmp_path, name)
    assert run_prepare(tmp_path, str(path), caplog) == 1
    (message,) = errors(caplog)
    assert message.startswith("prepare failed:") and str(path) in message, message
    for phrase in CORPUS[name][2]:
        assert phrase in message, f"{phrase!r} not in: {message}"
    assert "Traceback" not in message
    assert not (tmp_path / "out").exists()  # nothing written: the previous outputs are not touched


def test_a_url_that_answers_404_is_one_clear_error(tmp_path, caplog):
    with http_server(tmp_path) as base:
        url = f"{base}/nothing-here.csv"
        assert run_prepare(tmp_path, url, caplog) == 1
    (message,) = errors(caplog)
    assert message == f"prepare failed: source {url}: cannot be read as csv (HTTP Error 404: File not found)"


def outputs(root) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "out").iterdir())}


def test_unusual_but_valid_files_read_exactly_like_the_plain_file(tmp_path, caplog):
    """A byte-order mark, CRLF line ends, gzip, another delimiter or encoding set in the
    contract: the same outputs, byte for byte, as the plain UTF-8 CSV. Also over HTTP.
    A non-ASCII category makes the encoding matter."""
    frame = plain()
    frame["region"] = frame["region"].replace("north", "norté")
    (tmp_path / "plain.csv").write_text(csv_text(frame))
    assert run_prepare(tmp_path, str(tmp_path / "plain.csv"), caplog) == 0
    expected = outputs(tmp_path)
    variants = {
        "bom.csv": ({}, b"\xef\xbb\xbf" + csv_text(frame).encode()),
        "crlf.csv": ({}, csv_text(frame, lineterminator="\r\n").encode()),
        "loans.csv.gz": ({}, gzip.compress(csv_text(frame).encode(), mtime=0)),
        "semi.csv": ({"delimiter": ";"}, csv_text(frame, sep=";").encode()),
        "latin.csv": ({"encoding": "latin-1"}, csv_text(frame).encode("latin-1")),
    }
    for name, (source, data) in variants.items():
        (tmp_path / name).write_bytes(data)
        assert run_prepare(tmp_path, str(tmp_path / name), caplog, **source) == 0, (name, errors(caplog))
        assert outputs(tmp_path) == expected, name
    with http_server(tmp_path) as base:
        assert run_prepare(tmp_path, f"{base}/plain.csv", caplog) == 0, errors(caplog)
    assert outputs(tmp_path) == expected


def test_debug_adds_the_traceback_to_the_one_error(tmp_path, caplog):
    path = write_case(tmp_path, "empty file")
    assert run_prepare(tmp_path, str(path), caplog) == 1
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not record.exc_info  # one line, no traceback
    assert run_prepare(tmp_path, str(path), caplog, "--debug") == 1
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info and "the file is empty" in record.getMessage()
