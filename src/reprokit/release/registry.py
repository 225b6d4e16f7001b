"""Move the `champion` alias, on the gate's word, and back; serve a canary to a share of requests.

    reprokit registry show
    reprokit promote [--version N|challenger] --reason "..." [--by NAME]
    reprokit registry rollback --reason "..." [--by NAME]
    reprokit canary VERSION --weight PERCENT [--segment HEADER=VALUE] --reason "..."
    reprokit canary --weight PERCENT --reason "..."      (the current canary's share)
    reprokit canary --stop --reason "..."

`promote` moves `champion` to a version only if its release gate passed (the
`gate_passed` tag that `reprokit gate` sets), and remembers the version it
replaces. `rollback` moves `champion` back to that previous version. Both record who,
why and when as version tags. MLflow 3 aliases and tags: no deprecated stages.

`canary` points the `canary` alias at a version whose gate passed and sets its share of
requests (`canary_weight`, percent) and optional segment (`canary_segment`): every service
started with `--canary canary` follows them within its poll interval (reprokit.model.split).
`--stop` sets the weight to 0, then removes the alias.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import logging
import os

from reprokit.core.errors import StageError
from reprokit.core.running import add_debug_option, run_stage
from reprokit.model import split
from reprokit.release import tracking

log = logging.getLogger("reprokit.registry")

ROLLOUT_STATE = "rollout_state"  # a version tag `reprokit rollout` keeps (reprokit.release.rollout)
ROLLOUT_ACTIVE = ("running", "held", "rolling_back")


def _client(params_file: str, contract_file: str):
    params = tracking.settings(params_file, contract_file)
    if not params.enabled:
        raise StageError("tracking.enabled is false in params.yaml: there is no registry to change")
    mlflow, _ = tracking.open_store(params)
    return mlflow.MlflowClient(), params.registered_model


def aliases(client, name: str) -> dict[str, str]:
    """Aliases read from the registered model (the SQL store's version search omits them: mlflow#9783)."""
    from mlflow.exceptions import MlflowException

    try:
        return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise StageError(f"no registered model {name!r}: run `dvc repro` with tracking on first") from None
        raise tracking.unavailable(exc) from None


def _stamp(by: str, reason: str) -> dict[str, str]:
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"by": by, "reason": reason, "at": now}


def promote(client, name: str, version: str, by: str, reason: str, rollout: bool = False) -> str:
    """Make `version` (a number or an alias) the champion if its gate passed; return it. The
    canary of a rollout is promoted by the rollout's last step (`rollout=True`) alone.
    The alias moves before the record of who and why: a registry failing in between leaves
    a move without its record, never a record of a move that did not happen."""
    current = aliases(client, name)
    version = current.get(version, version)
    tags = gate_passed(client, name, version, "promote")
    if not rollout and current.get(split.CANARY) == version and tags.get(ROLLOUT_STATE) in ROLLOUT_ACTIVE:
        raise StageError(
            f"version {version} is being rolled out ({tags[ROLLOUT_STATE]}): its last step promotes it "
            f"(`reprokit rollout {version}` resumes it); `reprokit canary --stop` ends its canary first"
        )
    previous = current.get(tracking.CHAMPION)
    if previous == version:
        raise StageError(f"{name} version {version} is already the champion")
    measured = tags.get(tracking.GATE_CHAMPION_TAG, "none")
    if measured != (previous or "none"):
        raise StageError(
            f"refusing to promote {name} version {version}: its release gate was measured against champion "
            f"{measured}, but the champion is now {previous or 'none'}: run the gate again"
        )
    client.set_model_version_tag(name, version, "previous_champion", previous or "none")  # rollback's way back
    client.set_registered_model_alias(name, tracking.CHAMPION, version)
    for key, value in _stamp(by, reason).items():
        client.set_model_version_tag(name, version, f"promoted_{key}", value)
    if current.get(split.CANARY) == version:  # the champion now: all its traffic is the stable one
        end_canary(client, name, version)
    return version


