"""The trust allowlist: `reprokit.model.derivation.derive_placements()`, written by `reprokit allowlist`.

Generated, do not edit: tests/code/test_trust.py fails while it differs from the derivation
(after a new model kind or a library upgrade, run `reprokit allowlist`). With other
library versions than VERSIONS, `reprokit.model.derivation` derives the allowlist itself."""

# ruff: noqa: E501
# fmt: off
VERSIONS = {'numpy': '2.4.6', 'scikit-learn': '1.9.1', 'skops': '0.16.0'}

PLACEMENTS = frozenset(
    {
        ('', 'sklearn.compose._column_transformer.ColumnTransformer', 'ObjectNode'),
        ('', 'sklearn.ensemble._forest.RandomForestClassifier', 'ObjectNode'),
        ('', 'sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier', 'ObjectNode'),
        ('', 'sklearn.linear_model._logistic.LogisticRegression', 'ObjectNode'),
        ('', 'sklearn.pipeline.Pipeline', 'ObjectNode'),
        ('/content/content/_bin_mapper', 'sklearn.ensemble._hist_gradient_boosting.binning._BinMapper', 'ObjectNode'),
        ('/content/content/_feature_subsample_rng', 'numpy.random._generator.Generator', 'RandomGeneratorNode'),
        ('/content/content/_label_encoder', 'sklearn.preprocessing._label.LabelEncoder', 'ObjectNode'),
        ('/content/content/_loss', 'sklearn._loss.loss.HalfBinomialLoss', 'ObjectNode'),
        ('/content/content/_loss/content/content/closs', 'sklearn._loss._loss.CyHalfBinomialLoss', 'LossNode'),
        ('/content/content/_loss/content/content/interval_y_pred', 'sklearn._loss.link.Interval', 'ObjectNode'),
        ('/content/content/_loss/content/content/interval_y_true', 'sklearn._loss.link.Interval', 'ObjectNode'),
        ('/content/content/_loss/content/content/link', 'sklearn._loss.link.LogitLink', 'ObjectNode'),
        ('/content/content/_predictors/content/*/content/*', 'sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor', 'ObjectNode'),
        ('/content/content/estimator', 'sklearn.tree._classes.DecisionTreeClassifier', 'ObjectNode'),
        ('/content/content/estimator_', 'sklearn.tree._classes.DecisionTreeClassifier', 'ObjectNode'),
        ('/content/content/estimators_/content/*', 'sklearn.tree._classes.DecisionTreeClassifier', 'ObjectNode'),
        ('/content/content/estimators_/content/*/content/content/tree_', 'sklearn.tree._tree.Tree', 'TreeNode'),
        ('/content/content/steps/content/*/content/1', 'sklearn.compose._column_transformer.ColumnTransformer', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1', 'sklearn.ensemble._forest.RandomForestClassifier', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1', 'sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1', 'sklearn.linear_model._logistic.LogisticRegression', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1', 'sklearn.preprocessing._function_transformer.FunctionTransformer', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/_bin_mapper', 'sklearn.ensemble._hist_gradient_boosting.binning._BinMapper', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/_feature_subsample_rng', 'numpy.random._generator.Generator', 'RandomGeneratorNode'),
        ('/content/content/steps/content/*/content/1/content/content/_label_encoder', 'sklearn.preprocessing._label.LabelEncoder', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/_loss', 'sklearn._loss.loss.HalfBinomialLoss', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/_loss/content/content/closs', 'sklearn._loss._loss.CyHalfBinomialLoss', 'LossNode'),
        ('/content/content/steps/content/*/content/1/content/content/_loss/content/content/interval_y_pred', 'sklearn._loss.link.Interval', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/_loss/content/content/interval_y_true', 'sklearn._loss.link.Interval', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/_loss/content/content/link', 'sklearn._loss.link.LogitLink', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/_predictors/content/*/content/*', 'sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/estimator', 'sklearn.tree._classes.DecisionTreeClassifier', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/estimator_', 'sklearn.tree._classes.DecisionTreeClassifier', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/estimators_/content/*', 'sklearn.tree._classes.DecisionTreeClassifier', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/estimators_/content/*/content/content/tree_', 'sklearn.tree._tree.Tree', 'TreeNode'),
        ('/content/content/steps/content/*/content/1/content/content/func', 'pandas.DataFrame', 'TypeNode'),
        ('/content/content/steps/content/*/content/1/content/content/kw_args/content/dtype', 'builtins.object', 'TypeNode'),
        ('/content/content/steps/content/*/content/1/content/content/transformers/content/*/content/1', 'sklearn.pipeline.Pipeline', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/transformers/content/*/content/1', 'sklearn.preprocessing._encoders.OneHotEncoder', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/transformers/content/*/content/1/content/content/steps/content/*/content/1', 'sklearn.impute._base.SimpleImputer', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/transformers/content/*/content/1/content/content/steps/content/*/content/1', 'sklearn.preprocessing._data.StandardScaler', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/transformers/content/*/content/1/content/content/steps/content/*/content/1', 'sklearn.preprocessing._encoders.OneHotEncoder', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/transformers_/content/*/content/1', 'sklearn.pipeline.Pipeline', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/transformers_/content/*/content/1', 'sklearn.preprocessing._encoders.OneHotEncoder', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/transformers_/content/*/content/1/content/content/steps/content/*/content/1', 'sklearn.impute._base.SimpleImputer', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/transformers_/content/*/content/1/content/content/steps/content/*/content/1', 'sklearn.preprocessing._data.StandardScaler', 'ObjectNode'),
        ('/content/content/steps/content/*/content/1/content/content/transformers_/content/*/content/1/content/content/steps/content/*/content/1', 'sklearn.preprocessing._encoders.OneHotEncoder', 'ObjectNode'),
        ('/content/content/transformers/content/*/content/1', 'sklearn.pipeline.Pipeline', 'ObjectNode'),
        ('/content/content/transformers/content/*/content/1', 'sklearn.preprocessing._encoders.OneHotEncoder', 'ObjectNode'),
        ('/content/content/transformers/content/*/content/1/content/content/steps/content/*/content/1', 'sklearn.impute._base.SimpleImputer', 'ObjectNode'),
        ('/content/content/transformers/content/*/content/1/content/content/steps/content/*/content/1', 'sklearn.preprocessing._data.StandardScaler', 'ObjectNode'),
        ('/content/content/transformers/content/*/content/1/content/content/steps/content/*/content/1', 'sklearn.preprocessing._encoders.OneHotEncoder', 'ObjectNode'),
        ('/content/content/transformers_/content/*/content/1', 'sklearn.pipeline.Pipeline', 'ObjectNode'),
        ('/content/content/transformers_/content/*/content/1', 'sklearn.preprocessing._encoders.OneHotEncoder', 'ObjectNode'),
        ('/content/content/transformers_/content/*/content/1/content/content/steps/content/*/content/1', 'sklearn.impute._base.SimpleImputer', 'ObjectNode'),
        ('/content/content/transformers_/content/*/content/1/content/content/steps/content/*/content/1', 'sklearn.preprocessing._data.StandardScaler', 'ObjectNode'),
        ('/content/content/transformers_/content/*/content/1/content/content/steps/content/*/content/1', 'sklearn.preprocessing._encoders.OneHotEncoder', 'ObjectNode'),
    }
)
