"""Untrusted model files cannot run code: an exact allowlist, for skops files and MLflow packages."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import skops.io as sio
import yaml
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from synthetic import loan_pipeline, loans_contract, package_loans

from reprokit.core.artifacts import save_skops
from reprokit.core.config import MODEL_KINDS, FeaturizeParams, TrainParams
from reprokit.model.estimators import build_model, build_transformer
from reprokit.model.archives import UntrustedFileError, archive_types
from reprokit.model.derivation import trusted_placements, trusted_types
from reprokit.model.trust import load_package, load_skops, open_package


def crafted_eval_archive(marker) -> bytes:
    """A transformer whose function is `builtins.eval`: transforming a string runs it as code."""
    return sio.dumps(FunctionTransformer(func=eval, validate=False))


def payload(marker) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')"


def test_the_crafted_archive_really_runs_code_when_trusted_by_prefix(tmp_path):
    """The attack the allowlist stops: skops lists `builtins.eval`, and a `builtins.` prefix let it in."""
    data = crafted_eval_archive(tmp_path / "marker")
    assert "builtins.eval" in sio.get_untrusted_types(data=data)
    sio.loads(data, trusted=sio.get_untrusted_types(data=data)).transform(payload(tmp_path / "marker"))
    assert (tmp_path / "marker").read_text() == "ran"


def test_a_crafted_archive_naming_eval_is_refused(tmp_path):
    path = tmp_path / "transformer.skops"
    path.write_bytes(crafted_eval_archive(tmp_path / "marker"))
    with pytest.raises(
        UntrustedFileError, match=r"transformer\.skops: refusing to load untrusted types.*builtins\.eval"
    ):
        load_skops(path)
    assert not (tmp_path / "marker").exists()


def test_an_unexpected_scikit_learn_type_is_refused_though_skops_trusts_it(tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    model = KNeighborsClassifier(n_neighbors=3).fit(rng.normal(size=(20, 2)), np.arange(20) % 2)
    data = sio.dumps(model)
    assert "sklearn.neighbors._classification.KNeighborsClassifier" not in sio.get_untrusted_types(data=data)
    path = tmp_path / "model.skops"
    path.write_bytes(data)
    with pytest.raises(UntrustedFileError, match="KNeighborsClassifier"):
        load_skops(path)


def test_the_allowlist_is_exact_not_a_prefix():
    allowed = trusted_types()
    assert "builtins.eval" not in allowed and "builtins.exec" not in allowed
    assert not any(name.startswith(("os.", "subprocess.", "sklearn.neighbors")) for name in allowed)
    assert {"sklearn.linear_model._logistic.LogisticRegression", "sklearn.pipeline.Pipeline"} <= allowed


def test_a_file_that_is_not_a_skops_archive_is_one_clear_error(tmp_path):
    path = tmp_path / "model.skops"
    path.write_bytes(b"not a zip")
    with pytest.raises(UntrustedFileError, match=r"model\.skops: not a skops model file"):
        load_skops(path)


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("scale", [True, False])
def test_every_model_kind_round_trips(tmp_path, kind, scale):
    """Everything the pipeline builds loads back and predicts the same, on data shaped unlike
    the allowlist's synthetic table (the loans contract: other columns, nulls, an id)."""
    from synthetic import make_loans

    from reprokit.core.contract import parse_contract
    from reprokit.model.inference import inputs_of

    contract = parse_contract(loans_contract())
    frame = make_loans(200)
    inputs = inputs_of(frame, contract)
    transformer = build_transformer(contract, FeaturizeParams(scale, "mean"))
    features = transformer.fit_transform(inputs)
    small = {
        "hist_gradient_boosting": {"max_iter": 5},
        "random_forest": {"n_estimators": 3},
        "logistic_regression": {"max_iter": 1000},
    }
    model = build_model(TrainParams(kind, **small), seed=1).fit(features, frame["defaulted"])
    pipeline = Pipeline([("features", transformer), ("model", model)])
    for name, obj in (("transformer", transformer), ("model", model), ("pipeline", pipeline)):
        save_skops(obj, tmp_path / f"{name}.skops")
        assert archive_types((tmp_path / f"{name}.skops").read_bytes()) <= trusted_types()
    loaded = load_skops(tmp_path / "pipeline.skops")
    np.testing.assert_array_equal(loaded.predict_proba(inputs), pipeline.predict_proba(inputs))


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory):
    """A real package written by the `package` stage's own function."""
    from reprokit.model.inference import predict_proba

    pipeline, test, inputs, _ = loan_pipeline(rows=200, iterations=5)
    out = tmp_path_factory.mktemp("package") / "package"
    package_loans(pipeline, inputs, out, predict_proba(pipeline, inputs, 1))
    return out, inputs


