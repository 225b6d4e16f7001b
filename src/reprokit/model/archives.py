"""Bounded reading of untrusted skops archives: size limits, member checks, and every node an archive names.

Everything here runs before an archive's content is rebuilt: `Limits` bound what is inflated and
parsed, and `archive_placements` lists each type with its loader and place in the schema, which
`reprokit.model.trust` compares with the allowlist.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from reprokit.core.errors import StageError

# Python and numpy values that carry data, never behaviour, each with the one way skops may
# rebuild it: none of these calls a constructor that could take attacker-chosen arguments
# (`numpy.ndarray` rebuilt from a list would allocate any shape, uninitialised).
NUMPY_SCALARS = (
    "bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "longdouble", "complex64", "complex128", "str_", "object_",
)  # fmt: skip


DATA_PAIRS = frozenset(
    {("builtins.dict", "DictNode"), ("builtins.list", "ListNode"), ("builtins.tuple", "TupleNode")}
    | {("builtins.slice", "SliceNode"), ("numpy.ndarray", "NdArrayNode"), ("numpy.dtype", "DTypeNode")}
    | {(f"builtins.{name}", "JsonNode") for name in ("str", "int", "float", "bool", "NoneType")}
    | {(f"builtins.{name}", "TypeNode") for name in ("str", "int", "float", "bool")}
    | {(f"numpy.{name}", loader) for name in NUMPY_SCALARS for loader in ("NdArrayNode", "TypeNode")}
)


DATA_TYPES = frozenset(name for name, _ in DATA_PAIRS)


class UntrustedFileError(StageError):
    """A model file names a type the pipeline never builds, or is not a model file it writes."""


MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Limits:
    """What an untrusted model file or package may hold before anything in it is parsed. The
    defaults leave a wide margin over what the pipeline writes (the default package: a 0.9 MiB
    model file of 659 members inflating to 0.8 MiB, a 0.3 MiB schema 28 levels deep with
    18,000 nodes; a 300-tree random forest stays far below them too). Each is a setting:
    `REPROKIT_TRUST_<NAME>` in the environment (e.g. `REPROKIT_TRUST_ARCHIVE_BYTES`)."""

    file_bytes: int = 512 * MiB  # a model file on disk, and a package directory's files together
    files: int = 64  # files in a package directory
    archive_bytes: int = 1024 * MiB  # a skops archive's members, inflated, together
    member_bytes: int = 512 * MiB  # one member, inflated
    members: int = 200_000
    schema_bytes: int = 64 * MiB  # the archive's schema.json, inflated
    schema_depth: int = 200
    schema_nodes: int = 5_000_000
    metadata_bytes: int = 1 * MiB  # the MLmodel file


@functools.lru_cache(maxsize=1)
def limits() -> Limits:
    """`Limits`, with any `REPROKIT_TRUST_<NAME>` of the environment in place of its default."""

    values = {}
    for field in dataclasses.fields(Limits):
        variable = f"REPROKIT_TRUST_{field.name.upper()}"
        raw = os.environ.get(variable, "").strip()
        if raw:
            if not raw.isdigit() or int(raw) < 1:
                raise StageError(f"environment variable {variable} must be a positive whole number, got {raw!r}")
            values[field.name] = int(raw)
    return Limits(**values)


def read_bounded(path: Path, limit: int, where: str, what: str) -> bytes:
    """A regular file's bytes, refused (before reading) when larger than `limit` or not a plain file."""
    if not path.is_symlink() and not path.exists():
        raise UntrustedFileError(f"{where}: {what} is missing")
    if path.is_symlink() or not path.is_file():
        raise UntrustedFileError(f"{where}: {what} is not a regular file")
    size = path.stat().st_size
    if size > limit:
        raise UntrustedFileError(f"{where}: {what} is {size:,} bytes, above the limit of {limit:,}")
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise UntrustedFileError(f"{where}: {what} is above the limit of {limit:,} bytes")
    return data


def check_members(archive: zipfile.ZipFile, where: str) -> None:
    """Refuse an archive by its directory alone, before inflating anything: too many members,
    one too large, all too large together. Python's zipfile never inflates a member beyond the
    size its directory declares (a lying entry fails its CRC check), so these bound memory."""
    bounds = limits()
    members = archive.infolist()
    if len(members) > bounds.members:
        raise UntrustedFileError(f"{where}: {len(members):,} members, above the limit of {bounds.members:,}")
    total = 0
    for member in members:
        limit = bounds.schema_bytes if member.filename == "schema.json" else bounds.member_bytes
        if member.file_size > limit:
            raise UntrustedFileError(
                f"{where}: member {member.filename[:80]!r} inflates to {member.file_size:,} bytes, "
                f"above the limit of {limit:,}"
            )
        total += member.file_size
    if total > bounds.archive_bytes:
        raise UntrustedFileError(
            f"{where}: members inflate to {total:,} bytes together, above the limit of {bounds.archive_bytes:,}"
        )


def archive_placements(data: bytes, where: str = "model file") -> set[tuple[str, str, str]]:
    """Every node of a skops archive as (where it sits, `module.class`, `__loader__`). The
    place is its path in the schema with list positions as `*`; the loader decides how skops
    rebuilds the type (set the state, call the constructor, ...). The archive's member sizes
    and the schema's depth and node count are bounded (`limits`) before and while it is read."""
    bounds = limits()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            check_members(archive, where)
            schema = json.loads(archive.read("schema.json"))
    except RecursionError:
        raise UntrustedFileError(f"{where}: its schema nests too deep to read") from None
    except (zipfile.BadZipFile, KeyError, ValueError, NotImplementedError, EOFError) as exc:
        raise UntrustedFileError(f"{where}: not a skops model file ({exc})") from None
    found: set[tuple[str, str, str]] = set()
    # Depth first, without recursion: (node, its path, list positions kept exactly, depth).
    todo: list[tuple[Any, str, bool, int]] = [(schema, "", False, 1)]
    nodes = 0
    while todo:
        node, path, exact, depth = todo.pop()
        nodes += 1
        if depth > bounds.schema_depth or nodes > bounds.schema_nodes:
            what = (
                f"nests deeper than {bounds.schema_depth} levels"
                if depth > bounds.schema_depth
                else (f"holds more than {bounds.schema_nodes:,} nodes")
            )
            raise UntrustedFileError(f"{where}: its schema {what}: not a model file this pipeline writes")
        if isinstance(node, dict):
            if "__class__" in node or "__module__" in node or "__loader__" in node:
                name = f"{node.get('__module__')}.{node.get('__class__')}"
                found.add((path, name, str(node.get("__loader__"))))
            tuple_node = node.get("__loader__") == "TupleNode"  # a tuple's slots mean different things
            for key, value in node.items():
                todo.append((value, f"{path}/{key}", tuple_node and key == "content", depth + 1))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                todo.append((value, f"{path}/{index if exact else '*'}", False, depth + 1))
    return found


def archive_nodes(data: bytes, where: str = "model file") -> set[tuple[str, str]]:
    """Every (type, loader) pair a skops archive names."""
    return {(name, loader) for _, name, loader in archive_placements(data, where)}


def archive_types(data: bytes, where: str = "model file") -> set[str]:
    """Every type a skops archive names."""
    return {name for name, _ in archive_nodes(data, where)}


def is_data(name: str, loader: str) -> bool:
    return (name, loader) in DATA_PAIRS
