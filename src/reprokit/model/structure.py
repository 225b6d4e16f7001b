"""Structure checks of a loaded model: the fitted arrays compiled code indexes, checked against the rest.

skops guards against code named in a file; these guard against numbers that would make compiled
code read or write out of bounds (tree nodes, encoder categories, column indices).
"""

from __future__ import annotations

from typing import Any

from reprokit.model.archives import (
    UntrustedFileError,
)


def _refuse(where: str, what: str) -> None:
    raise UntrustedFileError(f"{where}: {what}: not a model file this pipeline writes")


def _vector(value: Any, length: int) -> bool:
    import numpy as np

    return isinstance(value, np.ndarray) and value.shape == (length,)


def _check_nodes(left, right, feature, is_leaf, n_features: int, where: str) -> None:
    """Children after their parent and inside the array, features inside the input: the
    compiled prediction code follows these indices without bounds checks."""
    import numpy as np

    count = len(left)
    index = np.arange(count)
    inner = ~is_leaf
    bad = (
        (count == 0)
        or np.any(inner & ((left <= index) | (left >= count) | (right <= index) | (right >= count)))
        or np.any(inner & ((feature < 0) | (feature >= n_features)))
    )
    if bad:
        raise UntrustedFileError(f"{where}: a tree in it has node or feature indices out of range")


def _check_encoder(encoder, where: str) -> None:
    """A one-hot encoder's cached layout, recomputed: compiled code sizes its output by it."""
    import numpy as np

    n = encoder.n_features_in_
    if type(n) is not int or encoder._infrequent_enabled or len(encoder.categories_) != n:
        _refuse(where, "an encoder with infrequent categories or the wrong number of category lists")
    if any(not isinstance(c, np.ndarray) or c.ndim != 1 for c in encoder.categories_):
        _refuse(where, "an encoder whose categories are not flat arrays")
    for categories in encoder.categories_:
        # Numeric categories are looked up with a binary search that trusts their order: out of
        # order, a value lands one column past the output (scikit-learn sorts them when fitting).
        if categories.dtype.kind in "biuf" and not bool(np.all(categories[1:] > categories[:-1])):
            _refuse(where, "an encoder whose numeric categories are not in increasing order")
        if categories.dtype.kind not in "biufOU":
            _refuse(where, f"an encoder with categories of dtype {categories.dtype}")
    for drops in (encoder.drop_idx_, encoder._drop_idx_after_grouping):
        if drops is None:
            continue
        if (
            not _vector(drops, n)
            or drops.dtype.kind not in "iuO"
            or any(
                d is not None and (not isinstance(d, (int, np.integer)) or not 0 <= int(d) < len(c))
                for d, c in zip(drops, encoder.categories_, strict=True)
            )
        ):
            _refuse(where, "an encoder that drops categories it does not have")
    widths = encoder._n_features_outs  # transform does list arithmetic on it: a list of ints, exactly
    if type(widths) is not list or any(type(w) is not int for w in widths):
        _refuse(where, "an encoder whose cached output widths are not a list of integers")
    if widths != list(encoder._compute_n_features_outs()):
        _refuse(where, "an encoder whose output width does not follow from its categories")


def _check_step(step, where: str) -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    n = step.n_features_in_
    if type(n) is not int:
        _refuse(where, "a feature step whose input width is not an integer")
    if type(step) is SimpleImputer:
        if not _vector(step.statistics_, n):
            _refuse(where, "an imputer with the wrong number of fill values")
        if step.add_indicator or getattr(step, "indicator_", None) is not None:
            _refuse(where, "an imputer with a missing-value indicator, which this pipeline never builds")
    elif type(step) is StandardScaler:
        if any(v is not None and not _vector(v, n) for v in (step.mean_, step.scale_, step.var_)):
            _refuse(where, "a scaler with the wrong number of means or scales")
    elif type(step) is OneHotEncoder:
        _check_encoder(step, where)
    else:
        _refuse(where, f"a {type(step).__name__} among the feature steps")


