"""Batch scoring: `reprokit score IN OUT [--model MODEL] [--engine local|dask]`.

IN is a CSV (optionally gzipped) or Parquet file, a local path or any URL fsspec reads
(s3://, https://). It is read in chunks of `--chunk-rows`, so memory stays flat whatever
its size; every chunk is checked against the package's contract (`reprokit.model.scoring`:
the same policy as the service and the package's signature) and scored under the thread
budget. OUT (Parquet) gets, per scorable row, the row key (the contract's id column when
the file has it, else `row`, the 0-based row number in IN), `probability`, `label` (at the
package's threshold), `model_version` and `warnings` (null when none). Rows that cannot be
scored are not dropped: they go to the rejects file (default: OUT with `.rejects.parquet`)
with the row key, the `reason` and their feature values as text. Both files are written
beside their final names and renamed at the end, and are byte-identical from run to run.

A partitioned dataset (IN a directory of Parquet files, local or fsspec URL) is scored
partition by partition into the same relative paths under the directory OUT (rejects under
OUT.rejects), each exactly as a single file is: in this process, or with `--engine dask
--scheduler ADDRESS` on a Dask cluster (`dask.bag` `map_partitions`, the model loaded once
per worker), with byte-identical files either way. Each file is atomic; after a failure the
partitions already done stay. On a terminal, stderr shows the rows scored so far (of a
partitioned dataset: the partitions done of the total), the time spent and the rate.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import threading
from typing import Any, Iterator

import numpy as np
import pandas as pd

from reprokit.core.batchfiles import (
    absolute,
    add_reading_options,
    chunks,
    column_names,
    partition_files,
    partition_names,
    reading,
)
from reprokit.core.cluster import add_engine_options, check_engine_options, dask_client
from reprokit.core.errors import StageError
from reprokit.core.progress import HELP as PROGRESS_HELP
from reprokit.core.progress import SILENT, Progress, progress
from reprokit.core.running import add_debug_option, run_stage
from reprokit.model.loading import load_model, worker_model

log = logging.getLogger("reprokit.score")

ROW_KEY = "row"


def output_schema(key, label_type):
    import pyarrow as pa

    fields = [key, ("probability", pa.float64()), ("label", label_type), ("model_version", pa.string())]
    return pa.schema(fields + [("warnings", pa.string())])


def rejects_schema(key, features: list[str]):
    import pyarrow as pa

    return pa.schema([key, ("reason", pa.string())] + [(name, pa.string()) for name in features])


def key_array(keys: pd.Series):
    """Row numbers as int64; an id column's values as text (whatever type each chunk gives)."""
    import pyarrow as pa

    if keys.name == ROW_KEY:
        return pa.array(keys.to_numpy(), type=pa.int64())
    return pa.array([None if pd.isna(v) else str(v) for v in keys], type=pa.string())


