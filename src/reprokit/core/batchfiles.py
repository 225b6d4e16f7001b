"""Reading batch files: one reader for the batch scorer, the monitor and the drift trials.

A CSV (gzip by suffix) or Parquet file, a local path or an fsspec URL, or a partitioned
dataset (a directory of Parquet files): its format told from its name and checked against
its first bytes, its column names checked (no blank or duplicate name), and its rows read in
chunks with the contract's delimiter, encoding and the null tokens pandas uses.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import weakref
from pathlib import PurePosixPath
from typing import Any, Iterator

import pandas as pd

from reprokit.core.errors import StageError

log = logging.getLogger("reprokit.batchfiles")

COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")


def format_from_name(name: str) -> str | None:
    """`csv` or `parquet` from a file name or URL (its query ignored): `.csv` or `.txt`, also
    compressed (`.csv.gz`, `.txt.zst`, ...), `.parquet` or `.pq`; None for any other name."""
    suffixes = [suffix.lower() for suffix in PurePosixPath(name.split("?", 1)[0]).suffixes]
    compressed = bool(suffixes) and suffixes[-1] in COMPRESSED_SUFFIXES
    last = suffixes[-1 - compressed] if len(suffixes) > compressed else ""
    if last in (".csv", ".txt"):
        return "csv"
    if last in (".parquet", ".pq") and not compressed:  # Parquet compresses inside the file
        return "parquet"
    return None


def file_format(path: str) -> str:
    """`format_from_name`, or one clear error naming the file."""
    found = format_from_name(path)
    if found is None:
        raise StageError(
            f"{path}: cannot tell the format from the name; expected .csv (also compressed, e.g. .csv.gz), "
            ".txt or .parquet"
        )
    return found


@contextlib.contextmanager
def opened(path: str) -> Iterator[Any]:
    """A binary file for Arrow to read (gzip by suffix): Arrow's own file for a local path, an
    fsspec file object for a URL.

    Arrow reads ahead in its own threads. A thread that lets go of a Python file object takes
    the GIL to do it, and one doing so while the interpreter exits aborts the process
    (`terminate called without an active exception`, exit 134, after the error line). A local
    file therefore never goes through Python; an fsspec file is one that `release_files`
    waits for before the interpreter exits."""
    import fsspec
    import pyarrow as pa

    try:
        fs, target = fsspec.core.url_to_fs(path)
        compression = fsspec.utils.infer_compression(target)
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
        if "file" in protocols and compression in (None, "gzip"):
            with pa.OSFile(target, "rb") as raw:
                if compression is None:
                    yield raw
                else:
                    with pa.CompressedInputStream(raw, "gzip") as handle:
                        yield handle
            return
        with fsspec.open(path, "rb", compression="infer") as handle:
            _hand_to_arrow(handle)
            yield handle
    except FileNotFoundError:
        raise StageError(f"{path}: no such file") from None


_PYTHON_FILES: weakref.WeakSet = weakref.WeakSet()  # Python file objects Arrow's threads may hold


def _hand_to_arrow(handle) -> None:
    if not _PYTHON_FILES:
        atexit.unregister(release_files)
        atexit.register(release_files)  # before the interpreter starts finalizing
    _PYTHON_FILES.add(handle)


def release_files(seconds: float = 30.0) -> None:
    """Wait until Arrow's reader threads have let go of every Python file object handed to
    them (at most `seconds`), so none takes the GIL while the interpreter exits."""
    import gc
    import time

    gc.collect()  # a reader kept alive only by a cycle (an error's traceback) lets go now
    deadline = time.monotonic() + seconds
    while _PYTHON_FILES and time.monotonic() < deadline:
        time.sleep(0.01)  # the GIL free for a reader thread to drop its reference


# The blanks pandas reads as null (`pandas.read_csv`'s defaults): the prepare stage, `pyfunc` on
# `pd.read_csv` and batch scoring all agree on what a missing value looks like in a CSV.
NULL_TOKENS = sorted(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A"]
    + ["NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)


# What a file's first bytes say it is: a file named for one format and holding another is
# refused naming both, never misread (gzip bytes parsed as a one-column CSV of garbage).
MAGIC = {
    b"\x1f\x8b": "gzip-compressed data",
    b"PAR1": "Parquet data",
    b"PK\x03\x04": "a zip archive (an Excel workbook?)",
    b"BZh": "bzip2-compressed data",
    b"\xfd7zXZ": "xz-compressed data",
    b"\x28\xb5\x2f\xfd": "zstd-compressed data",
}


def sniff(path: str) -> None:
    """Refuse a file whose first bytes contradict its name (`.csv` holding gzip or Parquet
    bytes, `.parquet` holding anything but Parquet)."""
    name = path.lower().rsplit("?", 1)[0]
    if name.endswith(COMPRESSED_SUFFIXES):
        return  # read through the decompressor its suffix names
    with opened(path) as handle:
        head = handle.read(8)
    found = next((what for magic, what in MAGIC.items() if head.startswith(magic)), None)
    expected = file_format(path)
    if expected == "parquet" and found != "Parquet data":
        raise StageError(f"{path}: not a Parquet file: it begins with {head[:4]!r}, not PAR1")
    if expected == "csv" and found is not None:
        hint = " (name it .csv.gz)" if found.startswith("gzip") else ""
        raise StageError(f"{path}: named as a CSV file but holds {found}{hint}")


def add_reading_options(parser) -> None:
    """`--delimiter` and `--encoding`: how a command reads a CSV batch, when it differs from the
    contract's `source.delimiter` and `source.encoding` (the defaults)."""
    parser.add_argument("--delimiter", default=None, help="a CSV's field delimiter (default: source.delimiter)")
    parser.add_argument("--encoding", default=None, help="a CSV's text encoding (default: source.encoding)")


