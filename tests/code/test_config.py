from __future__ import annotations

import pytest
import yaml

from reprokit.core.config import (
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
        ({"seed": 1, "n_threads": 1, "sede": 2}, "unknown key(s) sede"),
        ({"n_threads": 1}, "missing key(s) seed"),
        ({"seed": "42", "n_threads": 1}, "expected int"),
        ({"seed": True, "n_threads": 1}, "expected an integer"),
        ([1], "expected a mapping"),
    ],
)
def test_bad_sections_fail_naming_the_key(data, message):
    with pytest.raises(ConfigError, match="params.yaml: base") as info:
        section_from_mapping(BaseParams, data, "params.yaml: base")
    assert message in str(info.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"latency_samples": 0}, "gate.latency_samples must be at least 1"),
        ({"min_test_roc_auc": float("nan")}, "gate.min_test_roc_auc must be a finite number"),
        ({"max_p95_latency_ms": float("inf")}, "gate.max_p95_latency_ms must be a finite number"),
    ],
)
def test_bad_gate_params_are_one_error_before_any_scoring(repo, tmp_path, change, message):
    """Before: 0 latency samples failed with numpy's error after every package was scored."""
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["gate"].update(change)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=message):
        load_section("gate", tmp_path / "params.yaml")


def test_unknown_model_kind_is_rejected():
    with pytest.raises(ConfigError, match="train.model is 'xgboost'"):
        TrainParams("xgboost", {}, {}, {})


