"""Stage `monitor`: the monitor (`reprokit.monitoring.monitor`) on the batch `monitor.batch` in
params.yaml names, against the prepared splits and the package; its figures, distributions and
images are the stage's outputs. The command `reprokit monitor BATCH` is the same check on any
batch."""

from __future__ import annotations

from reprokit.monitoring.monitor import CONTRACT, PARAMS, main, parse_args

__all__ = ["CONTRACT", "PARAMS", "main", "parse_args"]

if __name__ == "__main__":
    main()