def tampered(package_dir, tmp_path, edit) -> str:
    source, _ = package_dir
    copy = tmp_path / "package"
    shutil.copytree(source, copy)
    edit(copy)
    return copy


def test_a_package_loads_through_the_check(package_dir):
    from reprokit.model.scoring import conform

    path, inputs = package_dir
    model = load_package(path)
    assert np.asarray(model.predict(conform(inputs, model))).shape == (len(inputs), 2)


# The two ways a package is opened: with MLflow (the gate, `package`), and without it (the
# service, batch scoring, the monitor: `ScoringModel.load`). Both refuse every tampered package.
OPENERS = pytest.mark.parametrize("opener", [load_package, open_package], ids=["load_package", "open_package"])


@OPENERS
def test_a_package_whose_mlmodel_trusts_eval_is_refused(package_dir, tmp_path, opener):
    """The `MLmodel` file inside the artifact is no authority: the one who wrote the artifact wrote it."""

    def swap(copy):
        (copy / "model.skops").write_bytes(crafted_eval_archive(tmp_path / "marker"))
        mlmodel = yaml.safe_load((copy / "MLmodel").read_text())
        mlmodel["flavors"]["sklearn"]["skops_trusted_types"] = ["builtins.eval"]
        (copy / "MLmodel").write_text(yaml.safe_dump(mlmodel))

    with pytest.raises(UntrustedFileError, match="builtins.eval"):
        opener(tampered(package_dir, tmp_path, swap))
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f["sklearn"].update(serialization_format="cloudpickle"), "serialization 'cloudpickle'"),
        (lambda f: f["python_function"].update(loader_module="mlflow.pyfunc.model"), "loader"),
        (lambda f: f["sklearn"].update(code="code"), "custom code"),
        (lambda f: f.update(python_model={}), "flavors"),
        (lambda f: f["python_function"].update(data="extra.skops"), r"python_function flavor keys \['data'\]"),
        (lambda f: f["sklearn"].update(skops_trusted_types=["os.system"]), "skops_trusted_types beyond the allowlist"),
        (lambda f: f["python_function"].update(predict_fn="predict"), "predict_fn 'predict'"),
    ],
)
@OPENERS
def test_a_package_this_pipeline_does_not_write_is_refused(package_dir, tmp_path, change, message, opener):
    def edit(copy):
        mlmodel = yaml.safe_load((copy / "MLmodel").read_text())
        change(mlmodel["flavors"])
        (copy / "MLmodel").write_text(yaml.safe_dump(mlmodel))

    with pytest.raises(UntrustedFileError, match=message):
        opener(tampered(package_dir, tmp_path, edit))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(metadata=["not", "a", "mapping"]), "metadata or model_uuid"),
        (lambda m: m.pop("model_uuid"), "metadata or model_uuid"),
        (lambda m: m.pop("signature"), "no readable input signature"),
    ],
)
def test_open_package_refuses_a_package_without_its_metadata(package_dir, tmp_path, change, message):
    def edit(copy):
        mlmodel = yaml.safe_load((copy / "MLmodel").read_text())
        change(mlmodel)
        (copy / "MLmodel").write_text(yaml.safe_dump(mlmodel))

    with pytest.raises(UntrustedFileError, match=message):
        open_package(tampered(package_dir, tmp_path, edit))


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda copy: (copy / "MLmodel").write_text((copy / "MLmodel").read_text() + "::: not yaml: [\n"),
            r"/package: not an MLflow scikit-learn model "
            r"\(MLmodel: line \d+, column 13: mapping values are not allowed here\)$",
        ),
        (lambda copy: (copy / "model.skops").unlink(), r"/model\.skops: the model file is missing$"),
    ],
    ids=["MLmodel not YAML", "model file missing"],
)
@OPENERS
def test_a_broken_package_is_one_line_saying_what_is_wrong(package_dir, tmp_path, edit, message, opener):
    with pytest.raises(UntrustedFileError, match=message) as refused:
        opener(tampered(package_dir, tmp_path, edit))
    assert "\n" not in str(refused.value)


