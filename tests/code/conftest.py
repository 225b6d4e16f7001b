"""Fixtures shared by the code tests of the registry's control plane (canary and rollout)."""

from __future__ import annotations

import pytest
import yaml


@pytest.fixture()
def store(tmp_path, repo, monkeypatch):
    """A real MLflow SQLite registry with versions 1-3 of `churn` (tags and aliases only: the
    canary's control plane does not open the packages); 1 is the champion, 1 and 2 passed their gate."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_registered_model("churn")
    for version in ("1", "2", "3"):
        client.create_model_version("churn", source=str(tmp_path / f"package-{version}"))
    for version in ("1", "2"):
        client.set_model_version_tag("churn", version, "gate_passed", "true")
    client.set_model_version_tag("churn", "3", "gate_passed", "false")
    client.set_registered_model_alias("churn", "champion", "1")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tracking"]["enabled"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dataset.yaml").write_text((repo / "dataset.yaml").read_text().replace("telco_customer_churn", "churn"))
    return client
