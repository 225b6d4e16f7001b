"""The serving suites' shared fixtures: the default package as `pyfunc` and as a running service."""

from __future__ import annotations

import httpx
import pytest
from servers import scoring_service

from reprokit.model.trust import load_package


@pytest.fixture(scope="module")
def pyfunc(telco_package):
    """The package as `load_package` gives it (MLflow's pyfunc under the input policy)."""
    return load_package(telco_package)


@pytest.fixture(scope="module")
def service(tmp_path_factory, telco_package):
    """A real `reprokit serve` process on the package, one per test module; an HTTP client to it."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with scoring_service([str(telco_package), "--max-body-bytes", "200000"], log) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client