def rollback(client, name: str, by: str, reason: str) -> str:
    """Move `champion` back to the version it replaced; return that version. The alias moves
    first, then the record (as `promote`)."""
    current = aliases(client, name).get(tracking.CHAMPION)
    if current is None:
        raise StageError(f"{name} has no champion to roll back")
    previous = client.get_model_version(name, current).tags.get("previous_champion", "none")
    if previous == "none":
        raise StageError(f"{name} version {current} replaced no earlier champion: nothing to roll back to")
    client.set_registered_model_alias(name, tracking.CHAMPION, previous)
    for key, value in _stamp(by, reason).items():
        client.set_model_version_tag(name, current, f"rolled_back_{key}", value)
        client.set_model_version_tag(name, previous, f"restored_{key}", value)
    if aliases(client, name).get(split.CANARY) == previous:
        end_canary(client, name, previous)
    return previous


def version_tags(client, name: str, version: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_model_version(name, version).tags or {})
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise StageError(f"{name} has no version {version!r}") from None
        raise tracking.unavailable(exc) from None


def gate_passed(client, name: str, version: str, action: str) -> dict[str, str]:
    """Refuse `action` on a version that does not exist or whose release gate did not pass;
    else its tags."""
    tags = version_tags(client, name, version)
    if tags.get("gate_passed") != "true":
        state = "failed" if tags.get("gate_passed") == "false" else "has not been run"
        raise StageError(
            f"refusing to {action} {name} version {version}: its release gate {state} "
            f"(`reprokit gate --version {version}` runs it; see metrics/gate.json)"
        )
    return tags


def set_canary(
    client,
    name: str,
    version: str | None,
    weight: str,
    segment: str | None,
    by: str,
    reason: str,
    rollout: bool = False,
) -> tuple[str, split.Split]:
    """Serve `version` (a number or an alias; None: the current canary) to `weight` percent of
    requests (of `segment`'s, if given). The tags are written before the alias moves, so a
    service never reads a new canary with an old version's weight. Returns the version and split.
    The split of a version being rolled out is the rollout's (`rollout=True`) alone."""
    buckets = split.weight_buckets(weight)
    parsed = split.parse_segment(segment)
    current = aliases(client, name)
    if version is None:
        version = current.get(split.CANARY)
        if version is None:
            raise StageError(f"{name} has no canary: give the version to serve as one")
    version = current.get(version, version)
    gate_passed(client, name, version, "serve as a canary")
    own = version_tags(client, name, version).get(ROLLOUT_STATE)
    if not rollout and own in ROLLOUT_ACTIVE:
        raise StageError(
            f"version {version} is being rolled out ({own}): its steps set its weight; "
            "`reprokit canary --stop` ends the rollout's canary"
        )
    if current.get(tracking.CHAMPION) == version:
        raise StageError(f"{name} version {version} is the champion: a canary is a version the champion is not")
    previous = current.get(split.CANARY)
    if previous is not None and previous != version:
        rolling = version_tags(client, name, previous).get(ROLLOUT_STATE)
        if rolling in ROLLOUT_ACTIVE:
            raise StageError(
                f"version {previous} is the canary of a rollout ({rolling}): `reprokit canary --stop` it first"
            )
        client.set_model_version_tag(name, previous, split.WEIGHT_TAG, "0")
    for key, value in _stamp(by, reason).items():
        client.set_model_version_tag(name, version, f"canary_{key}", value)
    tags = version_tags(client, name, version)
    new_weight = format(buckets * 100 / split.BUCKETS, "g")
    if previous == version and _buckets(tags) > buckets:  # a smaller share: before the segment changes
        client.set_model_version_tag(name, version, split.WEIGHT_TAG, new_weight)
    if previous != version and segment is None:
        segment = ""  # a version that becomes the canary does not inherit an old segment
    if parsed is not None:
        client.set_model_version_tag(name, version, split.SEGMENT_TAG, "=".join(parsed))
    elif segment is not None and split.SEGMENT_TAG in tags:
        client.delete_model_version_tag(name, version, split.SEGMENT_TAG)  # "" removes the segment
    client.set_model_version_tag(name, version, split.WEIGHT_TAG, new_weight)
    if previous != version:
        client.set_registered_model_alias(name, split.CANARY, version)
    return version, split.read_split(client, name)


def _buckets(tags: dict[str, str]) -> int:
    """The share a version's weight tag gives now (a bad tag gives none: `split.split_of`)."""
    try:
        return split.weight_buckets(tags.get(split.WEIGHT_TAG, "0"))
    except split.SplitError:
        return 0


