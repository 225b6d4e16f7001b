"""The registry and release: run tracking in MLflow (tracking), the release gate (gate) and the
registry's aliases (registry: promote, rollback, show), and the automated canary rollout (rollout,
its command line rollout_command, its Prometheus queries prometheus). Imports `reprokit.core` and
`reprokit.model`; never a stage, serving or monitoring.
"""
