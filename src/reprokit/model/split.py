"""The traffic split between the stable model and a canary, as the MLflow registry holds it.

The registry is the control plane: the canary is an alias (`canary` by default) on a version,
and its share of requests is that version's `canary_weight` tag (percent, 0-100); an optional
`canary_segment` tag (`header=value`) holds the split to requests carrying that header value,
as an A/B test of one segment. Every service instance reads the same alias and tags, so they all
agree within one poll interval; `reprokit canary` and `reprokit rollout` write them.

A request's routing key is hashed, with the canary's version, to one of BUCKETS buckets; buckets
below the weight go to the canary. The same key always meets the same version for a given weight,
and raising the weight only moves keys from stable to canary, never back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re

CANARY = "canary"
WEIGHT_TAG = "canary_weight"
SEGMENT_TAG = "canary_segment"
BUCKETS = 10_000  # weights to 0.01%
ROLES = ("stable", "canary")

ROUTE_HEADER = "x-model-route"  # `canary` or `stable`: forces the route (internal testers)
KEY_HEADER = "x-routing-key"  # the routing key; else the first record's id field, else random
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
_HEADER_VALUE = re.compile(r"[!-~]{1,200}")  # visible ASCII: what a header carries unchanged (no spaces)
ALIAS = re.compile(r"[A-Za-z0-9_-]{1,255}")  # a registry alias


class SplitError(ValueError):
    """A weight or segment that cannot be a traffic split (named in the message)."""


@dataclasses.dataclass(frozen=True)
class Split:
    """The canary's version, its share in buckets (0..BUCKETS) and its segment (header, value)."""

    version: str | None = None
    buckets: int = 0
    segment: tuple[str, str] | None = None

    @property
    def weight(self) -> float:
        """The share of requests in percent."""
        return self.buckets * 100 / BUCKETS

    def in_segment(self, headers) -> bool:
        """Whether a request with these headers (a case-insensitive mapping; of a repeated
        header, the first value) takes part: its value equals the segment's, case and all."""
        return self.segment is None or headers.get(self.segment[0]) == self.segment[1]

    def to_canary(self, key: str | None) -> bool:
        """Whether the request of routing key `key` (None: a random one) goes to the canary."""
        if self.buckets <= 0:
            return False
        if self.buckets >= BUCKETS:
            return True
        return bucket(key, self.version or "") < self.buckets


def bucket(key: str | None, salt: str) -> int:
    """The bucket of a routing key (None: a random one), the same in every process and machine."""
    import os

    data = os.urandom(8) if key is None else f"{salt}\0{key}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") % BUCKETS


def weight_buckets(value: str | float) -> int:
    """Buckets of a weight in percent ("5", 12.5): a finite number from 0 to 100."""
    try:
        percent = float(value)
    except (TypeError, ValueError):
        raise SplitError(f"canary weight {str(value)[:40]!r} is not a number of percent (0-100)") from None
    if not math.isfinite(percent) or not 0 <= percent <= 100:
        raise SplitError(f"canary weight {str(value)[:40]!r} must be between 0 and 100 (percent)")
    return round(percent * BUCKETS / 100)


def parse_segment(value: str | None) -> tuple[str, str] | None:
    """`header=value` as (lower-case header name, value); empty or None is no segment."""
    if not value:
        return None
    name, sep, wanted = value.partition("=")
    if not sep or not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(wanted):
        raise SplitError(
            f"canary segment {value[:80]!r}: expected HEADER=VALUE (visible ASCII, no spaces), "
            "e.g. x-customer-tier=premium"
        )
    return name.lower(), wanted


def split_of(version: str | None, tags: dict[str, str]) -> Split:
    """The split a canary version's tags describe; a bad tag (written by hand) is no traffic."""
    if version is None:
        return Split()
    try:
        return Split(str(version), weight_buckets(tags.get(WEIGHT_TAG, "0")), parse_segment(tags.get(SEGMENT_TAG)))
    except SplitError:
        return Split(str(version))


def read_split(client, name: str, alias: str = CANARY) -> Split:
    """The split the registry holds now: no alias is no canary. Registry errors propagate."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return Split()
        raise
    return split_of(str(version.version), dict(version.tags or {}))