def stop_canary(client, name: str, by: str, reason: str) -> str:
    """No more traffic to the canary: its weight 0 first, then the alias removed (and its
    segment, so that a later canary does not inherit it). Returns its version."""
    version = aliases(client, name).get(split.CANARY)
    if version is None:
        raise StageError(f"{name} has no canary to stop")
    end_canary(client, name, version)
    for key, value in _stamp(by, reason).items():
        client.set_model_version_tag(name, version, f"canary_stopped_{key}", value)
    return version


def end_canary(client, name: str, version: str) -> None:
    """Weight 0, the segment removed, then the canary alias removed from `version`."""
    client.set_model_version_tag(name, version, split.WEIGHT_TAG, "0")
    if split.SEGMENT_TAG in version_tags(client, name, version):
        client.delete_model_version_tag(name, version, split.SEGMENT_TAG)
    client.delete_registered_model_alias(name, split.CANARY)


def default_user() -> str:
    return os.environ.get("GITHUB_ACTOR") or getpass.getuser()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_option(parser)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--contract", default="dataset.yaml", help="names the registered model by default")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="aliases and every version's gate verdict")
    up = sub.add_parser("promote", help="make a version the champion (its gate must have passed)")
    up.add_argument("--version", default=tracking.CHALLENGER, help="version number or alias (default: challenger)")
    back = sub.add_parser("rollback", help="make the previous champion the champion again")
    canary = sub.add_parser(
        "canary",
        help="serve a version to a share of requests (services started with --canary canary)",
    )  # its example: `reprokit canary --help` (commands/cli.py)
    canary.add_argument("version", nargs="?", default=None, help="version number or alias (default: the canary)")
    canary.add_argument("--weight", default=None, help="percent of requests (0-100) the canary answers")
    canary.add_argument("--segment", default=None, help="HEADER=VALUE: only requests with it take part ('': all)")
    canary.add_argument("--stop", action="store_true", help="weight 0, then remove the canary alias")
    for command in (up, back, canary):
        command.add_argument("--reason", required=True)
        command.add_argument("--by", default=None, help="who (default: $GITHUB_ACTOR or the login name)")
    args = parser.parse_args(argv)
    if args.command == "canary":
        if args.stop and (args.version or args.weight is not None or args.segment is not None):
            canary.error("canary --stop takes no version, --weight or --segment")
        if not args.stop and args.weight is None:
            canary.error("canary needs --weight PERCENT (or --stop)")
        try:
            if args.weight is not None:
                split.weight_buckets(args.weight)
            split.parse_segment(args.segment)
        except split.SplitError as exc:
            canary.error(str(exc))

    def body() -> str:
        from mlflow.exceptions import MlflowException

        client, name = _client(args.params, args.contract)
        try:
            return command(client, name)
        except MlflowException as exc:  # a registry failing part-way: named as such, never a traceback
            raise tracking.unavailable(exc) from None

    def command(client, name: str) -> str:
        if args.command == "promote":
            version = promote(client, name, args.version, args.by or default_user(), args.reason)
            return f"{name} version {version} is now the champion"
        if args.command == "rollback":
            version = rollback(client, name, args.by or default_user(), args.reason)
            return f"{name} champion rolled back to version {version}"
        if args.command == "canary" and args.stop:
            version = stop_canary(client, name, args.by or default_user(), args.reason)
            return f"{name} version {version} is no longer a canary: all traffic to the champion"
        if args.command == "canary":
            version, now = set_canary(
                client, name, args.version, args.weight, args.segment, args.by or default_user(), args.reason
            )
            segment = f" of requests with {'='.join(now.segment)}" if now.segment else ""
            return f"{name} version {version} is the canary at {now.weight:g}%{segment}"
        current = aliases(client, name)
        for v in sorted(tracking.model_versions(client, name), key=lambda v: int(v.version)):
            marks = ", ".join(
                f"{a} {v.tags.get(split.WEIGHT_TAG, '0')}%" if a == split.CANARY else a
                for a, n in current.items()
                if n == str(v.version)
            )
            print(
                f"version {v.version}: gate {v.tags.get('gate_passed', 'not run')}"
                f"{' [' + marks + ']' if marks else ''}  commit {v.tags.get('git_commit', '?')[:8]}"
            )
        held = ", ".join(f"{alias} is version {number}" for alias, number in sorted(current.items()))
        return f"{name}: {held or 'no alias set'}"

    run_stage("registry", body, debug=args.debug)


if __name__ == "__main__":
    main()
