"""Shared fixtures: the repository's own files and small tables made for tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests talk to servers on 127.0.0.1 only: never let botocore probe the cloud metadata address.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import loans_contract, make_loans  # noqa: E402

from reprokit.contract import Contract, load_contract, parse_contract  # noqa: E402


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def telco_contract() -> Contract:
    return load_contract(REPO / "dataset.yaml")


@pytest.fixture(scope="session")
def loans_contract_obj() -> Contract:
    return parse_contract(loans_contract())


@pytest.fixture()
def loans():
    return make_loans()


@pytest.fixture(scope="session")
def telco_splits(telco_contract):
    """The real default data, prepared in-process exactly as the `prepare` stage does."""
    from reprokit.config import load_section
    from reprokit.prepare import prepare
    from reprokit.sources import load_source

    params = REPO / "params.yaml"
    raw = load_source(telco_contract.source)
    train, test, summary = prepare(
        raw, telco_contract, load_section("split", params).test_size, load_section("base", params).seed, "telco"
    )
    return raw, train, test, summary
