"""The shared core: what every other package builds on, and nothing else of reprokit.

Params and the dataset contract (config, contract), editing params.yaml in place (yamledit), reading sources, writing artifacts, the one
path rule (paths), redaction, errors and the command runner (errors, running), metrics, drift
statistics, figures and the runtime lock. Imports only the standard library, third-party
libraries and other core modules.
"""