def check_transformer(transformer, where: str) -> int:
    """A `ColumnTransformer` of the shape `featurize` builds; returns its output width."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if type(transformer) is not ColumnTransformer:
        _refuse(where, f"a {type(transformer).__name__} where the feature transformer belongs")
    if transformer.n_jobs not in (None, 1):
        _refuse(where, "a transformer that runs its own parallel jobs")
    for _, part, _ in transformer.transformers_:
        if isinstance(part, str):
            if part != "drop":
                _refuse(where, f"a {part!r} column group")
            continue
        steps = [step for _, step in part.steps] if type(part) is Pipeline else [part]
        for step in steps:
            _check_step(step, where)
    try:
        return len(transformer.get_feature_names_out())
    except Exception as exc:  # an inconsistent state that Python code notices
        raise UntrustedFileError(f"{where}: the feature transformer is inconsistent ({exc})") from None


def check_estimator(model, where: str, n_features: int | None = None) -> None:
    """One of the model kinds `train` builds, with arrays shaped as fitting shapes them and
    trees whose indices stay in range."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    n = model.n_features_in_ if hasattr(model, "n_features_in_") else None
    if type(n) is not int:
        _refuse(where, "a model whose input width is not an integer")
    if n_features is not None and n != n_features:
        _refuse(where, f"a model expecting {n} features after a transformer making {n_features}")
    if len(getattr(model, "classes_", ())) != 2:
        _refuse(where, "a model that is not a fitted binary classifier")
    if type(model) is LogisticRegression:
        if model.coef_.shape != (1, n) or model.intercept_.shape != (1,):
            _refuse(where, "a logistic regression with coefficients of the wrong shape")
    elif type(model) is HistGradientBoostingClassifier:
        from sklearn._loss._loss import CyHalfBinomialLoss
        from sklearn._loss.link import LogitLink
        from sklearn._loss.loss import HalfBinomialLoss

        loss = model._loss
        if type(loss) is not HalfBinomialLoss or type(loss.closs) is not CyHalfBinomialLoss:
            _refuse(where, "gradient boosting with a loss other than the binomial one it is fitted with")
        if type(loss.link) is not LogitLink:
            _refuse(where, "gradient boosting with a link other than the logit")
        categorical = model.is_categorical_
        if model._preprocessor is not None or (categorical is not None and categorical.any()):
            _refuse(where, "native categorical features, which this pipeline never builds")
        if model.n_trees_per_iteration_ != 1 or np.shape(model._baseline_prediction) != (1, 1):
            _refuse(where, "gradient boosting shaped for more than two classes")
        for predictors in model._predictors:
            if len(predictors) != 1:
                _refuse(where, "gradient boosting with several trees per iteration")
            nodes = predictors[0].nodes
            if not isinstance(nodes, np.ndarray) or nodes.ndim != 1 or nodes.dtype != PREDICTOR_RECORD_DTYPE:
                _refuse(where, "a gradient-boosting tree whose node records are not laid out as scikit-learn's")
            if nodes["is_categorical"].any():
                _refuse(where, "a categorical split, which this pipeline never builds")
            _check_nodes(nodes["left"], nodes["right"], nodes["feature_idx"], nodes["is_leaf"] != 0, n, where)
    elif type(model) is RandomForestClassifier:
        if model.n_jobs not in (None, 1):
            _refuse(where, "a forest that runs its own parallel jobs (train saves it with none)")
        if model.n_outputs_ != 1:
            _refuse(where, "a forest with several outputs")
        for tree_model in model.estimators_:
            if type(tree_model) is not DecisionTreeClassifier or tree_model.n_features_in_ != n:
                _refuse(where, "a forest member that is not a tree over the same features")
            tree = tree_model.tree_
            shaped = tree.n_outputs == 1 and tree.max_n_classes == 2 and list(tree.n_classes) == [2]
            if not shaped or tree.n_features != n or tree.value.shape != (tree.node_count, 1, 2):
                _refuse(where, "a tree whose shape differs from its forest's")
            leaf = tree.children_left == -1
            if ((tree.children_right == -1) != leaf).any():
                raise UntrustedFileError(f"{where}: a tree in it has half-leaf nodes")
            _check_nodes(tree.children_left, tree.children_right, tree.feature, leaf, n, where)
    else:
        _refuse(where, f"a {type(model).__name__} as the model")


def check_inputs_step(step, transformer, where: str) -> None:
    """The package's `inputs` step exactly as `reprokit.model.estimators.served_pipeline` builds it:
    `pandas.DataFrame` called with the transformer's own columns and the object dtype."""
    import pandas as pd
    from sklearn.preprocessing import FunctionTransformer

    expected = FunctionTransformer(
        pd.DataFrame, kw_args={"columns": [str(name) for name in transformer.feature_names_in_], "dtype": object}
    ).get_params()
    if type(step) is not FunctionTransformer or step.get_params() != expected:
        _refuse(where, "an inputs step other than the one the package builds")


def check_model(obj: Any, where: str) -> None:
    """The loaded object is one of the three things this pipeline saves (a feature
    transformer, a model, or the package's pipeline of both), with every fitted array that
    compiled code indexes checked against the rest. skops guards against code named in the
    file; this guards against numbers that make compiled code read or write out of bounds."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if type(obj) is Pipeline:
        names = [name for name, _ in obj.steps]
        if names not in (["inputs", "features", "model"], ["features", "model"]):
            _refuse(where, "a pipeline whose steps are not (inputs,) features then model")
        width = check_transformer(obj.named_steps["features"], where)
        if names[0] == "inputs":
            check_inputs_step(obj.named_steps["inputs"], obj.named_steps["features"], where)
        check_estimator(obj.named_steps["model"], where, width)
    elif type(obj) is ColumnTransformer:
        check_transformer(obj, where)
    else:
        check_estimator(obj, where)
