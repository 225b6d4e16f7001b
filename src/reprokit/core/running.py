"""What every stage entry point shares: logging set-up, timing, and clean failure.

A stage that fails on bad input exits non-zero with one readable message naming
the file, column or key, instead of a traceback; DVC then stops the pipeline and
keeps the earlier outputs and the cache as they were.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from reprokit.core.config import ConfigError
from reprokit.core.errors import StageError
from reprokit.core.progress import mlflow_bars_as_ours

log = logging.getLogger("reprokit")


EXPECTED_ERRORS = (ConfigError, StageError, FileNotFoundError)


def add_debug_option(parser) -> None:
    """`--debug`: show the traceback of an expected error too (a bug report's evidence)."""
    parser.add_argument("--debug", action="store_true", help="on an error, show its traceback too")


def run_stage(name: str, body: Callable[[], str], debug: bool = False) -> None:
    """Run `body` as stage `name`; it returns a one-line summary to log. Bad input ends in one
    error line and exit status 1; with `debug`, the traceback follows the line."""
    from reprokit.core.redaction import configure_logging

    configure_logging()  # every line, traceback included, with URLs' credentials and queries dropped
    started = time.perf_counter()
    try:
        with mlflow_bars_as_ours():
            summary = body()
    except EXPECTED_ERRORS as exc:
        log.error("%s failed: %s", name, exc, exc_info=debug)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's status for an interrupt
        log.error("%s interrupted", name)
        raise SystemExit(130) from None
    except Exception:  # a bug: its traceback is the evidence, shown through the same redaction
        log.critical("%s failed on an unexpected error (a bug; the traceback follows)", name, exc_info=True)
        raise SystemExit(1) from None
    log.info("%s: %s (%.2f s)", name, summary, time.perf_counter() - started)
