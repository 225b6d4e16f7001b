"""One path rule: which locations a command or a committed file may name, and when two names
are one file.

- `repository_path`: a value taken from outside (a workflow input, an object key, a params
  value) that must name a file inside the repository is a plain relative path: no control
  characters, no absolute path, no `..`, and no symlink that leads outside. Spaces, quotes,
  `$`, `;`, backticks and non-ASCII letters are ordinary characters of a name: no project
  command ever hands such a value to a shell.
- `batch_location`: a batch is such a path, or a URL of a storage scheme fsspec reads, with
  no credentials and no query (the value is committed).
- `web_url`: a server the project asks or posts to (Prometheus, a webhook) is an http(s) URL
  with a host.
- `location` / `same_place` / `check_outputs`: a command that writes compares places, not
  spellings (`./`, `..`, symlinks, hard links, a URL's two spellings), and refuses to write
  over any of its inputs or to give two outputs one place.
"""

from __future__ import annotations

import os
import re
import unicodedata
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any

from reprokit.core.errors import StageError
from reprokit.core.redaction import is_redacted, redact

# URL schemes a batch may name: storage fsspec reads (the extras the project installs) and the web.
BATCH_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "http", "https")


def has_control_character(value: str) -> bool:
    """Whether `value` holds a newline, a tab, NUL or another control or format character."""
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value)


def repository_path(value: str, what: str, root: str | Path | None = None) -> str:
    """`value`, a relative path inside the repository at `root` (default: the current folder),
    normalized (`a/./b` is `a/b`); else one `StageError` naming `what` and the value."""
    shown = repr(value)
    if not isinstance(value, str) or not value.strip():
        raise StageError(f"{what}: {shown} is not a path")
    if has_control_character(value):
        raise StageError(f"{what}: {shown} holds a control character (a newline, a tab...): not a plain path")
    if "\\" in value or "://" in value:
        raise StageError(f"{what}: {shown} is not a plain path (a backslash or a URL)")
    if os.path.isabs(value) or value.startswith("~"):
        raise StageError(f"{what}: {shown} is not relative to the repository")
    parts = Path(value).parts
    if ".." in parts:
        raise StageError(f"{what}: {shown} climbs out with '..': name a path inside the repository")
    base = Path(root or os.getcwd()).resolve()
    resolved = (base / value).resolve()
    if resolved != base and base not in resolved.parents:
        raise StageError(f"{what}: {shown} leads outside the repository (through a symbolic link)")
    return Path(*parts).as_posix()


def batch_location(value: str, what: str, root: str | Path | None = None) -> str:
    """A batch's location as a committed file may hold it: a `repository_path`, or a URL of a
    scheme in `BATCH_SCHEMES` without credentials, query or fragment."""
    if isinstance(value, str) and "://" in value:
        scheme = value.split("://", 1)[0].lower()
        if scheme not in BATCH_SCHEMES:
            raise StageError(f"{what}: {redact(value)!r}: a URL must be one of {', '.join(BATCH_SCHEMES)}")
        if has_control_character(value) or any(ch.isspace() for ch in value):
            raise StageError(f"{what}: {redact(value)!r} holds a blank or control character: not a plain URL")
        if not is_redacted(value):
            raise StageError(
                f"{what}: {redact(value)}: a URL with credentials or a query cannot go into a committed file"
            )
        return value
    return repository_path(value, what, root)


def web_url(value: str, what: str) -> str:
    """`value`, an http:// or https:// URL with a host (and a numeric port, if any), to ask or
    post to; else one `StageError` naming `what`, never the value (a webhook's path can be its
    secret: a caller that may show it passes it redacted in `what`)."""
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except (ValueError, TypeError, AttributeError):
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise StageError(f"{what}: expected http(s)://HOST[:PORT][/PATH]")
    return value


def cache_file(root: Path, md5: Any) -> Path:
    """The DVC cache's file for the md5 a `dvc.lock` records: only 32 hex digits are an md5
    (the lock file comes from a revision someone else wrote: `../etc/passwd` is no md5)."""
    if not isinstance(md5, str) or not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise StageError(f"{str(md5)[:80]!r} is not an md5 (32 hex digits)")
    return Path(root) / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


STORAGE_CREDENTIALS = (
    "give them through the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3) or the storage's "
    "own configuration"
)


