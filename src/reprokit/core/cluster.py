"""A Dask cluster for work that outgrows one machine: the client, and the `--engine local|dask
--scheduler ADDRESS` options the batch scorer and the monitor share."""

from __future__ import annotations

import argparse

from reprokit.core.errors import StageError


def dask_client(address: str):
    """A client of the Dask scheduler at `address`, or one clear error when none answers."""
    from distributed import Client

    try:
        return Client(address, timeout="30s")
    except OSError as exc:
        raise StageError(f"Dask scheduler {address}: cannot connect ({exc})") from None


def add_engine_options(parser: argparse.ArgumentParser, dask_help: str) -> None:
    """`--engine local|dask` and `--scheduler ADDRESS` (the batch scorer's and the monitor's)."""
    parser.add_argument("--engine", choices=("local", "dask"), default="local", help=f"dask: {dask_help}")
    parser.add_argument("--scheduler", help="the Dask scheduler's address, e.g. tcp://10.0.0.5:8786 (--engine dask)")


def check_engine_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.engine == "dask" and not args.scheduler:
        parser.error("--engine dask needs --scheduler ADDRESS (a running Dask scheduler)")