def test_a_missing_package_directory_is_one_clear_error(tmp_path):
    from reprokit.core.errors import StageError

    for opener in (load_package, open_package):
        with pytest.raises(StageError, match="no such package directory"):
            opener(tmp_path / "pakage")


def corrupt_and_reload(tmp_path, model, corrupt):
    """Dump a fitted model whose tree arrays `corrupt` changed in memory, as an attacker would."""
    corrupt(model)
    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(model))
    return path


@pytest.mark.parametrize("kind", ["hist_gradient_boosting", "random_forest"])
def test_trees_whose_indices_point_outside_are_refused_before_any_prediction(tmp_path, kind):
    """skops distrusts these tree types because compiled prediction code follows their node
    and feature indices unchecked: one feature index of 10**7 made `predict_proba` segfault."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(80, 3)), np.arange(80) % 2
    small = {"hist_gradient_boosting": {"max_iter": 3}, "random_forest": {"n_estimators": 2}, "logistic_regression": {}}
    model = build_model(TrainParams(kind, **small), seed=0).fit(x, y)
    path = tmp_path / "good.skops"
    path.write_bytes(sio.dumps(model))
    load_skops(path).predict_proba(x)  # the untouched model loads and predicts

    def far_feature(m):
        if kind == "hist_gradient_boosting":
            nodes = m._predictors[0][0].nodes
            nodes["feature_idx"][np.flatnonzero(nodes["is_leaf"] == 0)[0]] = 10**7
        else:
            m.estimators_[0].tree_.feature[0] = 10**7

    with pytest.raises(UntrustedFileError, match="indices out of range"):
        load_skops(corrupt_and_reload(tmp_path, model, far_feature))

    def looping_child(m):
        if kind == "hist_gradient_boosting":
            nodes = m._predictors[0][0].nodes
            nodes["left"][0] = 0  # a node that is its own child: an endless walk
        else:
            m.estimators_[0].tree_.children_left[0] = 0

    fresh = build_model(TrainParams(kind, **small), seed=0).fit(x, y)
    with pytest.raises(UntrustedFileError, match="indices out of range"):
        load_skops(corrupt_and_reload(tmp_path, fresh, looping_child))


def rewrite_schema(data: bytes, edit) -> bytes:
    """The same archive with its schema.json edited, as an attacker with write access would."""
    import io
    import json
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(source.read("schema.json"))
    edit(schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            target.writestr(name, json.dumps(schema) if name == "schema.json" else source.read(name))
    return out.getvalue()


def rewrite_nodes(data: bytes, matches, replace, limit: int | None = None) -> tuple[bytes, int]:
    """The archive with each schema node that `matches` changed in place by `replace` (at most
    `limit` of them), and how many were changed."""
    changed = 0

    def walk(node):
        nonlocal changed
        if isinstance(node, dict):
            if matches(node) and (limit is None or changed < limit):
                replace(node)
                changed += 1
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    return rewrite_schema(data, walk), changed


@pytest.fixture(scope="module")
def fitted_pipeline():
    pipeline, _, inputs, _ = loan_pipeline(rows=200, iterations=5)
    return pipeline, inputs


def test_an_allowed_type_rebuilt_by_its_constructor_is_refused(tmp_path, fitted_pipeline):
    """Rebuilding a tree predictor through its constructor skips the checks its `__setstate__`
    makes, with every type name still allowed: the (type, loader) pair is checked too."""
    pipeline, _ = fitted_pipeline

    def through_constructor(node):
        state = node["content"]["content"]
        node["__loader__"] = "ConstructorFromReduceNode"
        node["content"] = {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [state["nodes"], state["binned_left_cat_bitsets"], state["raw_left_cat_bitsets"]],
        }

    def is_predictor(node):
        return node.get("__class__") == "TreePredictor" and node.get("__loader__") == "ObjectNode"

    path = tmp_path / "model.skops"
    data, changed = rewrite_nodes(sio.dumps(pipeline), is_predictor, through_constructor)
    path.write_bytes(data)
    assert changed
    with pytest.raises(UntrustedFileError, match="TreePredictor by ConstructorFromReduceNode"):
        load_skops(path)


def test_a_model_of_a_kind_the_pipeline_never_trains_is_refused_though_its_type_is_allowed(tmp_path, fitted_pipeline):
    """A forest's member tree is an allowed type, but never the model itself."""
    from sklearn.tree import DecisionTreeClassifier

    pipeline, inputs = fitted_pipeline
    features = pipeline.steps[0][1].transform(inputs)
    tree = DecisionTreeClassifier(max_depth=2).fit(features, np.arange(len(features)) % 2)
    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(Pipeline([("features", pipeline.steps[0][1]), ("model", tree)])))
    with pytest.raises(UntrustedFileError, match="DecisionTreeClassifier at .*never puts them there"):
        load_skops(path)


