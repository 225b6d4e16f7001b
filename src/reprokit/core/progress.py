"""Progress of a long command on the terminal: work done of the total, elapsed time and the
time left, drawn by tqdm on stderr.

Shown only when stderr is a terminal, so nothing reaches a pipe, a log, CI or a DVC stage's
output. `REPROKIT_PROGRESS=0` hides it on a terminal too, `REPROKIT_PROGRESS=1` shows it
anyway. tqdm is imported only when the display is shown (a stage process never pays for it).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterable, Iterator, TypeVar

from reprokit.core.config import ConfigError

ENV = "REPROKIT_PROGRESS"
HELP = f"progress is shown on stderr when it is a terminal ({ENV}=0 hides it, {ENV}=1 shows it anyway)"

T = TypeVar("T")


def shown() -> bool:
    """Whether progress is drawn: `REPROKIT_PROGRESS` when set, else whether stderr is a terminal."""
    setting = os.environ.get(ENV, "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    if setting:
        raise ConfigError(f"{ENV}={setting!r}: expected 0 (never show progress) or 1 (always), or unset")
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """Work done so far, drawn on the tqdm bar it is given (none: `SILENT`, which draws nothing)."""

    def __init__(self, bar=None) -> None:
        self._bar = bar

    def advance(self, amount: int = 1) -> None:
        """`amount` more units are done."""
        if self._bar is not None:
            self._bar.update(amount)

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """`items`, one unit done as each is taken."""
        for item in items:
            yield item
            self.advance()


SILENT = Progress()


@contextlib.contextmanager
def progress(what: str, total: int | None = None, unit: str = "it") -> Iterator[Progress]:
    """A display of `what` (`total` units, or an open count when None) for the `with` block;
    `SILENT` when progress is not shown. The bar stays on the terminal when the block ends."""
    if not shown():
        yield SILENT
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=what, unit=unit, file=sys.stderr, dynamic_ncols=True)
    try:
        yield Progress(bar)
    finally:
        bar.close()


MLFLOW_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextlib.contextmanager
def mlflow_bars_as_ours() -> Iterator[None]:
    """For the `with` block: MLflow draws its own bars while it downloads artifacts (a registry
    version, a run's file) on stderr whatever it is; let it draw them only where ours are shown,
    unless the user set `MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`. MLflow reads it at each download
    (processes started meanwhile inherit it); afterwards the environment is as it was."""
    if MLFLOW_BARS in os.environ:
        yield
        return
    try:
        show = shown()
    except ConfigError:  # the command's own progress says what is wrong with the setting
        show = False
    os.environ[MLFLOW_BARS] = "true" if show else "false"
    try:
        yield
    finally:
        os.environ.pop(MLFLOW_BARS, None)
