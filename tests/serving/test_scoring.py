"""The input policy (`reprokit.model.scoring.check_records`) and the compiled transformation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic import loans_contract

from reprokit.core.config import MODEL_KINDS, FeaturizeParams, TrainParams, load_section
from reprokit.core.contract import parse_contract
from reprokit.model.compiled import compile_pipeline, verify
from reprokit.model.inference import inputs_of
from reprokit.model.scoring import InputError, check_records, probe_records
from reprokit.model.scoring_model import ScoringModel


def records(contract, **changes):
    """One valid loans record (columns of one value), with `changes` applied."""
    base = {"income": 52000.5, "amount": 12000.0, "age": 41, "region": "north", "purpose": "car", "owns_home": 1}
    return {name: [value] for name, value in {**base, **changes}.items()}


@pytest.fixture(scope="module")
def loans():
    return parse_contract(loans_contract())


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"income": "52000"}, "income", "expected a number, got text"),
        ({"age": 41.5}, "age", "expected a whole number"),
        ({"age": True}, "age", "expected a number, got true/false"),
        ({"amount": float("inf")}, "amount", "not a finite number"),
        ({"amount": 10**400}, "amount", "not a finite number"),
        ({"region": 3}, "region", "expected text, got a number"),
        ({"purpose": ["car"]}, "purpose", "expected text, got a list"),
        ({"amount": None}, "amount", "null where the contract requires a value"),
        ({"region": None}, "region", "null where the contract requires a value"),
    ],
)
def test_a_record_of_the_wrong_type_or_null_is_rejected_naming_the_field(loans, change, field, problem):
    checked = check_records(records(loans, **change), 1, loans)
    assert checked.rejected[0] == f"{field}: {problem}"
    assert not checked.ok[0] and checked.warnings[0] is None


def test_values_outside_the_contract_are_scored_with_a_warning(loans):
    checked = check_records(records(loans, region="mars", age=130, income=-5.0), 1, loans)
    assert checked.ok[0]
    assert checked.warnings[0] == [
        "income: outside the contract's range [0, None]",
        "age: outside the contract's range [18, 120]",
        "region: a category the contract does not list",
    ]


def test_a_text_binary_outside_its_two_values_is_rejected():
    """The pipeline's binary encoder cannot encode a third value, so it is not scored."""
    spec = loans_contract()
    spec["features"]["owns_home"] = {"type": "binary", "values": ["no", "yes"]}
    contract = parse_contract(spec)
    checked = check_records(records(contract, owns_home="maybe"), 1, contract)
    assert checked.rejected[0] == "owns_home: not one of the contract's two values ['no', 'yes']"


def test_missing_columns(loans):
    columns = records(loans)
    del columns["age"], columns["purpose"]
    with pytest.raises(InputError, match="missing required column.s.: age, purpose"):
        check_records(columns, 1, loans)
    spec = loans_contract()
    spec["features"]["age"]["nullable"] = True
    contract = parse_contract(spec)
    checked = check_records({k: v for k, v in records(contract).items() if k != "age"}, 1, contract)
    assert checked.ok[0] and np.isnan(checked.inputs["age"][0])  # an absent nullable column is null


def test_a_message_never_holds_the_offending_value(loans):
    checked = check_records(records(loans, income="SECRET-VALUE", region=12345), 1, loans)
    assert "SECRET" not in checked.rejected[0] and "12345" not in checked.rejected[0]


def test_columns_from_a_file_are_checked_the_same_way(loans):
    """Typed pandas columns (a file) and Python lists (JSON) give the same verdicts."""
    lists = {
        "income": [1.0, None, 3.0],
        "amount": [5.0, 6.0, 7.0],
        "age": [30, 40, 50.5],
        "region": ["north", "mars", None],
        "purpose": ["car", "home", "car"],
        "owns_home": [0, 1, 1],
    }
    frame = pd.DataFrame(lists).astype({"region": "str", "purpose": "str"})
    for columns in (lists, {name: frame[name] for name in frame}):
        checked = check_records(columns, 3, loans)
        assert list(checked.rejected) == [None, None, "age: expected a whole number"]
        assert list(checked.warnings)[:2] == [None, ["region: a category the contract does not list"]]


