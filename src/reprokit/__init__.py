"""Reproducible tabular ML pipeline stages."""
