from __future__ import annotations

import pytest

from reprokit.config import (
    MODEL_KINDS,
    BaseParams,
    ConfigError,
    TrainParams,
    flatten,
    load_section,
    section_from_mapping,
)


def test_every_params_section_loads_from_the_repository(repo):
    params = repo / "params.yaml"
    assert load_section("base", params).seed == 42
    assert 0 < load_section("split", params).test_size < 1
    train = load_section("train", params)
    assert train.model in MODEL_KINDS
    assert train.hyperparams == getattr(train, train.model)
    assert load_section("tracking", params).timeout_seconds <= 15


@pytest.mark.parametrize(
    "data, message",
    [
        ({"seed": 1, "sede": 2}, "unknown key(s) sede"),
        ({}, "missing key(s) seed"),
        ({"seed": "42"}, "expected int"),
        ({"seed": True}, "expected an integer"),
        ([1], "expected a mapping"),
    ],
)
def test_bad_sections_fail_naming_the_key(data, message):
    with pytest.raises(ConfigError, match="params.yaml: base") as info:
        section_from_mapping(BaseParams, data, "params.yaml: base")
    assert message in str(info.value)


def test_unknown_model_kind_is_rejected():
    with pytest.raises(ConfigError, match="train.model is 'xgboost'"):
        TrainParams("xgboost", 1, {}, {}, {})


def test_integer_accepted_where_float_expected(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("split:\n  test_size: 1\n")
    assert isinstance(load_section("split", path).test_size, float)


def test_missing_section_and_bad_yaml_name_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: 1\n")
    with pytest.raises(ConfigError, match=r"params.yaml: missing section 'split'"):
        load_section("split", path)
    path.write_text("base: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_section("base", path)


def test_flatten_uses_dotted_keys():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