def fitted_pipelines(telco_splits, telco_contract, repo):
    from sklearn.pipeline import Pipeline

    from reprokit.model.estimators import fit
    from reprokit.stages.featurize import fit_transform

    _, train, test, _ = telco_splits
    base = load_section("train", repo / "params.yaml")
    for scale in (True, False):
        transformer, train_x, _ = fit_transform(train, test, telco_contract, FeaturizeParams(scale, "median"))
        for kind in MODEL_KINDS:
            params = TrainParams(kind, base.hist_gradient_boosting, base.random_forest, base.logistic_regression)
            yield (
                f"{kind}-scale={scale}",
                Pipeline([("features", transformer), ("model", fit(train_x, "churn", params, 0))]),
            )


def test_the_compiled_pipeline_gives_exactly_the_pipelines_probabilities(telco_splits, telco_contract, repo):
    _, _, test, _ = telco_splits
    inputs = inputs_of(test, telco_contract)
    probes = probe_records(telco_contract)
    for name, pipeline in fitted_pipelines(telco_splits, telco_contract, repo):
        compiled = compile_pipeline(pipeline)
        assert compiled is not None, name
        assert verify(compiled, pipeline, probes), name
        np.testing.assert_array_equal(compiled.predict_proba(inputs), pipeline.predict_proba(inputs), err_msg=name)
        assert np.array_equal(compiled.features(inputs), pipeline[0].transform(inputs).to_numpy()), name


def test_the_checked_columns_score_exactly_as_their_frame(telco_splits, telco_contract, repo):
    """The service scores a micro-batch's checked columns as they are (no frame): every test
    record, alone and together, the probes, and text given as a pandas string column with NA."""
    from reprokit.model.scoring import columns_of, frame_of

    _, _, test, _ = telco_splits
    inputs = inputs_of(test, telco_contract)
    checked = check_records({name: inputs[name].tolist() for name in inputs.columns}, len(inputs), telco_contract)
    alone = [{name: column[i : i + 1] for name, column in checked.columns.items()} for i in range(40)]
    probes = probe_records(telco_contract)
    from_probes = check_records({name: probes[name].tolist() for name in probes.columns}, len(probes), telco_contract)
    text = next(f.name for f in telco_contract.features if f.type == "categorical")
    arrow = dict(checked.columns)
    arrow[text] = pd.Series(inputs[text].to_numpy(), dtype="string").where(np.arange(len(inputs)) % 7 != 0, pd.NA)
    for name, pipeline in fitted_pipelines(telco_splits, telco_contract, repo):
        compiled = compile_pipeline(pipeline)
        assert verify(compiled, pipeline, probes), name
        for columns in (checked.columns, from_probes.columns, columns_of(alone), arrow, *alone[:8]):
            expected = pipeline.predict_proba(frame_of([columns]))
            np.testing.assert_array_equal(compiled.predict_proba(columns), expected, err_msg=name)