def reading(source, args):
    """The contract's `source` with the command's `--delimiter` and `--encoding` in place of its
    own; one clear error for a delimiter that is not one character or an unknown encoding."""
    import codecs
    import dataclasses

    changes = {}
    if args.delimiter is not None:
        delimiter = "\t" if args.delimiter in ("\\t", "tab") else args.delimiter
        if len(delimiter) != 1 or delimiter in '\r\n"':
            raise StageError(f"--delimiter: expected one character (\\t for a tab), got {args.delimiter[:20]!r}")
        changes["delimiter"] = delimiter
    if args.encoding is not None:
        try:
            changes["encoding"] = codecs.lookup(args.encoding).name
        except LookupError:
            raise StageError(f"--encoding: {args.encoding[:40]!r} is not an encoding Python knows") from None
    return dataclasses.replace(source, **changes)


def check_layout(names: list[str], where: str, setting: str = "--delimiter") -> None:
    """Catch a CSV read with the wrong settings from its header, before a list of missing
    columns: an HTML or XML page, or one column whose name holds another delimiter (`setting`
    says where to give the right one: a command's `--delimiter`, the contract's `source.delimiter`)."""
    if names and str(names[0]).lstrip().lower().startswith(("<!doctype", "<html", "<?xml")):
        raise StageError(f"{where}: the file looks like an HTML or XML page, not a data table")
    if len(names) == 1:
        for delimiter in (";", "\t", "|", ","):
            if delimiter in str(names[0]):
                shown = "\\t" if delimiter == "\t" else delimiter
                raise StageError(
                    f"{where}: the file looks {shown!r}-separated (one column named {str(names[0])[:60]!r}): "
                    f"set {setting} to {shown!r}"
                )


def check_names(names: list[str], path: str) -> list[str]:
    """`names`, unless one is blank (an exported index, a trailing delimiter) or appears twice
    (a reader would rename the second `name.1` and score the file as if nothing were wrong)."""
    blank = [str(position) for position, name in enumerate(names, 1) if not str(name).strip()]
    if blank:
        raise StageError(f"{path}: column(s) {', '.join(blank)} have no name: every column needs one")
    seen: set[str] = set()
    twice = sorted({name for name in names if name in seen or seen.add(name)})
    if twice:
        raise StageError(f"{path}: duplicate column name(s) {', '.join(map(repr, twice))}: each must appear once")
    return names