def test_cached_encoder_widths_that_disagree_with_the_categories_are_refused(tmp_path, fitted_pipeline):
    """A one-hot encoder told its output is wider or narrower than its categories make it:
    scipy's compiled code then wrote past its buffer ("double free or corruption")."""
    import copy

    pipeline, _ = fitted_pipeline
    tampered = copy.deepcopy(pipeline)
    encoder = dict((name, part) for name, part, _ in tampered.steps[0][1].transformers_)["cat"]
    encoder._n_features_outs = [0] * len(encoder._n_features_outs)
    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(tampered))
    with pytest.raises(UntrustedFileError, match="output width does not follow from its categories"):
        load_skops(path)


def test_tree_records_with_renamed_fields_are_refused(fitted_pipeline):
    """Compiled code reads node records by position; checks read them by name. Records whose
    names were swapped would pass a by-name check: the exact layout is required."""
    import copy

    from reprokit.model.structure import check_model

    pipeline, _ = fitted_pipeline
    tampered = copy.deepcopy(pipeline)
    predictor = tampered.steps[1][1]._predictors[0][0]
    names = list(predictor.nodes.dtype.names)
    i, j = names.index("left"), names.index("count")
    names[i], names[j] = names[j], names[i]
    predictor.nodes = predictor.nodes.view(
        np.dtype(
            {
                "names": names,
                "formats": [predictor.nodes.dtype[k] for k in range(len(names))],
                "offsets": [predictor.nodes.dtype.fields[n][1] for n in predictor.nodes.dtype.names],
                "itemsize": predictor.nodes.dtype.itemsize,
            }
        )
    )
    with pytest.raises(UntrustedFileError, match="not laid out as scikit-learn's"):
        check_model(tampered, "model.skops")


def test_numeric_categories_out_of_order_are_refused(tmp_path, fitted_pipeline):
    """The encoder finds a numeric value by binary search: with categories out of order it
    answers one column past the output, and the densifying code wrote past its buffer."""
    import copy

    pipeline, _ = fitted_pipeline
    tampered = copy.deepcopy(pipeline)
    encoder = dict((name, part) for name, part, _ in tampered.steps[0][1].transformers_)["cat"]
    encoder.categories_[0] = np.arange(len(encoder.categories_[0]), 0, -1).astype("float64")
    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(tampered))
    with pytest.raises(UntrustedFileError, match="numeric categories are not in increasing order"):
        load_skops(path)


def test_an_allowed_object_in_a_place_the_pipeline_never_puts_it_is_refused(tmp_path, fitted_pipeline):
    """A forest's tree is an allowed type; as gradient boosting's loss, `predict_proba` would
    call its compiled code with indices nobody checked."""
    import copy

    from sklearn.tree import DecisionTreeClassifier

    pipeline, inputs = fitted_pipeline
    tampered = copy.deepcopy(pipeline)
    features = pipeline.steps[0][1].transform(inputs)
    tampered.steps[1][1]._loss = DecisionTreeClassifier(max_depth=1).fit(features, np.arange(len(features)) % 2)
    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(tampered))
    with pytest.raises(UntrustedFileError, match=r"DecisionTreeClassifier at \S+/_loss.*never puts them there"):
        load_skops(path)


