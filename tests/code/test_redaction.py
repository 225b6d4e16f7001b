"""The one home for redaction (`reprokit.core.redaction`): what of a location may be shown."""

from __future__ import annotations

import logging

import pytest

from reprokit.core.redaction import RedactingFormatter, redact, redact_text

SECRETS = ("hunter2", "AKIAEXAMPLE", "wJalrXUtnFEMI", "sig0123", "tok3n")

CASES = {
    "data/batches/x.parquet": "data/batches/x.parquet",
    "/abs/x.csv": "/abs/x.csv",
    "sqlite:////tmp/mlflow.db": "sqlite:////tmp/mlflow.db",
    "sqlite:///mlflow.db": "sqlite:///mlflow.db",
    "models:/churn@champion": "models:/churn@champion",
    "http://127.0.0.1:5000": "http://127.0.0.1:5000",
    "postgresql://mlflow:hunter2@127.0.0.1:5432/mlflow": "postgresql://***@127.0.0.1:5432/mlflow",
    "postgresql+psycopg2://mlflow:hunter2@db/mlflow?sslmode=require": "postgresql+psycopg2://***@db/mlflow",
    "s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/x.parquet": "s3://***@bucket/x.parquet",
    "https://bucket.s3.amazonaws.com/x.csv?X-Amz-Signature=sig0123&X-Amz-Credential=AKIAEXAMPLE": (
        "https://bucket.s3.amazonaws.com/x.csv"
    ),
    "https://hooks.example.com/services/T0/B0#tok3n": "https://hooks.example.com/services/T0/B0",
    "https://tok3n@hooks.example.com/x": "https://***@hooks.example.com/x",
    "https://user:secret@host:8443/b/x.csv?sig=1#f": "https://***@host:8443/b/x.csv",
    "http://[::1]:8080/x?token=tok3n": "http://[::1]:8080/x",
    "http://u:hunter2@host:notaport/x": "http://***",
}


@pytest.mark.parametrize("location", sorted(CASES))
def test_a_location_is_shown_without_credentials_query_or_fragment(location):
    assert redact(location) == CASES[location]


def test_every_url_inside_a_text_is_redacted():
    text = (
        "store postgresql://mlflow:hunter2@db/m failed ('s3://AKIAEXAMPLE:wJalrXUtnFEMI@b/x'); see https://h/x?t=tok3n."
    )
    shown = redact_text(text)
    assert shown == "store postgresql://***@db/m failed ('s3://***@b/x'); see https://h/x."
    assert not any(secret in shown for secret in SECRETS)


def test_every_log_line_and_traceback_is_redacted():
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise RuntimeError("cannot reach postgresql://mlflow:hunter2@db/mlflow")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "at %s", ("https://h/x?sig=sig0123",), sys.exc_info()
        )
    shown = formatter.format(record)
    assert shown.startswith("ERROR at https://h/x\nTraceback") and "postgresql://***@db/mlflow" in shown
    assert not any(secret in shown for secret in SECRETS)


def test_the_secret_pieces_of_arguments_and_environment_are_masked_wherever_they_appear():
    """A library may quote a piece of a URL without the URL (botocore: `Invalid bucket name
    "key:secret@bucket"`): the pieces themselves are masked, a user name is not."""
    from reprokit.core.redaction import secrets_of

    pieces = secrets_of(
        ["s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/x", "https://h/x?X-Amz-Signature=sig0123#tok3n", "plain.csv"],
        {"MLFLOW_TRACKING_URI": "postgresql://mlflow:hunter2@db/mlflow", "API_TOKEN": "abcd1234", "HOME": "/root"},
    )
    assert {"wJalrXUtnFEMI", "AKIAEXAMPLE:wJalrXUtnFEMI", "sig0123", "tok3n", "hunter2", "abcd1234"} <= set(pieces)
    assert "mlflow" not in pieces and "AKIAEXAMPLE" not in pieces and "/root" not in pieces
    assert "token" in secrets_of(["https://token@hooks.example.com/x"], {})  # a lone user name is a token


def test_punctuation_after_a_url_is_kept_and_the_url_shown_whole():
    assert redact_text("cannot connect to http://127.0.0.1:41234: is it running?") == (
        "cannot connect to http://127.0.0.1:41234: is it running?"
    )
    assert redact_text("see https://u:hunter2@h:8443/x?sig=1.") == "see https://***@h:8443/x."


def test_an_error_is_described_redacted_before_it_is_cut():
    """Cut first, a URL straddling the cut kept a piece of its token (`https://ghp_SE`)."""
    from reprokit.core.redaction import describe_error

    message = "x" * 290 + " https://ghp_SECRETTOKEN@hooks.example.com/a?sig=abc and more\nsecond line"
    shown = describe_error(RuntimeError(message))
    assert "ghp_" not in shown and "sig=" not in shown and "second" not in shown and len(shown) == 300
    assert describe_error(KeyError()) == "KeyError"
