"""The commands a person runs that belong to no other role: the front door (`reprokit ...`, cli),
tuning, the pull-request report, remote checks, the reproducibility check and the contract
draft. The top layer: may import every other package; nothing imports it.
"""