def column_names(path: str, source=None, setting: str = "--delimiter") -> list[str]:
    """The column names of a CSV (read with the contract's delimiter and encoding, `source`)
    or Parquet file; blank or duplicate names, a header read with the wrong delimiter (`setting`
    names where to give the right one), and contents that contradict the name, refused."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    sniff(path)
    with opened(path) as handle:  # its own handle: a reader of the rows reads ahead in the background
        if file_format(path) == "parquet":
            try:
                schema = pq.ParquetFile(handle).schema_arrow
            except (pa.ArrowInvalid, OSError) as exc:
                raise StageError(f"{path}: not a readable Parquet file ({exc})") from None
            index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
            names = [name for name in schema.names if name not in index]  # a pandas index is not data
            nested = [f"{field.name!r} ({field.type})" for field in schema if pa.types.is_nested(field.type)]
            if nested:
                raise StageError(
                    f"{path}: column(s) {', '.join(nested)} hold lists, maps or records, not single values"
                )
            return check_names(names, path)
        try:
            header = pacsv.open_csv(
                handle,
                read_options=pacsv.ReadOptions(block_size=1 << 16, encoding=getattr(source, "encoding", "utf-8")),
                parse_options=pacsv.ParseOptions(delimiter=getattr(source, "delimiter", ",")),
            )
        except pa.ArrowInvalid as exc:
            raise StageError(f"{path}: cannot read it ({exc})") from None
        names = header.schema.names
        header.close()
        check_layout(names, path, setting)
        return check_names(list(names), path)


CSV_BLOCK = 1 << 22  # bytes pyarrow reads at a time: no CSV row may be longer


def chunks(path: str, columns: list[str], numeric: set[str], rows: int, source=None) -> Iterator[pd.DataFrame]:
    """The file's `columns` (those present) in chunks of `rows` rows (the last one shorter), as
    pandas columns; a file that cannot be read is one `StageError` (a URL without credentials).

    A CSV is read with the contract's delimiter and encoding (`source`) and pandas' null
    tokens; its numeric columns are parsed as float64 by pyarrow, the others kept as text.
    When a numeric column holds a value that is not a number, the file is read again with
    numbers converted here (`parse_numbers`), from the chunk that held it: that value then
    rejects its row rather than the whole file, and the chunks before it are not repeated."""
    import pyarrow as pa

    from reprokit.core.redaction import redact

    done = 0
    try:
        try:
            for frame in _chunks(path, columns, numeric, rows, False, source):
                done += 1
                yield frame
            return
        except pa.ArrowInvalid as exc:
            if "CSV conversion error" not in str(exc):
                raise
        log.info("%s: some numeric values are not numbers; reading those columns as text", redact(path))
        for index, frame in enumerate(_chunks(path, columns, numeric, rows, True, source)):
            if index >= done:  # both readings cut the rows at the same places
                yield frame
    except pa.ArrowInvalid as exc:
        shown = redact(path)
        if "straddl" in str(exc):  # pyarrow's words for a row longer than its read block
            raise StageError(f"{shown}: cannot read it: a row is longer than {CSV_BLOCK >> 20} MiB") from None
        raise StageError(f"{shown}: cannot read it ({str(exc).replace(path, shown)})") from None


def _chunks(
    path: str, columns: list[str], numeric: set[str], rows: int, careful: bool, source
) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    with opened(path) as handle:
        if file_format(path) == "parquet":
            try:
                reader = pq.ParquetFile(handle)
            except (pa.ArrowInvalid, OSError) as exc:
                raise StageError(f"{path}: not a readable Parquet file ({exc})") from None
            present = [c for c in columns if c in reader.schema_arrow.names]
            for batch in reader.iter_batches(batch_size=rows, columns=present):
                yield batch.to_pandas()
            return
        encoding = getattr(source, "encoding", "utf-8")
        parse = pacsv.ParseOptions(delimiter=getattr(source, "delimiter", ","))
        names = column_names(path, source)
        present = [c for c in columns if c in names]
        types = {c: (pa.string() if careful or c not in numeric else pa.float64()) for c in present}
        reader = pacsv.open_csv(
            handle,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK, encoding=encoding),
            parse_options=parse,
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=present,
                null_values=NULL_TOKENS,
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
        pending: list[pd.DataFrame] = []
        held = 0
        for batch in reader:
            frame = batch.to_pandas()
            if careful:
                frame = parse_numbers(frame, numeric)
            pending.append(frame)
            held += len(frame)
            while held >= rows:
                whole = pd.concat(pending, ignore_index=True) if len(pending) > 1 else pending[0]
                yield whole.iloc[:rows].reset_index(drop=True)
                rest = whole.iloc[rows:].reset_index(drop=True)
                pending, held = ([rest] if len(rest) else []), len(rest)
        if held:
            yield pd.concat(pending, ignore_index=True) if len(pending) > 1 else pending[0]


def parse_numbers(frame: pd.DataFrame, numeric: set[str]) -> pd.DataFrame:
    """Text columns that hold numbers, converted; a value that is not a number stays as text
    (so the contract check rejects that row and names the column)."""
    for name in numeric & set(frame.columns):
        text = frame[name].astype(object)
        numbers = pd.to_numeric(text, errors="coerce")
        bad = text.notna() & numbers.isna()
        if bad.any():
            values = numbers.astype(object)
            values[bad] = text[bad]
            frame[name] = values
        else:
            frame[name] = numbers.astype("float64")
    return frame


def partition_files(source: str) -> list[str] | None:
    """The `.parquet` files of a partitioned dataset (a directory, a local path or an fsspec
    URL), as paths relative to it, sorted; None when `source` is not a directory."""
    import fsspec

    if str(source).startswith(("http://", "https://")):
        return None  # a web server lists no folders: a URL there is one file
    fs, root = fsspec.core.url_to_fs(source)
    if not fs.isdir(root):
        return None
    root = root.rstrip("/")
    names = [path[len(root) + 1 :] for path in fs.find(root) if path.lower().endswith((".parquet", ".pq"))]
    # `_temporary/`, `.ipynb_checkpoints/`, `_SUCCESS`...: writers' bookkeeping, not data
    return sorted(name for name in names if not any(part.startswith(("_", ".")) for part in name.split("/")))


def absolute(path: str) -> str:
    """A local path made absolute (a Dask worker may run in another folder); a URL as it is."""
    return path if "://" in str(path) else os.path.abspath(path)


def partition_names(source: str) -> list[str]:
    """`partition_files(source)`, or one clear error when `source` is not a directory of
    `.parquet` files (a URL shown without its credentials)."""
    from reprokit.core.redaction import redact

    names = partition_files(source)
    if names is None:
        raise StageError(f"{redact(source)}: a partitioned dataset is a directory of .parquet files")
    if not names:
        raise StageError(f"{redact(source)}: no .parquet files in it")
    return names
