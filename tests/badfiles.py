"""A corpus of bad source files for the loans contract (tests/synthetic.py), and a local
HTTP server to serve them from: shared by the in-process and the `dvc repro` tests."""

from __future__ import annotations

import contextlib
import http.server
import threading

import pandas as pd

from synthetic import make_loans


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


def with_value(column: str, row: int, value) -> bytes:
    """The plain table with one cell of `column` set to `value`."""
    return edited(lambda f: f.__setitem__(column, f[column].where(f.index != row, value)))


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
        with_value("amount", 3, "inf"),
        ["'amount'", "finite"],
    ),
    "-inf in a numeric column": (
        "loans.csv",
        with_value("amount", 8, "-inf"),
        ["'amount'", "finite"],
    ),
    "one class only": ("loans.csv", edited(one_class), ["'defaulted'", "1: 0, 0: 200"]),
    "three rows": ("loans.csv", csv_text(plain().head(3)).encode(), ["at least two rows of each class"]),
    "duplicate ids": ("loans.csv", edited(duplicate_ids), ["'loan_id'", "unique"]),
    "text in a numeric column": (
        "loans.csv",
        with_value("amount", 2, "abc"),
        ["'amount'", "abc"],
    ),
    "date in a numeric column": (
        "loans.csv",
        with_value("amount", 2, "2024-01-31"),
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
        with_value("defaulted", 1, 7),
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
        with_value("age", 0, 3),
        ["'age'", "greater_than_or_equal_to(18)"],
    ),
    "binary column with a third value": (
        "loans.csv",
        with_value("owns_home", 0, 2),
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