def test_a_package_is_checked_and_opened_from_one_private_copy(package_dir, tmp_path, monkeypatch):
    """What is checked is what MLflow reads: a swap of the directory's file after the check
    cannot reach the loaded model."""
    import mlflow.pyfunc

    source, inputs = package_dir
    copy_dir = tmp_path / "package"
    shutil.copytree(source, copy_dir)
    opened = []
    real_load = mlflow.pyfunc.load_model
    monkeypatch.setattr(mlflow.pyfunc, "load_model", lambda path, **kw: opened.append(path) or real_load(path, **kw))
    load_package(copy_dir)
    assert opened and not str(opened[0]).startswith(str(copy_dir))


def test_cached_encoder_widths_must_be_a_list_of_integers(tmp_path, fitted_pipeline):
    """Saved as an array, equal in value, the widths made `[0] + widths` add instead of
    prepend: both features got the same offset and the densifying code wrote past its buffer."""
    import copy

    pipeline, _ = fitted_pipeline
    tampered = copy.deepcopy(pipeline)
    encoder = dict((name, part) for name, part, _ in tampered.steps[0][1].transformers_)["cat"]
    encoder._n_features_outs = np.array(encoder._n_features_outs)
    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(tampered))
    with pytest.raises(UntrustedFileError, match="cached output widths are not a list of integers"):
        load_skops(path)


def test_plain_data_rebuilt_by_a_constructor_is_refused(tmp_path, fitted_pipeline):
    """`numpy.ndarray` rebuilt from a list calls `np.ndarray(shape)`: any size, uninitialised."""
    pipeline, _ = fitted_pipeline

    def array_from_list(node):
        node.clear()
        node.update({"__class__": "ndarray", "__module__": "numpy", "__loader__": "ListNode", "content": []})

    def is_array(node):
        return node.get("__class__") == "ndarray" and node.get("__loader__") == "NdArrayNode"

    path = tmp_path / "model.skops"
    data, changed = rewrite_nodes(sio.dumps(pipeline), is_array, array_from_list, limit=1)
    path.write_bytes(data)
    assert changed == 1
    with pytest.raises(UntrustedFileError, match=r"numpy.ndarray by ListNode"):
        load_skops(path)


OTHER_INPUTS_STEP = "an inputs step other than the one the package builds"


@pytest.mark.parametrize(
    "kw_args",
    [{"columns": ["income"], "dtype": object}, {"columns": None}, {"columns": None, "dtype": "float32"}],
    ids=["fewer-columns", "no-dtype", "other-dtype"],
)
def test_a_package_inputs_step_other_than_the_one_package_builds_is_refused(tmp_path, fitted_pipeline, kw_args):
    """The `inputs` step calls `pandas.DataFrame`, an allowed type: only with the transformer's
    own columns and the object dtype, as `served_pipeline` builds it."""
    import pandas as pd

    from reprokit.model.estimators import served_pipeline

    pipeline, inputs = fitted_pipeline
    served = served_pipeline(pipeline.steps[0][1], pipeline.steps[1][1])
    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(served))
    np.testing.assert_array_equal(load_skops(path).predict_proba(inputs), pipeline.predict_proba(inputs))
    columns = kw_args["columns"] or list(served.named_steps["inputs"].kw_args["columns"])
    served.named_steps["inputs"].kw_args = {**kw_args, "columns": columns}
    assert served.named_steps["inputs"].func is pd.DataFrame
    path.write_bytes(sio.dumps(served))
    with pytest.raises(UntrustedFileError, match=OTHER_INPUTS_STEP):
        load_skops(path)


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (lambda step: setattr(step, "validate", True), OTHER_INPUTS_STEP),
        # A callable where the pipeline never puts one is refused earlier, by the placements.
        (
            lambda step: setattr(step, "inverse_func", step.func),
            r"refusing \['pandas\.DataFrame at [^']*/inverse_func'\]: this pipeline never puts them there",
        ),
        (lambda step: setattr(step, "feature_names_out", "one-to-one"), OTHER_INPUTS_STEP),
        (lambda step: setattr(step, "func", FunctionTransformer().func), OTHER_INPUTS_STEP),
    ],
    ids=["validate", "inverse_func", "feature_names_out", "other-func"],
)
def test_an_inputs_step_with_other_settings_is_refused(tmp_path, fitted_pipeline, tamper, reason):
    from reprokit.model.estimators import served_pipeline

    pipeline, _ = fitted_pipeline
    served = served_pipeline(pipeline.steps[0][1], pipeline.steps[1][1])
    tamper(served.named_steps["inputs"])
    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(served))
    with pytest.raises(UntrustedFileError, match=reason):
        load_skops(path)


