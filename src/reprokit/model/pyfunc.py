"""`pyfunc` under the input policy: what `reprokit.model.trust.load_package` returns.

MLflow's own schema check lets through what the service and batch scoring refuse (a null where
the contract requires a value, ±inf, a column the contract does not know, which MLflow drops
with a warning) and refuses what they take (12.0 for a whole number). So `predict` first checks
the records by the contract the package carries, with the checker every reader uses
(`reprokit.model.scoring`): a record that breaks it is refused, naming it, and the checked inputs,
in the signature's dtypes, are what MLflow's model scores. The same record gets the same
verdict and the same probability from the service, batch scoring, the monitor and `pyfunc`.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from reprokit.core.contract import Contract
from reprokit.model.scoring import InputError, check_records, column_error, column_problems, conform

log = logging.getLogger("reprokit.pyfunc")

LISTED = 20  # problems named in one error


class CheckedPyFunc:
    """An `mlflow.pyfunc.PyFuncModel` whose `predict` checks its input by the package's
    contract first; every other attribute is the MLflow model's (`metadata`, `unwrap_python_model`...)."""

    def __init__(self, model, contract: Contract) -> None:
        self._model = model
        self.contract = contract

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict(self, data: Any, params: dict[str, Any] | None = None):
        """The model's `predict` on `data` (a DataFrame, or what `pandas.DataFrame` takes),
        after the input policy: `InputError` naming every problem (the first 20 and the total)."""
        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        problems = column_problems([str(name) for name in frame.columns], self.contract)
        if problems:
            raise InputError(column_error(problems))
        checked = check_records({str(c): frame[c] for c in frame.columns}, len(frame), self.contract)
        listed, total = checked.problems(LISTED)
        if total:
            shown = "; ".join(f"record {i}, {field}: {problem}" for i, field, problem in listed)
            raise InputError(f"the input does not match the contract: {shown} ({total} problem(s) in all)")
        warned = int(checked.warnings.astype(bool).sum()) if len(frame) else 0
        if warned:
            first = next(w for w in checked.warnings if w)
            log.warning("%d record(s) lie outside the contract, scored all the same (first: %s)", warned, first[0])
        return self._model.predict(conform(checked.inputs, self._model), params=params)
