"""Check that a DVC remote can be used, with a message that says what to fix.

`dvc push` and `dvc pull` report a wrong password as "unexpected error - Forbidden";
`reprokit remote check [-r NAME]` names the remote, its URL and endpoint,
and the fix: server not running, credentials rejected or missing, bucket or folder
missing. It reads the same configuration as DVC (`.dvc/config` and the git-ignored
`.dvc/config.local`), so it checks exactly what `dvc push` would use. Exit 0 when the
remote answers, 1 otherwise: CI uses it to choose between `dvc pull` and reproducing.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("reprokit.remote")


class RemoteError(RuntimeError):
    """The remote cannot be used as configured."""


def remote_config(name: str | None, repo) -> tuple[str, dict]:
    """The name and merged configuration of remote `name` (default: `core.remote`) of a DVC `Repo`."""
    config = repo.config
    name = name or config["core"].get("remote")
    if not name:
        raise RemoteError("no remote given and no default remote (`dvc remote default NAME`)")
    if name not in config["remote"]:
        known = ", ".join(sorted(config["remote"])) or "none"
        raise RemoteError(f"no remote named {name!r} in .dvc/config (configured: {known})")
    return name, dict(config["remote"][name])


def check(name: str | None = None, root: str | Path = ".") -> str:
    """Contact the remote; return a one-line description or raise `RemoteError`."""
    from dvc.repo import Repo

    repo = Repo(str(root))
    name, config = remote_config(name, repo)
    url = config["url"]
    endpoint = config.get("endpointurl", "the default endpoint")
    where = f"remote {name!r} ({url})"
    try:
        odb = repo.cloud.get_remote_odb(name)
        fs, path = odb.fs, odb.path
        if fs.protocol == "local":
            target = Path(path)
            for parent in [target, *target.parents]:
                if parent.exists():
                    if not parent.is_dir():
                        raise RemoteError(f"{where}: {parent} is a file, not a folder: fix the url")
                    break
            return f"{where}: local folder {'exists' if target.is_dir() else 'will be created on first push'}"
        bucket = path.split("/", 1)[0]
        fs.ls(bucket)
    except RemoteError:
        raise
    except PermissionError:
        raise RemoteError(
            f"{where}: the credentials were rejected by {endpoint} (403 Forbidden). Set AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY, or `dvc remote modify --local {name} access_key_id ...` "
            "(credentials never go into a committed file)"
        ) from None
    except FileNotFoundError:
        raise RemoteError(
            f"{where}: bucket {url.split('/')[2]!r} does not exist at {endpoint}: create it or fix the url"
        ) from None
    except Exception as exc:  # botocore's connection and credential errors share no base class with OSError
        kind = type(exc).__name__
        if kind == "NoCredentialsError":
            raise RemoteError(
                f"{where}: no credentials found. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                f"or `dvc remote modify --local {name} access_key_id ...`"
            ) from None
        if "Connect" in kind or "Timeout" in kind:
            raise RemoteError(
                f"{where}: cannot connect to {endpoint}: is the server running? "
                f"Fix it with `dvc remote modify --local {name} endpointurl URL`"
            ) from None
        raise RemoteError(f"{where}: {kind}: {exc}") from None
    return f"{where}: reachable at {endpoint}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check_cmd = sub.add_parser("check", help="contact a remote and say what to fix if it cannot be used")
    check_cmd.add_argument("-r", "--remote", help="remote name (default: the default remote)")
    args = parser.parse_args(argv)
    from reprokit.core.redaction import configure_logging

    configure_logging("%(message)s")
    try:
        log.info(check(args.remote))
    except RemoteError as exc:
        log.error("ERROR: %s", exc)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
