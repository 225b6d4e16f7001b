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


# --- The batch scorer's corpus (`python -m reprokit.serving.score`), on the default (Telco) contract --
# Each case: (file name, bytes made from a frame of good rows, expected). Expected is either
# ("refused", [fragments of the one error line]) or ("scored", rows scored, rows rejected,
# [fragments of the rejects' reasons], rows with warnings, exact: every score equals the plain
# file's): every file is either scored exactly or refused naming the cause, never misread and
# never a traceback.


def _csv(frame: pd.DataFrame, **kwargs) -> bytes:
    return frame.to_csv(index=False, **kwargs).encode()


def _parquet(frame) -> bytes:
    import io

    out = io.BytesIO()
    frame.to_parquet(out, index=False)
    return out.getvalue()


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, mtime=0)


def _set(frame, column, row, value):
    frame = frame.copy()
    frame[column] = frame[column].astype(object)
    frame.loc[frame.index[row], column] = value
    return frame


def _renamed(frame, old, new):
    text = frame.to_csv(index=False)
    header, rest = text.split("\n", 1)
    return (header.replace(old, new, 1) + "\n" + rest).encode()


def _list_column(frame):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    position = table.schema.get_field_index("tenure")
    values = pa.array([[int(v)] for v in frame["tenure"]], type=pa.list_(pa.int64()))
    table = table.set_column(position, "tenure", values)
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def _mixed_line_ends(frame):
    lines = frame.to_csv(index=False).split("\n")
    return "".join(line + ("\r\n" if i % 2 else "\n") for i, line in enumerate(lines) if line).encode()


SCORER_CORPUS = {
    "duplicate column names": ("b.csv", lambda f: _renamed(f, "partner", "tenure"), ("refused", ["duplicate column name(s) 'tenure'"])),
    "blank column name (an exported index)": ("b.csv", lambda f: f.reset_index(drop=True).to_csv().encode(), ("refused", ["column(s) 1 have no name"])),
    "trailing delimiter on every line": (
        "b.csv",
        lambda f: "".join(line + ",\n" for line in f.to_csv(index=False).splitlines()).encode(),
        ("refused", [f"column(s) 21 have no name"]),
    ),
    "list-valued feature column (Parquet)": ("b.parquet", _list_column, ("refused", ["'tenure' (list<element: int64>)", "not single values"])),
    "gzip bytes named .csv": ("b.csv", lambda f: _gzip(_csv(f)), ("refused", ["holds gzip-compressed data", "name it .csv.gz"])),
    "Parquet bytes named .csv": ("b.csv", _parquet, ("refused", ["named as a CSV file but holds Parquet data"])),
    "an Excel workbook named .csv": ("b.csv", lambda f: b"PK\x03\x04" + b"\x00" * 100, ("refused", ["a zip archive"])),
    "CSV text named .parquet": ("b.parquet", _csv, ("refused", ["not a Parquet file", "not PAR1"])),
    "gzip CSV named .csv.gz": ("b.csv.gz", lambda f: _gzip(_csv(f)), ("scored", 20, 0, [], 0, True)),
    "Excel export: BOM and CRLF": ("b.csv", lambda f: b"\xef\xbb\xbf" + _csv(f, lineterminator="\r\n"), ("scored", 20, 0, [], 0, True)),
    "mixed line ends": ("b.csv", _mixed_line_ends, ("scored", 20, 0, [], 0, True)),
    "quoted newline inside a category": (
        "b.csv",
        lambda f: _csv(_set(f, "payment_method", 3, "Electronic\ncheck")),
        ("scored", 20, 0, [], 1, False),  # an unseen category: scored as a null, with a warning
    ),
    "a column of dates where numbers belong": (
        "b.csv",
        lambda f: _csv(f.assign(tenure=["2024-01-05"] * len(f))),
        ("scored", 0, 20, ["tenure"], 0, False),
    ),
    "one date among numbers": ("b.csv", lambda f: _csv(_set(f, "monthly_charges", 5, "2024-01-05")), ("scored", 19, 1, ["monthly_charges"], 0, False)),
    "all-null nullable column": ("b.csv", lambda f: _csv(f.assign(total_charges=None)), ("scored", 20, 0, [], 0, False)),
    "all-null required column": ("b.csv", lambda f: _csv(f.assign(contract=None)), ("scored", 0, 20, ["contract"], 0, False)),
    "huge single line (a 20 MB cell)": (
        "b.csv",
        lambda f: _csv(_set(f, "payment_method", 2, "x" * 20_000_000)),
        ("refused", ["a row is longer than 4 MiB"]),
    ),
    "empty file": ("b.csv", lambda f: b"", ("refused", ["cannot read it", "Empty CSV file"])),
    "header only": ("b.csv", lambda f: _csv(f.head(0)), ("scored", 0, 0, [], 0, False)),
    "semicolon-separated": ("b.csv", lambda f: _csv(f, sep=";"), ("refused", ["looks ';'-separated", "set --delimiter to ';'"])),
    "NUL bytes in a cell": ("b.csv", lambda f: _csv(_set(f, "contract", 1, "Month\x00to-month")), ("scored", 20, 0, [], 1, False)),
    "latin-1 bytes": ("b.csv", lambda f: _csv(_set(f, "contract", 1, "Mónth-to-month"), encoding="latin-1"), ("scored", 20, 0, [], 1, False)),  # not a contract category: a warning
}  # fmt: skip
