"""Monitoring: drift of a batch against the training data (monitor, on one machine or a Dask
cluster), alerts to a webhook, the retraining pull request (retrain) and the drift trials.
Imports `reprokit.core` and `reprokit.model`; never a stage, serving or the release commands.
"""
