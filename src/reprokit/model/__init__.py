"""The model's building blocks: the estimators the pipeline builds, loading and running them under
the thread budget (inference, compiled), the input policy of a scored record (scoring), the MLflow
pyfunc model (scoring_model) and the checks an untrusted model file passes before it is opened
(trust, allowlist). Imports `reprokit.core` only.
"""