def test_checked_columns_with_text_binaries_and_nulls_score_exactly_as_their_frame(telco_splits, telco_contract):
    """Binary features given as text (most-frequent imputation, then encoding) with nulls:
    the branch the Telco contract's 0/1 binaries never take."""
    import dataclasses

    from sklearn.pipeline import Pipeline

    from reprokit.model.estimators import fit
    from reprokit.model.scoring import frame_of
    from reprokit.stages.featurize import fit_transform

    _, train, test, _ = telco_splits
    names = [f.name for f in telco_contract.features if f.type == "binary"]  # all: one encoder for every binary
    features = tuple(
        dataclasses.replace(f, values=("no", "yes"), nullable=True) if f.name in names else f
        for f in telco_contract.features
    )
    contract = dataclasses.replace(telco_contract, features=features)

    def as_text(split):
        split = split.copy()
        for name in names:
            text = np.where(split[name].to_numpy() == 1, "yes", "no").astype(object)
            split[name] = np.where(np.arange(len(split)) % 5 == 0, None, text)
        return split

    train, test = as_text(train), as_text(test)
    transformer, train_x, _ = fit_transform(train, test, contract, FeaturizeParams(True, "median"))
    params = TrainParams("logistic_regression", {}, {}, {"C": 1.0, "max_iter": 1000})
    pipeline = Pipeline([("features", transformer), ("model", fit(train_x, "churn", params, 0))])
    compiled = compile_pipeline(pipeline)
    assert verify(compiled, pipeline, probe_records(contract))
    inputs = inputs_of(test, contract)
    checked = check_records({name: inputs[name].tolist() for name in inputs.columns}, len(inputs), contract)
    assert pd.isna(checked.columns[names[0]]).sum() > 100  # nulls the imputer fills
    for columns in (checked.columns, {name: column[:3] for name, column in checked.columns.items()}):
        expected = pipeline.predict_proba(frame_of([columns]))
        np.testing.assert_array_equal(compiled.predict_proba(columns), expected)


def boosted_pipelines(telco_splits, telco_contract, repo):
    """Gradient boosting as params.yaml sets it and as `tune` searches it (shallow trees, a
    share of the features per split), on the real featurize and fit functions."""
    import dataclasses

    from sklearn.pipeline import Pipeline

    from reprokit.model.estimators import fit
    from reprokit.stages.featurize import fit_transform

    _, train, test, _ = telco_splits
    base = load_section("train", repo / "params.yaml")
    transformer, train_x, _ = fit_transform(train, test, telco_contract, FeaturizeParams(True, "median"))
    shallow = {"max_iter": 300, "max_leaf_nodes": 4, "min_samples_leaf": 50, "l2_regularization": 20.0}
    for name, hyper in (("params", {}), ("shallow", shallow), ("feature-share", {**shallow, "max_features": 0.5})):
        boosting = {**base.hist_gradient_boosting, **hyper}
        params = dataclasses.replace(base, model="hist_gradient_boosting", hist_gradient_boosting=boosting)
        yield name, Pipeline([("features", transformer), ("model", fit(train_x, "churn", params, 0))])


def test_the_compiled_trees_give_exactly_the_models_probabilities(telco_splits, telco_contract, repo):
    """Every test row alone, in small batches and all together, and features with nulls (the
    trees' missing-value branches): the same float64 probabilities as scikit-learn's."""
    import warnings

    _, _, test, _ = telco_splits
    inputs = inputs_of(test, telco_contract)
    for name, pipeline in boosted_pipelines(telco_splits, telco_contract, repo):
        compiled = compile_pipeline(pipeline)
        assert compiled.trees is not None and verify(compiled, pipeline, probe_records(telco_contract)), name
        assert compiled.trees is not None, name
        features = compiled.features(inputs)
        with_nulls = features.copy()
        with_nulls[np.random.default_rng(0).random(features.shape) < 0.2] = np.nan
        model = pipeline.named_steps["model"]
        for matrix in (features, with_nulls):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="X does not have valid feature names")
                expected = model.predict_proba(matrix)
            assert np.array_equal(compiled.trees.predict_proba(matrix), expected), name
            for size in (1, 7):
                for start in range(0, 280, size):
                    got = compiled.trees.predict_proba(matrix[start : start + size])
                    assert np.array_equal(got, expected[start : start + size]), (name, start, size)
        small, large = inputs.head(3), inputs  # the compiled trees for a small batch, scikit-learn's for a large one
        assert compiled.trees.suits(len(small)) and not compiled.trees.suits(len(large))
        np.testing.assert_array_equal(compiled.predict_proba(small), pipeline.predict_proba(small), err_msg=name)