def output_table(schema, keys: pd.Series, proba: np.ndarray, predicted: list[Any], version: str, warnings):
    import pyarrow as pa

    notes = [None] * len(warnings)
    for i in np.flatnonzero(np.not_equal(warnings, None)):
        notes[i] = "; ".join(warnings[i])
    columns = [
        key_array(keys),
        pa.array(proba, type=pa.float64()),
        pa.array(predicted, type=schema.field("label").type),
        pa.array([version] * len(proba), type=pa.string()),
        pa.array(notes, type=pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def rejects_table(schema, keys: pd.Series, frame: pd.DataFrame, features: list[str], reasons: list[str]):
    import pyarrow as pa

    columns = [key_array(keys), pa.array(reasons, type=pa.string())]
    for name in features:
        values = frame[name] if name in frame else pd.Series([None] * len(frame), dtype=object)
        columns.append(pa.array([None if pd.isna(v) else str(v) for v in values], type=pa.string()))
    return pa.Table.from_arrays(columns, schema=schema)


class AtomicParquet:
    """A Parquet file of a fixed schema, written beside its final path (a local path or an
    fsspec URL) and moved into place on `commit`; `abort` removes it, so a failed run leaves
    no partial output anywhere."""

    def __init__(self, path: str, schema) -> None:
        import fsspec

        self.path, self.schema, self.writer, self.handle = path, schema, None, None
        self.fs, self.target = fsspec.core.url_to_fs(path)
        self.temp = f"{self.target}.tmp-{os.getpid()}"

    def write(self, table) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            parent = os.path.dirname(self.target)
            if parent:
                self.fs.makedirs(parent, exist_ok=True)
            self.handle = self.fs.open(self.temp, "wb")
            self.writer = pq.ParquetWriter(self.handle, self.schema, compression="zstd")
        self.writer.write_table(table)

    def commit(self) -> None:
        if self.writer is None:
            self.write(self.schema.empty_table())
        self.writer.close()
        self.handle.close()
        self.fs.mv(self.temp, self.target)

    def abort(self) -> None:
        for close in (self.writer, self.handle):
            if close is not None:
                with contextlib.suppress(Exception):
                    close.close()
        if self.handle is not None:
            with contextlib.suppress(Exception):
                self.fs.rm(self.temp)


def input_columns(source: str, read_as, contract) -> list[str]:
    """The column names of `source`, refused unless the input policy's column rule holds: blank,
    duplicate or nested columns, a wrong delimiter, a missing or unknown column."""
    from reprokit.model.scoring import column_error, column_problems

    names = column_names(source, read_as)
    problems = column_problems(names, contract)
    if problems:
        raise StageError(f"{source}: {column_error(problems)}")
    return names


def score_file(
    model, source: str, out: str, rejects: str, chunk_rows: int, read_as=None, done: Progress = SILENT
) -> tuple[int, int, int]:
    """Score `source` into `out` and `rejects`; returns (rows read, rows scored, rows warned).
    A CSV is read with `read_as` (a contract `Source`; default: the package contract's own);
    `done` advances by each chunk's rows."""
    import pyarrow as pa

    from reprokit.model.scoring import InputError, check_records, is_text, labels

    contract = model.contract
    features = contract.feature_names
    id_column = contract.source.id_column
    numeric = {f.name for f in contract.features if not is_text(f)}
    wanted = features + ([id_column] if id_column and id_column not in features else [])
    label_type = pa.string() if isinstance(contract.target.positive, str) else pa.int64()
    read = scored = warned = 0
    files: list[AtomicParquet] = []

    read_as = read_as or contract.source
    names = input_columns(source, read_as, contract)  # before any output
    keyed = bool(id_column) and id_column in names

    def checked_chunks() -> Iterator[tuple[pd.DataFrame, pd.Series, Any]]:
        """Each chunk with its row keys and contract check (run ahead in another thread)."""
        offset = 0
        for frame in chunks(source, wanted, numeric, chunk_rows, read_as):
            if keyed:
                keys = frame[id_column].rename(id_column).reset_index(drop=True)
            else:
                keys = pd.Series(np.arange(offset, offset + len(frame)), name=ROW_KEY)
            try:
                checked = check_records({c: frame[c] for c in frame.columns}, len(frame), contract)
            except InputError as exc:
                raise StageError(f"{source}: {exc}") from None
            offset += len(frame)
            yield frame, keys, checked

    def open_files(key_name: str) -> tuple[AtomicParquet, AtomicParquet]:
        key = (key_name, pa.int64() if key_name == ROW_KEY else pa.string())
        files.extend(
            [AtomicParquet(out, output_schema(key, label_type)), AtomicParquet(rejects, rejects_schema(key, features))]
        )
        return files[0], files[1]

    try:
        for frame, keys, checked in ahead(checked_chunks()):
            scored_file, rejected_file = files or open_files(keys.name)
            ok = checked.ok
            proba = model.probabilities(checked.inputs[ok].reset_index(drop=True))
            warnings = checked.warnings[ok]
            predicted = labels(proba, model.threshold, contract)
            scored_file.write(
                output_table(
                    scored_file.schema, keys[ok].reset_index(drop=True), proba, predicted, model.version, warnings
                )
            )
            if not ok.all():
                bad = ~ok
                rejected_file.write(
                    rejects_table(
                        rejected_file.schema,
                        keys[bad].reset_index(drop=True),
                        frame[bad].reset_index(drop=True),
                        features,
                        list(checked.rejected[bad]),
                    )
                )
            read += len(frame)
            done.advance(len(frame))
            scored += int(ok.sum())
            warned += int(np.count_nonzero(np.not_equal(warnings, None)))
        scored_file, rejected_file = files or open_files(id_column if keyed else ROW_KEY)
        scored_file.commit()
        rejected_file.commit()
    except BaseException:
        for file in files:
            file.abort()
        raise
    return read, scored, warned


def check_apart(input_dir: str, out: str, rejects: str) -> None:
    """Refuse a partitioned run whose input, output and rejects directories are one, or one
    inside another (outputs would overwrite the input, or be read as input next time)."""
    from reprokit.core.paths import location

    places = {"input": location(input_dir), "output": location(out), "rejects": location(rejects)}
    for a, first in places.items():
        for b, second in places.items():
            if a < b and (first == second or first.startswith(second + "/") or second.startswith(first + "/")):
                raise StageError(
                    f"the {a} and {b} directories ({first}, {second}) overlap: give three separate directories"
                )


def partition_jobs(source: str, out: str, rejects: str) -> list[tuple[str, str, str]]:
    """(input, output, rejects) of every partition: the same relative path in each directory."""
    source, out, rejects = (base.rstrip("/") for base in (source, out, rejects))
    return [(f"{source}/{name}", f"{out}/{name}", f"{rejects}/{name}") for name in partition_names(source)]


def score_partitions(
    uri: str, jobs: list[tuple[str, str, str]], chunk_rows: int, n_threads: int, scheduler: str | None
) -> tuple[int, int, int, str]:
    """Score every partition, each into its own output and rejects file exactly as `score_file`
    scores one file: in this process (`scheduler` None) or on a Dask cluster, where
    `map_partitions` gives each task a partition and a worker loads the model once.
    Returns (rows read, scored, warned, model version)."""
    from reprokit.model.scoring_model import resolve

    target, version = resolve(uri)  # an alias is resolved once: every partition gets one version
    if not target.startswith("models:/"):
        target = absolute(target)
    with progress("score: partitions", total=len(jobs), unit="partitions") as done:
        if scheduler is None:
            totals = _score_jobs(done.track(jobs), target, chunk_rows, n_threads)
        else:
            import dask.bag
            from distributed import as_completed

            from reprokit.serving.score import _score_jobs as work  # by reference, also when this module is
            # __main__: the workers then import reprokit.serving.score, whose model cache lives as long as they do

            with dask_client(scheduler) as client:
                bag = dask.bag.from_sequence(jobs, npartitions=len(jobs))
                parts = client.compute(bag.map_partitions(work, target, chunk_rows, n_threads).to_delayed())
                for _ in done.track(as_completed(parts)):  # one future a partition, as each finishes
                    pass
                totals = [total for part in client.gather(parts) for total in part]
    read, scored, warned = (sum(t[i] for t in totals) for i in range(3))
    versions = sorted({t[3] for t in totals})
    if len(versions) > 1:
        raise StageError(f"the partitions were scored by different model versions {versions}: the model changed")
    return read, scored, warned, versions[0] if versions else (version or "")


def _score_jobs(jobs, uri: str, chunk_rows: int, n_threads: int) -> list[tuple[int, int, int, str]]:
    """Score `jobs` with the model at `uri`, loaded once per process (`worker_model`)."""
    from reprokit.core.threads import thread_budget

    with thread_budget(n_threads):
        model = worker_model(uri)
        return [(*score_file(model, source, out, rejects, chunk_rows), model.version) for source, out, rejects in jobs]


def ahead(items: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """`items`, produced in a background thread up to `depth` ahead of the consumer: the next
    chunk is read and checked while this one is scored (both release the GIL for most of it)."""
    import queue

    done = object()
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry) -> bool:
        """Hand `entry` over unless the consumer has stopped (then never block)."""
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            offer((done, exc))

    worker = threading.Thread(target=produce, name="read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()
        close = getattr(items, "close", None)
        if close is not None:
            close()  # its open files and readers are let go of here, not whenever it is collected


def default_rejects(out: str) -> str:
    base = out[: -len(".parquet")] if out.endswith(".parquet") else out
    return f"{base}.rejects.parquet"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="reprokit score",
        description=__doc__,
        epilog=PROGRESS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_debug_option(parser)
    parser.add_argument("input", help="CSV (.csv, .csv.gz) or Parquet file: a path or an fsspec URL")
    parser.add_argument("output", help="Parquet file of scores")
    parser.add_argument("--model", default="models/package", help="package directory or models:/<name>@<alias>")
    parser.add_argument("--rejects", default=None, help="Parquet file of rejected rows (default: OUT.rejects.parquet)")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="rows per chunk (memory stays flat)")
    add_reading_options(parser)
    parser.add_argument("--params", default="params.yaml", help="base.n_threads is the thread budget (if present)")
    parser.add_argument("--threads", type=int, default=None, help="thread budget (default: params' base.n_threads)")
    add_engine_options(
        parser, "IN and OUT are partitioned datasets (directories), scored on the cluster at --scheduler"
    )
    args = parser.parse_args(argv)
    if args.chunk_rows < 1:
        parser.error("--chunk-rows must be at least 1")
    check_engine_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> str:
        from reprokit.core.paths import check_no_credentials, check_outputs, check_suffix
        from reprokit.core.threads import thread_budget
        from reprokit.model.scoring_model import thread_budget_setting
        from reprokit.model.trust import package_contract

        n_threads = thread_budget_setting(args.threads, args.params)
        check_no_credentials({"input": args.input, "output": args.output, "rejects": args.rejects})
        jobs = None
        if args.engine == "dask" or partition_files(args.input) is not None:
            rejects = args.rejects or f"{args.output.rstrip('/')}.rejects"
            check_apart(args.input, args.output, rejects)
            jobs = partition_jobs(absolute(args.input), absolute(args.output), absolute(rejects))
        else:
            rejects = args.rejects or default_rejects(args.output)
        outputs = {"output": args.output, "rejects": rejects}
        check_outputs({"input": args.input, "model": args.model}, outputs, tuple(outputs) if jobs else ())
        if jobs is None:  # partitioned runs write folders of part files
            check_suffix(outputs, (".parquet", ".pq"), "Parquet")
        import time

        if jobs is not None:
            started = time.perf_counter()
            scheduler = args.scheduler if args.engine == "dask" else None
            read, scored, warned, version = score_partitions(args.model, jobs, args.chunk_rows, n_threads, scheduler)
            seconds = time.perf_counter() - started
            return (
                f"{args.input}: {len(jobs)} partitions, {read} rows, {scored} scored into {args.output} by version "
                f"{version} ({warned} with warnings), {read - scored} rejected into {rejects} ({args.engine}; "
                f"{seconds:.2f} s with loading the model)"
            )

        with thread_budget(n_threads):
            # The input's columns against the contract the package carries, before the model is
            # loaded (seconds): a wrong file is refused at once. score_file checks them again.
            if (contract := package_contract(args.model)) is not None:
                input_columns(args.input, reading(contract.source, args), contract)
            model = load_model(args.model)
            started = time.perf_counter()
            read_as = reading(model.contract.source, args)
            with progress("score", unit="rows") as done:
                read, scored, warned = score_file(
                    model, args.input, args.output, rejects, args.chunk_rows, read_as, done
                )
            seconds = time.perf_counter() - started
        return (
            f"{args.input}: {read} rows, {scored} scored into {args.output} by version {model.version} "
            f"({warned} with warnings), {read - scored} rejected into {rejects}; "
            f"{seconds:.2f} s after loading the model ({read / max(seconds, 1e-9):,.0f} rows/s)"
        )

    run_stage("score", body, debug=args.debug)


if __name__ == "__main__":
    main()
