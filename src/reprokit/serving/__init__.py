"""Serving: the scoring service (serve) and the batch scorer (score). Imports `reprokit.core` and
`reprokit.model`; never a stage, the monitor or the release commands.
"""