def test_wrong_compiled_trees_are_dropped_by_verify(telco_pipeline, telco_contract):
    """Trees that give other probabilities are never used: the model's own prediction is."""
    compiled = compile_pipeline(telco_pipeline)
    compiled.trees.value = compiled.trees.value * 1.5
    assert verify(compiled, telco_pipeline, probe_records(telco_contract)) and compiled.trees is None
    compiled = compile_pipeline(telco_pipeline)
    compiled.trees.left, compiled.trees.right = compiled.trees.right, compiled.trees.left
    assert verify(compiled, telco_pipeline, probe_records(telco_contract)) and compiled.trees is None


def test_trees_that_are_not_trees_do_not_compile(telco_pipeline):
    """A child outside its tree, or a node that is its own child (a file edited by hand that
    skipped the loading checks): no compiled trees, never a hang or an out-of-bounds read."""
    import copy

    from reprokit.model.compiled import compile_trees

    assert compile_trees(telco_pipeline.named_steps["model"]) is not None
    for field, value in (("left", 10_000), ("right", 0)):
        model = copy.deepcopy(telco_pipeline.named_steps["model"])
        nodes = model._predictors[3][0].nodes
        nodes[field][0] = value  # the root's child: far away, or the root itself
        assert compile_trees(model) is None, field


def test_a_model_of_another_kind_has_no_compiled_trees(telco_splits, telco_contract, repo):
    for name, pipeline in fitted_pipelines(telco_splits, telco_contract, repo):
        compiled = compile_pipeline(pipeline)
        assert (compiled.trees is not None) == name.startswith("hist_gradient_boosting"), name


def test_text_binaries_and_nulls_compile_exactly():
    from synthetic import loan_pipeline

    pipeline, _, inputs, _ = loan_pipeline(rows=200, iterations=5)
    compiled = compile_pipeline(pipeline)
    contract = parse_contract(loans_contract())
    assert verify(compiled, pipeline, probe_records(contract))
    np.testing.assert_array_equal(compiled.predict_proba(inputs), pipeline.predict_proba(inputs))


def test_a_pipeline_of_another_shape_is_not_compiled(telco_pipeline, telco_splits, telco_contract):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    assert compile_pipeline(Pipeline([("features", StandardScaler()), ("model", telco_pipeline[1])])) is None
    assert not verify(None, telco_pipeline, probe_records(telco_contract))


def test_a_wrong_compiled_step_is_caught_by_verify(telco_pipeline, telco_contract):
    """`verify` is what stands between a compiled mistake and a served score."""
    compiled = compile_pipeline(telco_pipeline)
    steps = list(compiled.steps)
    compiled.steps = steps[1:] + steps[:1]  # the same blocks in the wrong order
    assert not verify(compiled, telco_pipeline, probe_records(telco_contract))


def test_the_scoring_model_reads_contract_threshold_and_version_from_the_package(telco_package, telco_contract):
    model = ScoringModel.load(str(telco_package))
    assert model.contract.feature_names == telco_contract.feature_names
    assert model.threshold == 0.5 and model.compiled is not None
    assert model.version.startswith("package-") and len(model.version) == len("package-") + 12


def test_a_package_directory_is_scored_as_pyfunc_scores_it_without_importing_mlflow(
    telco_package, telco_splits, telco_contract
):
    """Batch scoring and the monitor open a directory without MLflow (seconds of start-up):
    the same checks, the same pipeline `pyfunc` wraps, the same probabilities."""
    import subprocess
    import sys

    import mlflow.pyfunc

    from reprokit.model.scoring import signature_inputs

    inputs = signature_inputs(telco_splits[2], telco_contract)
    model = ScoringModel.load(str(telco_package))
    np.testing.assert_array_equal(
        model.pipeline.predict_proba(inputs)[:, 1], mlflow.pyfunc.load_model(str(telco_package)).predict(inputs)[:, 1]
    )
    probe = (
        "import sys; from reprokit.model.scoring_model import ScoringModel; ScoringModel.load(sys.argv[1]); "
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'mlflow', 'sqlalchemy', 'alembic'}))"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(telco_package)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