def check_no_credentials(locations: dict[str, str], how: str = STORAGE_CREDENTIALS) -> None:
    """Refuse a URL that carries user information (`s3://key:secret@bucket/x`): storage
    libraries do not read credentials there, and the command line is visible to every user
    of the machine. Credentials come from the environment or the storage's own configuration
    (`how` says where, for another kind of location)."""
    import urllib.parse

    for what, where in locations.items():
        if where and "://" in str(where):
            try:
                netloc = urllib.parse.urlsplit(str(where)).netloc
            except ValueError:
                netloc = ""
            if "@" in netloc:
                raise StageError(f"{what} {redact(str(where))}: credentials in a URL are not used; {how}")


def location(path: str) -> str:
    """`path` as one canonical string: a local path absolute with links resolved, a URL as
    its protocol and path (so two spellings of one place compare equal)."""
    import fsspec

    try:
        fs, target = fsspec.core.url_to_fs(str(path))
    except (ValueError, ImportError):  # a scheme no filesystem serves (models:/name@alias): itself
        return str(path)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return os.path.realpath(target)
    return f"{protocol}://{target.rstrip('/')}"


def same_place(first: str, second: str) -> bool:
    """Whether two locations name one file or folder: the same canonical `location`, or
    (local files that exist) the same inode, as two hard links are."""
    a, b = location(first), location(second)
    if a == b:
        return True
    if "://" in a or "://" in b:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def inside(place: str, folder: str) -> bool:
    """Whether `place` is `folder` or lies under it (canonical locations)."""
    place, folder = location(place), location(folder)
    return place == folder or place.startswith(folder.rstrip("/") + "/")


def check_outputs(inputs: dict[str, str], outputs: dict[str, str], folders: tuple[str, ...] = ()) -> None:
    """Refuse, with one line naming both, an output that is one of the `inputs` or another
    output, an output inside an input folder (a package directory), or an output folder (its
    name in `folders`: it is emptied first) that holds an input or another output. Each dict
    maps what a location is to the location."""
    named = [(what, where, True) for what, where in inputs.items() if where]
    named += [(what, where, False) for what, where in outputs.items() if where]
    for first, place, first_is_input in named:
        for second, other, second_is_input in named:
            if first == second or first_is_input:
                continue
            kind = "input" if second_is_input else "output"
            if same_place(place, other):  # (two outputs: named in either order)
                raise StageError(
                    f"{called('output', first)} ({redact(place)}) and {called(kind, second)} ({redact(other)}) "
                    "are one file: a command never writes over its input or one output over another"
                )
            if second_is_input and os.path.isdir(location(other)) and inside(place, other):
                raise StageError(
                    f"{called('output', first)} ({redact(place)}) lies inside {called('input', second)} "
                    f"({redact(other)}), a folder: a command never writes into its input"
                )
            if first in folders and inside(other, place):
                raise StageError(
                    f"{called(kind, second)} ({redact(other)}) lies inside {called('output', first)} "
                    f"({redact(place)}), a folder the command empties first: give it a folder of its own"
                )


def check_suffix(outputs: dict[str, str], suffixes: tuple[str, ...], written: str) -> None:
    """Refuse an output whose name does not say what is written there (`scores.parquet`, not
    `dataset.yaml`: a mistyped argument would replace a tracked file with bytes of another
    kind). Each dict maps what a location is to the location; `written` names the format."""
    for what, where in outputs.items():
        if where and not PurePosixPath(str(where).split("?", 1)[0]).name.lower().endswith(suffixes):
            raise StageError(
                f"{called('output', what)} ({redact(str(where))}) is written as {written}: "
                f"give it a name ending {' or '.join(suffixes)}"
            )


def called(kind: str, name: str) -> str:
    """How an error names a location: its kind and name (`output rejects`), once when they are
    the same word (a command's `output`, not `output output`)."""
    return name if name == kind else f"{kind} {name}"


def check_arguments(args, outputs: tuple[str, ...], folders: tuple[str, ...] = ()) -> None:
    """`check_outputs` on a command's parsed arguments: `outputs` names the attributes that are
    outputs (`folders` those that are output folders); every other text argument is an input."""
    values = {name: value for name, value in vars(args).items() if isinstance(value, str) and value not in ("", "-")}
    shown = {name: name.replace("_", "-") for name in values}
    check_outputs(
        {shown[n]: v for n, v in values.items() if n not in outputs},
        {shown[n]: v for n, v in values.items() if n in outputs},
        tuple(shown[n] for n in folders if n in shown),
    )
