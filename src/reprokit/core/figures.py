"""The one home of how the project draws PNG images: a fixed style, whatever the machine.

matplotlib reads the user's configuration on import (`$MATPLOTLIBRC`, a `matplotlibrc` in
the current directory, `$MPLCONFIGDIR/matplotlibrc`, `~/.config/matplotlib/matplotlibrc`)
and a setting there would change images that are DVC outputs (evaluate's and the
monitor's) and the pull-request report's. Inside `drawing()`, every setting is
matplotlib's own default (from the file it ships, not the user's) plus `STYLE`, and the
backend is Agg; the user's settings are back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The project's settings on top of matplotlib's defaults. rcdefaults() keeps a few keys
# from the user's file (the backend, the time zone, the date epoch): fixed here instead.
STYLE: dict[str, Any] = {
    "timezone": "UTC",
    "date.epoch": "1970-01-01T00:00:00",
}
DPI = 100


@contextlib.contextmanager
def drawing() -> Iterator[Any]:
    """`matplotlib.pyplot`, with the project's fixed style for the duration of the block."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(STYLE)
        yield plt


def save_png(fig: Any, path: Path) -> None:
    """Write `fig` as a byte-stable PNG (no software or date stamp) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
