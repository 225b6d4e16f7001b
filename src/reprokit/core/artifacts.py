"""Byte-stable files: canonical skops archives, JSON, Parquet and file hashes.

`skops.io.dump` writes object ids, member names derived from them and the current
time into its zip archive, so the same model saved twice differs byte for byte.
`save_skops` rewrites the archive into a canonical form (ids numbered in order of
first appearance, members renamed after them, a fixed timestamp, sorted members)
and then loads it back to prove the rewrite kept the object intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The md5 DVC 3 records for a file (plain md5 of the bytes)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dvc_md5(path: str | Path) -> str:
    """The md5 DVC records in dvc.lock for a file or a folder (`<md5 of its listing>.dir`),
    computed by DVC's own library (`dvc-data`), never written to any cache."""
    import tempfile

    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory(prefix="reprokit-hash-") as unused:
        _, _, obj = build(HashFileDB(fs, unused), str(Path(path).resolve()), fs, "md5", dry_run=True)
    return obj.hash_info.value


PARTIAL = ".partial-"  # temporary siblings: `.<name>.partial-*`, ignored by git (.gitignore)


def partial_prefix(path: Path) -> str:
    """The name prefix of `path`'s temporary siblings while it is being written."""
    return f".{path.name}{PARTIAL}"


def remove_leftovers(path: Path) -> None:
    """Remove the temporary siblings a killed earlier write left behind."""
    for leftover in path.parent.glob(partial_prefix(path) + "*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, so a crash leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=partial_prefix(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def fresh_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory output from nothing: yield an empty staging folder next to `path`,
    and only when the block succeeds replace `path` with it. No file of an earlier run
    survives, and a failure leaves the old directory as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=partial_prefix(path)))
    try:
        built = staging / path.name
        built.mkdir()
        yield built
        if path.exists():
            shutil.rmtree(path)
        built.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_json(path: str | Path, data: Any) -> None:
    """Deterministic, diff-friendly JSON (sorted keys, two-space indent, trailing newline)."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode())


# pyarrow's default row group (rows): writing one at a time gives the bytes of a one-shot write.
ROW_GROUP_ROWS = 1024 * 1024


def write_parquet(frame, path: str | Path, index: bool = True) -> None:
    """Parquet (zstd, with the index kept, unless not `index`) and no writer-dependent
    statistics that vary by run: the bytes `DataFrame.to_parquet` writes, converted to Arrow
    one row group at a time (the whole frame's Arrow copy was 1.3 GB more at featurize's peak
    at four million rows; tests/code/test_artifacts.py holds the bytes equal)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    names = [*frame.columns, *frame.index.names]
    if frame.attrs or not all(name is None or isinstance(name, str) for name in names):
        frame.to_parquet(buffer, engine="pyarrow", index=index, compression="zstd")  # pandas' own metadata for these
        write_bytes_atomic(path, buffer.getvalue())
        return
    # The schema from every row: a column's type never depends on which rows a slice holds.
    schema = pa.Schema.from_pandas(frame, preserve_index=index)
    with pq.ParquetWriter(buffer, schema, compression="zstd") as writer:
        for start in range(0, max(len(frame), 1), ROW_GROUP_ROWS):
            part = frame.iloc[start : start + ROW_GROUP_ROWS]
            writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=index))
    write_bytes_atomic(path, buffer.getvalue())


def read_split(path: str | Path, columns: list[str] | None = None, required: tuple[str, ...] = ()):
    """A prepared split a command reads (the gate, the monitor) as a frame: `columns` of it (all
    by default), which with `required` it must hold. A missing file, one that is not Parquet or
    lacks a column is one `StageError` naming it, never pyarrow's traceback."""
    import pandas as pd
    import pyarrow.parquet as pq

    from reprokit.core.errors import StageError
    from reprokit.core.redaction import describe_error

    try:
        names = pq.read_schema(path).names
        missing = [name for name in [*(columns or []), *required] if name not in names]
        if missing:
            raise StageError(f"{path}: no column {', '.join(missing)} (is it a split the pipeline made?)")
        return pd.read_parquet(path, columns=columns)
    except FileNotFoundError:
        raise StageError(f"{path}: no such file (`dvc repro` or `dvc pull` makes the splits)") from None
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise StageError(f"{path}: not a readable Parquet split ({describe_error(exc)})") from None


def read_features(path: str | Path, target: str):
    """A featurized split as a model is fitted on it: (the feature columns as one float64
    block, the target as a numpy array). Each column is read into the block in turn, so the
    split is never held twice: at four million rows and 40 features, the pandas frame, its
    copy without the target and the estimator's own array were three copies of 1.3 GB. A split
    with a feature column of another type is read as pandas reads it."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    pandas = json.loads((source.schema_arrow.metadata or {}).get(b"pandas", b"{}"))
    index = {name for name in pandas.get("index_columns", []) if isinstance(name, str)}  # a range: metadata only
    names = [f.name for f in source.schema_arrow if f.name != target and f.name not in index]
    if not all(source.schema_arrow.field(name).type == pa.float64() for name in names):
        frame = pd.read_parquet(path)
        return frame.drop(columns=[target]), frame[target].to_numpy()
    block = np.empty((len(names), source.metadata.num_rows), dtype="float64")  # pandas keeps a block by column
    for i, name in enumerate(names):
        block[i] = source.read(columns=[name]).column(0).to_numpy()
    y = pd.read_parquet(path, columns=[target])[target].to_numpy()
    return pd.DataFrame(block.T, columns=names, copy=False), y


def _canonical_schema(node: Any, ids: dict[int, int], files: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "__id__" and isinstance(value, int):
                out[key] = ids.setdefault(value, len(ids))
            elif key == "file" and isinstance(value, str):
                if value not in files:
                    suffix = Path(value).suffix
                    files[value] = f"{len(files):04d}{suffix}"
                out[key] = files[value]
            else:
                out[key] = _canonical_schema(value, ids, files)
        return out
    if isinstance(node, list):
        return [_canonical_schema(item, ids, files) for item in node]
    return node


def canonical_skops_bytes(raw: bytes) -> bytes:
    """Rewrite a skops archive so that equal objects give equal bytes."""
    source = zipfile.ZipFile(io.BytesIO(raw))
    schema = json.loads(source.read("schema.json"))
    files: dict[str, str] = {}
    canonical = _canonical_schema(schema, {}, files)
    members = {"schema.json": json.dumps(canonical, separators=(",", ":")).encode()}
    for old, new in files.items():
        members[new] = source.read(old)
    leftover = set(source.namelist()) - set(files) - {"schema.json"}
    if leftover:
        raise ValueError(f"skops archive has members the schema does not reference: {sorted(leftover)}")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            # Stored, not deflated: the bytes then do not depend on the zlib build.
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            target.writestr(info, members[name])
    return out.getvalue()


def dump_skops(obj: Any) -> bytes:
    """Serialize `obj` with skops into canonical bytes."""
    import skops.io as sio

    return canonical_skops_bytes(sio.dumps(obj))


def save_skops(obj: Any, path: str | Path) -> None:
    """Save `obj` as a canonical skops file."""
    write_bytes_atomic(path, dump_skops(obj))