def test_an_inputs_step_out_of_place_is_refused(tmp_path, fitted_pipeline):
    from reprokit.model.estimators import served_pipeline

    pipeline, _ = fitted_pipeline
    served = served_pipeline(pipeline.steps[0][1], pipeline.steps[1][1])
    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(Pipeline([served.steps[1], served.steps[0], served.steps[2]])))
    with pytest.raises(UntrustedFileError, match=r"a pipeline whose steps are not \(inputs,\) features then model"):
        load_skops(path)


def test_the_committed_allowlist_is_the_derived_one():
    """Loads read `reprokit/model/allowlist.py` (deriving takes seconds): it must equal the derivation
    from this environment's libraries and the pipeline's estimators, byte for byte."""
    from pathlib import Path

    import reprokit.model.allowlist
    from reprokit.model.derivation import allowlist_source, derive_placements, library_versions

    derived = derive_placements()
    assert derived == trusted_placements(), "run `reprokit allowlist` and commit src/reprokit/model/allowlist.py"
    assert reprokit.model.allowlist.VERSIONS == library_versions()
    assert Path(reprokit.model.allowlist.__file__).read_text() == allowlist_source(derived, library_versions())


def test_with_other_library_versions_the_allowlist_is_derived_not_read(monkeypatch):
    """An environment with other numpy, scikit-learn or skops versions than the committed
    allowlist's derives its own (what those versions write), instead of refusing their files."""
    import reprokit.model.allowlist
    from reprokit.model import derivation

    monkeypatch.setattr(reprokit.model.allowlist, "PLACEMENTS", frozenset())
    derivation.trusted_placements.cache_clear()
    try:
        assert derivation.trusted_placements() == frozenset()  # the versions match: the file is read
        monkeypatch.setattr(reprokit.model.allowlist, "VERSIONS", {**reprokit.model.allowlist.VERSIONS, "skops": "0.0"})
        derivation.trusted_placements.cache_clear()
        assert derivation.trusted_placements() == derivation.derive_placements() != frozenset()
    finally:
        derivation.trusted_placements.cache_clear()


# Archives and metadata that inflate or nest: refused from the archive's directory and the
# schema's shape, before anything is inflated or rebuilt (`reprokit.model.archives.Limits`).
MiB = 1 << 20


def with_members(data: bytes, replace: dict[str, object]) -> bytes:
    """The archive with some members replaced: bytes, or a callable writing into the member."""
    import io
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as target:
        for name in source.namelist():
            content = replace.get(name, source.read(name))
            if callable(content):
                with target.open(name, "w", force_zip64=True) as member:
                    content(member)
            else:
                target.writestr(name, content)
    return out.getvalue()


def inflating_schema(gib: int):
    """A schema.json of `gib` GiB of blanks inside a JSON string: a few MiB compressed."""

    def write(member):
        member.write(b'{"__class__": "')
        chunk = b" " * MiB
        for _ in range(gib * 1024):
            member.write(chunk)
        member.write(b'"}')

    return write


@pytest.fixture(scope="module")
def bomb_package(package_dir, tmp_path_factory):
    source, _ = package_dir
    copy = tmp_path_factory.mktemp("bomb") / "package"
    shutil.copytree(source, copy)
    model = copy / "model.skops"
    model.write_bytes(with_members(model.read_bytes(), {"schema.json": inflating_schema(2)}))
    assert model.stat().st_size < 8 * MiB
    return copy


