"""The registry and release: run tracking in MLflow (tracking), the release gate (gate) and the
registry's aliases (registry: promote, rollback, show). Imports `reprokit.core` and
`reprokit.model`; never a stage, serving or monitoring.
"""
