"""The one batch-file reader (`reprokit.core.batchfiles`): chunks, and the fallback for numbers written as text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reprokit.core.batchfiles import CSV_BLOCK, chunks
from reprokit.core.errors import StageError


def table(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"amount": rng.normal(50, 10, rows).round(3), "kind": rng.choice(["a", "b"], rows)})


ROWS = 600_000  # about 6 MB: more than one of pyarrow's read blocks (CSV_BLOCK)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return table(ROWS).astype({"amount": object})


@pytest.mark.parametrize("bad_row", [0, 99_999, 450_000, ROWS - 1])
def test_a_value_that_is_not_a_number_is_kept_as_text_and_no_row_repeats(tmp_path, frame, bad_row, caplog):
    """The fast reading fails at the block holding `twelve` (after chunks of the blocks before
    it were handed on); the file is read again with numbers converted one by one, from the
    first chunk not yet handed on: every row arrives once, in order, cut where it always is."""
    frame = frame.copy()
    frame.loc[bad_row, "amount"] = "twelve"
    frame.to_csv(tmp_path / "in.csv", index=False)
    assert (tmp_path / "in.csv").stat().st_size > 1.2 * CSV_BLOCK
    with caplog.at_level("INFO"):
        read = list(chunks(str(tmp_path / "in.csv"), ["amount", "kind"], {"amount"}, 100_000))
    assert [len(chunk) for chunk in read] == [100_000] * 6
    whole = pd.concat(read, ignore_index=True)
    assert whole.loc[bad_row, "amount"] == "twelve"
    numbers = pd.to_numeric(frame["amount"].drop(index=bad_row)).to_numpy(dtype="float64")
    np.testing.assert_array_equal(whole["amount"].drop(index=bad_row).to_numpy(dtype="float64"), numbers)
    assert whole["kind"].tolist() == frame["kind"].tolist()
    assert "some numeric values are not numbers" in caplog.text


def test_numbers_are_read_as_float64_when_every_value_is_one(tmp_path):
    table(2500).to_csv(tmp_path / "in.csv", index=False)
    read = list(chunks(str(tmp_path / "in.csv"), ["amount", "kind"], {"amount"}, 1000))
    assert [len(chunk) for chunk in read] == [1000, 1000, 500]
    assert all(chunk["amount"].dtype == "float64" for chunk in read)


def test_a_file_that_cannot_be_read_is_one_error_without_credentials(tmp_path):
    (tmp_path / "in.csv").write_bytes(b"amount,kind\n1,a\n2,a,extra\n")
    with pytest.raises(StageError, match=r"in\.csv: cannot read it \(.*"):
        list(chunks(str(tmp_path / "in.csv"), ["amount", "kind"], {"amount"}, 1000))