def test_integer_accepted_where_float_expected(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("split:\n  test_size: 1\n")
    assert isinstance(load_section("split", path).test_size, float)


def test_missing_section_and_bad_yaml_name_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: 1\n  n_threads: 1\n")
    with pytest.raises(ConfigError, match=r"params.yaml: missing section 'split'"):
        load_section("split", path)
    path.write_text("base: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as broken:
        load_section("base", path)
    assert str(broken.value) == (
        f"{path}: not valid YAML: line 2, column 1: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence from line 1, column 7)"
    )
    path.write_bytes(b"base:\n  seed: \xff\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: not UTF-8 text \(byte 14\)$"):
        load_section("base", path)
    with pytest.raises(ConfigError, match=r": a folder, not a file$"):
        load_section("base", tmp_path)


def test_flatten_uses_dotted_keys():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_a_stage_reads_only_the_params_it_declares(repo):
    from reprokit.core.config import StageParams, UndeclaredKeyError

    params = StageParams("train", ("base.seed", "train"), repo / "params.yaml")
    assert params.value("base.seed") == 42
    assert params.section("train").model in MODEL_KINDS
    assert params.values()["train.model"] in MODEL_KINDS and "base.n_threads" not in params.values()
    with pytest.raises(UndeclaredKeyError, match=r"stage 'train' reads .*params.yaml: base.n_threads, which its"):
        params.value("base.n_threads")
    with pytest.raises(UndeclaredKeyError, match="reads .*: base,"):
        params.section("base")  # only one key of the section is declared
    with pytest.raises(UndeclaredKeyError, match="gate.min_test_roc_auc"):
        params.value("gate.min_test_roc_auc")


def test_a_declared_key_missing_from_the_file_is_named(tmp_path):
    from reprokit.core.config import StageParams

    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: 1\n")
    with pytest.raises(ConfigError, match="params.yaml: missing key base.n_threads"):
        StageParams("train", ("base",), path).value("base.n_threads")
    with pytest.raises(ConfigError, match="base.seed: expected int"):
        path.write_text("base:\n  seed: one\n")
        StageParams("train", ("base",), path).value("base.seed")


def test_a_stage_reads_only_the_contract_keys_it_declares(repo):
    from reprokit.core.config import UndeclaredKeyError
    from reprokit.core.contract import load_stage_contract

    contract = load_stage_contract("featurize", ("target", "features"), repo / "dataset.yaml")
    assert contract.target.column == "churn" and "tenure" in contract.feature_names
    assert contract.names_of("integer") == ["tenure"]
    for attribute, key in [("name", "name"), ("id_column", "source"), ("drop_columns", "source")]:
        with pytest.raises(UndeclaredKeyError, match=f"stage 'featurize' reads .*dataset.yaml: {key},"):
            getattr(contract, attribute)
    with pytest.raises(AttributeError):
        _ = contract.no_such_attribute


def test_yaml_is_read_by_the_rules_dvc_reads_it_by(tmp_path):
    """An unquoted `yes` was True to reprokit (YAML 1.1) and "yes" to DVC (YAML 1.2): `dvc status`
    saw no change while the stage read another value. Both now read the same."""
    from dvc.utils.serialize._yaml import parse_yaml

    from reprokit.core.config import read_yaml
    from reprokit.core.contract import parse_contract

    text = "a: yes\nb: No\nc: on\nd: 0777\ne: 1:20\nf: 0o17\ng: .inf\nh: ~\ni: 1_000\n"
    (tmp_path / "p.yaml").write_text(text)
    assert read_yaml(tmp_path / "p.yaml") == parse_yaml(text, "p.yaml")
    assert read_yaml(tmp_path / "p.yaml")["a"] == "yes"
    contract = tmp_path / "dataset.yaml"
    contract.write_text(
        "name: t\nsource: {uri: t.csv, track: t.csv}\ntarget: {column: y, positive: yes, negative: no}\n"
        "features:\n  x: {type: binary, values: [yes, no]}\n"
    )
    parsed = parse_contract(read_yaml(contract))
    assert (parsed.target.positive, parsed.target.negative) == ("yes", "no")
    assert parsed.feature("x").values == ("yes", "no")


def test_batch_work_and_the_service_have_their_own_thread_budgets(tmp_path):
    """Fits and predictions over tables use base.n_threads; the service (one row at a time,
    on a possibly busy machine) and the gate's latency check use serve.n_threads."""
    from reprokit.model.scoring_model import thread_budget_setting
    from reprokit.serving.settings import parse_args

    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: 1\n  n_threads: 2\nserve:\n  n_threads: 1\n")
    assert thread_budget_setting(None, str(path)) == 2
    assert thread_budget_setting(None, str(path), "serve") == 1
    assert thread_budget_setting(3, str(path), "serve") == 3
    assert parse_args(["models:/churn@champion", "--params", str(path)]).n_threads == 1
    path.write_text("base:\n  seed: 1\n  n_threads: 2\nserve:\n  n_threads: 0\n")
    with pytest.raises(ConfigError, match="serve.n_threads must be at least 1"):
        thread_budget_setting(None, str(path), "serve")
    path.write_text("base:\n  seed: 1\n  n_threads: 2\n")  # a params file from before serve.n_threads
    assert thread_budget_setting(None, str(path), "serve") == 1
    assert thread_budget_setting(None, str(tmp_path / "elsewhere.yaml"), "serve") == 1
    path.write_text("serve:\n  n_threads: 1\n")  # batch work never guesses its budget
    with pytest.raises(ConfigError, match="missing section 'base'"):
        thread_budget_setting(None, str(path))


def test_edit_yaml_changes_only_the_values_it_sets(repo):
    """The one editor of params.yaml (tune --apply, retrain): comments, quotes and `null`s kept."""
    from reprokit.core.config import ConfigError
    from reprokit.core.yamledit import edit_yaml

    text = (repo / "params.yaml").read_text()
    assert edit_yaml(text, {}, "params.yaml") == text
    updated = edit_yaml(text, {("train", "model"): "random_forest", ("base", "seed"): 7}, "params.yaml")
    changed = [(a, b) for a, b in zip(text.splitlines(), updated.splitlines(), strict=True) if a != b]
    assert [b.split("#")[0].strip() for _, b in changed] == ["seed: 7", 'model: "random_forest"']
    assert all(("#" in a) == ("#" in b) for a, b in changed)
    same = {("train", "model"): "hist_gradient_boosting", ("base", "seed"): 42, ("split", "test_size"): 0.2}
    assert edit_yaml(text, same, "params.yaml") == text  # a value already so keeps its spelling
    spelled = "a:\n  lr: 1.0e-3\n  half: .5\n  mask: 0x10\n  flag: true\n  one: 1\n"
    assert edit_yaml(spelled, {("a", "lr"): 0.001, ("a", "half"): 0.5, ("a", "mask"): 16}, "p.yaml") == spelled
    kinds = edit_yaml(spelled, {("a", "flag"): 1, ("a", "one"): 1.0}, "p.yaml")  # equal, another kind: written
    assert yaml.safe_load(kinds)["a"] == {"lr": 0.001, "half": 0.5, "mask": 16, "flag": 1, "one": 1.0}
    assert "flag: 1\n" in kinds and "one: 1.0\n" in kinds
    added_null = edit_yaml(spelled, {("a", "max_depth"): None}, "p.yaml")  # a new key whose value is null
    assert "max_depth" in yaml.safe_load(added_null)["a"] and yaml.safe_load(added_null)["a"]["max_depth"] is None
    with pytest.raises(ConfigError, match=r"params\.yaml: no train\.nothing\.deep to set"):
        edit_yaml(text, {("train", "nothing", "deep"): 1}, "params.yaml")
    with pytest.raises(ConfigError, match=r"params\.yaml: no base\.seed\.deep to set"):
        edit_yaml(text, {("base", "seed", "deep"): 1}, "params.yaml")
    added = edit_yaml(text, {("train", "hist_gradient_boosting", "max_bins"): 128}, "params.yaml")
    assert yaml.safe_load(added)["train"]["hist_gradient_boosting"]["max_bins"] == 128
    assert len(added.splitlines()) == len(text.splitlines()) + 1  # one line added, nothing else moved
    with pytest.raises(ConfigError, match=r"params\.yaml: not valid YAML"):
        edit_yaml("a: [", {}, "params.yaml")


def test_edit_yaml_keeps_every_line_it_does_not_set_byte_for_byte():
    """A round trip wrote an empty null as `null` and re-spaced comments: retrain's patch then
    changed lines nobody asked for (`experiment:` → `experiment: null`)."""
    from reprokit.core.yamledit import edit_yaml

    text = (
        "monitor:   # the monitor\n"
        "  batch: data/a.parquet   #  the batch\n"
        "  alpha: 0.01\n"
        "tracking:\n"
        "  experiment:               # null: the dataset's name\n"
        "  registered_model: ~    # also null\n"
        "  other: Null\n"
        "train:\n"
        "  hist_gradient_boosting:\n"
        "    learning_rate: 0.1   # step\n"
    )
    updated = edit_yaml(text, {("monitor", "batch"): "data/b.parquet"}, "params.yaml")
    changed = [(a, b) for a, b in zip(text.splitlines(), updated.splitlines(), strict=True) if a != b]
    (set_line,) = [b for _, b in changed]  # only the line set; its comment stays (re-spaced to fit)
    assert set_line.startswith('  batch: "data/b.parquet" ') and set_line.endswith("#  the batch")
    added = edit_yaml(text, {("train", "hist_gradient_boosting", "max_bins"): 128}, "params.yaml")
    assert added == text + "    max_bins: 128\n"
    # Where putting lines back would mix indent widths, or a merge key brings the key: the round
    # trip as it is, never an error
    for source, path, value in (
        ("monitor:\n    batch: data/a.csv\n\n    enforce: false\n", ("monitor", "batch"), "data/b.csv"),
        ("train:\n    model: x\n    lr: 0.1\n\n    depth: 3\n", ("train", "lr"), 0.2),
        ("base: &b {lr: 1}\ntrain:\n  <<: *b\n  depth: 3\n", ("train", "lr"), 2),
    ):
        edited = yaml.safe_load(edit_yaml(source, {path: value}, "params.yaml"))
        assert edited[path[0]][path[1]] == value and len(edited[path[0]]) == len(yaml.safe_load(source)[path[0]])