@OPENERS
def test_a_package_whose_schema_inflates_to_gigabytes_is_refused_from_its_directory(bomb_package, opener):
    with pytest.raises(UntrustedFileError, match=r"member 'schema.json' inflates to 2,147,483,6\d\d bytes, above"):
        opener(bomb_package)


def test_scoring_with_an_inflating_package_is_refused_in_bounded_memory(bomb_package, tmp_path):
    """Observed: 38 s and a 4.3 GiB peak to load and score with it. Now one line, and the
    command's peak resident memory stays far below the 2 GiB the schema would take."""
    import subprocess
    import sys

    import pandas as pd

    from reprokit.model.trust import package_contract

    # Columns the package's contract takes: a wrong file would be refused before the model loads.
    pd.DataFrame({name: [1] for name in package_contract(bomb_package).feature_names}).to_csv(
        tmp_path / "in.csv", index=False
    )
    measure = (
        "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stderr.write(done.stderr); print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    command = [sys.executable, "-m", "reprokit.serving.score", tmp_path / "in.csv", tmp_path / "o.parquet"]
    done = subprocess.run(
        [sys.executable, "-c", measure, *map(str, command), "--model", str(bomb_package)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    code, peak_kib = map(int, done.stdout.split())
    assert code == 1 and "inflates to" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert peak_kib < 1024 * 1024, f"peak {peak_kib} KiB"  # under 1 GiB (a Python with pandas: ~0.2 GiB)
    assert not (tmp_path / "o.parquet").exists()


def test_a_schema_that_nests_deep_is_refused_in_one_line(tmp_path, fitted_pipeline):
    data = sio.dumps(fitted_pipeline[0])
    for depth in (300, 100_000):  # below and above the JSON parser's own recursion limit
        deep = with_members(data, {"schema.json": ("[" * depth + "]" * depth).encode()})
        (tmp_path / "deep.skops").write_bytes(deep)
        with pytest.raises(UntrustedFileError, match="schema nests (deeper than 200 levels|too deep to read)"):
            load_skops(tmp_path / "deep.skops")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("REPROKIT_TRUST_MEMBERS", "10", r"\d+ members, above the limit of 10\b"),
        ("REPROKIT_TRUST_SCHEMA_NODES", "1000", "schema holds more than 1,000 nodes"),
        ("REPROKIT_TRUST_SCHEMA_DEPTH", "5", "schema nests deeper than 5 levels"),
        (
            "REPROKIT_TRUST_ARCHIVE_BYTES",
            "10000",
            r"members inflate to [\d,]+ bytes together, above the limit of 10,000",
        ),
        ("REPROKIT_TRUST_FILE_BYTES", "10000", r"more than 64 files or 10,000 bytes"),
        ("REPROKIT_TRUST_METADATA_BYTES", "100", r"MLmodel is [\d,]+ bytes, above the limit of 100"),
    ],
)
def test_each_limit_is_a_setting_and_names_itself(package_dir, monkeypatch, variable, value, message):
    from reprokit.model.archives import limits

    monkeypatch.setenv(variable, value)
    limits.cache_clear()
    try:
        with pytest.raises(UntrustedFileError, match=message):
            open_package(package_dir[0])
    finally:
        monkeypatch.delenv(variable)
        limits.cache_clear()
    open_package(package_dir[0])  # the defaults take the pipeline's own package


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda copy: (copy / "MLmodel").write_text(BILLION_LAUGHS), "YAML aliases"),
        (lambda copy: (copy / "extra.bin").symlink_to("/dev/zero"), "extra.bin is a link or special file"),
        (lambda copy: (copy / "requirements.txt").unlink() or (copy / "requirements.txt").symlink_to("/etc/passwd"),
         "requirements.txt is a link or special file"),
        (lambda copy: [(copy / f"f{i}.txt").write_text("x") for i in range(70)], "more than 64 files"),
    ],
)  # fmt: skip
@OPENERS
def test_package_metadata_that_expands_or_links_elsewhere_is_refused(package_dir, tmp_path, edit, message, opener):
    with pytest.raises(UntrustedFileError, match=message):
        opener(tampered(package_dir, tmp_path, edit))
