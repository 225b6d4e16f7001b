"""A corpus of bad source files: each one stops `prepare` with one clear error, no traceback.

Every case runs the stage's own entry point on a file written here and expects exit
status 1 and a single error naming the file, the column where there is one, and the
cause in the user's terms. Files that are only unusual (a byte-order mark, CRLF line
ends, a gzipped CSV) must read exactly like the plain file.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import logging
import threading

import pandas as pd
import pytest
import yaml

from reprokit import prepare
from synthetic import loans_contract, make_loans


def plain(rows: int = 200) -> pd.DataFrame:
    return make_loans(rows)


def csv_text(frame: pd.DataFrame, **kwargs) -> str:
    return frame.to_csv(index=False, **kwargs)


def edited(edit) -> bytes:
    frame = plain()
    frame["amount"] = frame["amount"].astype(object)
    frame["region"] = frame["region"].astype(object)
    edit(frame)
    return csv_text(frame).encode()


def one_class(frame):
    frame["defaulted"] = 0


def duplicate_ids(frame):
    frame.loc[5, "loan_id"] = frame.loc[4, "loan_id"]


# name -> (file name, bytes, [phrases the one error message must hold])
CORPUS = {
    "empty file": ("loans.csv", b"", ["the file is empty"]),
    "header only": ("loans.csv", csv_text(plain().head(0)).encode(), ["no rows to split"]),
    "truncated parquet": ("loans.parquet", None, ["cannot be read as parquet"]),
    "parquet bytes named csv": ("loans.csv", None, ["source.encoding"]),
    "latin-1 bytes": ("loans.csv", None, ["not utf-8", "set source.encoding"]),
    "semicolon-separated": (
        "loans.csv",
        csv_text(plain(), sep=";").encode(),
        ["looks ';'-separated", "source.delimiter"],
    ),
    "tab-separated": ("loans.csv", csv_text(plain(), sep="\t").encode(), ["looks '\\\\t'-separated"]),
    "html page": ("loans.csv", b"<!DOCTYPE html>\n<html><body>Not found</body></html>\n", ["HTML"]),
    "+inf in a numeric column": (
        "loans.csv",
        edited(lambda f: f.__setitem__("amount", f["amount"].where(f.index != 3, "inf"))),
        ["'amount'", "finite"],
    ),
    "-inf in a numeric column": (
        "loans.csv",
        edited(lambda f: f.__setitem__("amount", f["amount"].where(f.index != 8, "-inf"))),
        ["'amount'", "finite"],
    ),
    "one class only": ("loans.csv", edited(one_class), ["'defaulted'", "1: 0, 0: 200"]),
    "three rows": ("loans.csv", csv_text(plain().head(3)).encode(), ["at least two rows of each class"]),
    "duplicate ids": ("loans.csv", edited(duplicate_ids), ["'loan_id'", "unique"]),
    "text in a numeric column": (
        "loans.csv",
        edited(lambda f: f.__setitem__("amount", f["amount"].where(f.index != 2, "abc"))),
        ["'amount'", "abc"],
    ),
    "date in a numeric column": (
        "loans.csv",
        edited(lambda f: f.__setitem__("amount", f["amount"].where(f.index != 2, "2024-01-31"))),
        ["'amount'", "2024-01-31"],
    ),
    "all-null required column": (
        "loans.csv",
        edited(lambda f: f.__setitem__("amount", None)),
        ["'amount'", "not_nullable"],
    ),
    "whitespace-padded category": (
        "loans.csv",
        edited(lambda f: f.__setitem__("region", " " + f["region"])),
        ["'region'", "leading or trailing spaces"],
    ),
    "unknown target label": (
        "loans.csv",
        edited(lambda f: f.__setitem__("defaulted", f["defaulted"].where(f.index != 1, 7))),
        ["'defaulted'", "isin"],
    ),
    "extra column": (
        "loans.csv",
        edited(lambda f: f.__setitem__("colour", "red")),
        ["'colour' is not in the contract"],
    ),
    "missing column": ("loans.csv", edited(lambda f: f.pop("age")), ["'age' is required by the contract but missing"]),
    "value below the minimum": (
        "loans.csv",
        edited(lambda f: f.__setitem__("age", f["age"].where(f.index != 0, 3))),
        ["'age'", "greater_than_or_equal_to(18)"],
    ),
    "binary column with a third value": (
        "loans.csv",
        edited(lambda f: f.__setitem__("owns_home", f["owns_home"].where(f.index != 0, 2))),
        ["'owns_home'", "isin"],
    ),
    "a directory instead of a file": ("loans.csv", "directory", ["is a directory"]),
    "missing file": ("loans.csv", "absent", ["file not found"]),
    "unknown suffix": ("loans.xlsx", b"x", ["cannot tell the format", "source.format"]),
}


def write_case(root, name: str):
    file_name, data, _ = CORPUS[name]
    path = root / file_name
    if name == "truncated parquet":
        plain().to_parquet(path)
        path.write_bytes(path.read_bytes()[:300])
    elif name == "parquet bytes named csv":
        plain().to_parquet(root / "x.parquet")
        path.write_bytes((root / "x.parquet").read_bytes())
    elif name == "latin-1 bytes":
        frame = plain()
        frame["region"] = frame["region"].astype(object)
        frame.loc[0, "region"] = "norté"
        path.write_bytes(csv_text(frame).encode("latin-1"))
    elif data == "directory":
        path.mkdir()
    elif data != "absent":
        path.write_bytes(data)
    return path


def run_prepare(root, uri: str, caplog, **source) -> int:
    contract = loans_contract(uri)
    contract["source"].update(source)
    (root / "dataset.yaml").write_text(yaml.safe_dump(contract))
    (root / "params.yaml").write_text("base: {seed: 1}\nsplit: {test_size: 0.2}\n")
    args = ["--contract", str(root / "dataset.yaml"), "--params", str(root / "params.yaml")]
    args += ["--train-out", str(root / "out/train.parquet"), "--test-out", str(root / "out/test.parquet")]
    args += ["--quality-out", str(root / "out/quality.json")]
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


@contextlib.contextmanager
def http_server(root):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_url_that_answers_404_is_one_clear_error(tmp_path, caplog):
    with http_server(tmp_path) as base:
        url = f"{base}/nothing-here.csv"
        assert run_prepare(tmp_path, url, caplog) == 1
    (message,) = errors(caplog)
    assert url in message and ("not found" in message or "404" in message), message


def outputs(root) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "out").iterdir())}


def test_unusual_but_valid_files_read_exactly_like_the_plain_file(tmp_path, caplog):
    """A byte-order mark, CRLF line ends, gzip, another delimiter or encoding set in the
    contract: the same outputs, byte for byte, as the plain UTF-8 CSV. Also over HTTP."""
    frame = plain()
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
