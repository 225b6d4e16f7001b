"""The scoring service's settings: `reprokit serve`'s command line over its `REPROKIT_SERVE_*`
environment (a Kubernetes ConfigMap's way in), every value checked into one `Settings`, which
the service hands to its worker processes (`SETTINGS_ENV`). Imports nothing of the web stack."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re

SETTINGS_ENV = "REPROKIT_SERVE_SETTINGS"  # the checked settings, as JSON, for worker processes
READY_DIR_ENV = "REPROKIT_SERVE_READY_DIR"  # where workers > 1 note that they have loaded the model


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str = "models/package"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    n_threads: int = 1
    max_batch: int = 64
    max_wait_ms: float = 2.0
    max_body_bytes: int = 1 << 20
    max_records: int = 10_000
    poll_seconds: float = 10.0
    shadow: str | None = None
    canary: str | None = None  # the alias served to a share of requests (reprokit.model.split)
    graceful_seconds: float = 30.0
    # How long an idle keep-alive connection stays open: longer than the idle timeout of a proxy
    # that pools connections to the service (ingress-nginx and AWS ALB: 60 s; set it above yours),
    # so that the proxy closes first. With uvicorn's 5 s, a request sent as the service closed the
    # connection went unanswered.
    keep_alive_seconds: float = 90.0
    access_log: str = "off"  # the level of one line per request: off, debug, info or warning


ENV_PREFIX = "REPROKIT_SERVE_"


def build_parser(
    model_default: str = Settings.model, exit_on_error: bool = True, description: str | None = None
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reprokit serve",
        description=description,
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        exit_on_error=exit_on_error,
    )
    parser.add_argument("model", nargs="?", default=model_default, help="package directory or models:/<name>@<alias>")
    parser.add_argument("--host", default=Settings.host, help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=Settings.port)
    parser.add_argument("--workers", type=int, default=Settings.workers, help="server processes")
    parser.add_argument("--params", default="params.yaml", help="serve.n_threads is the thread budget (if present)")
    parser.add_argument(
        "--threads", type=int, default=None, help="thread budget per worker (default: params' serve.n_threads, else 1)"
    )
    parser.add_argument("--max-batch", type=int, default=Settings.max_batch, help="rows per model call")
    parser.add_argument("--max-wait-ms", type=float, default=Settings.max_wait_ms, help="longest wait for a batch")
    parser.add_argument("--max-body-bytes", type=int, default=Settings.max_body_bytes)
    parser.add_argument("--max-records", type=int, default=Settings.max_records, help="records per request")
    parser.add_argument("--poll-seconds", type=float, default=Settings.poll_seconds, help="alias check interval")
    parser.add_argument("--shadow", default=None, help="alias scored beside the served model (e.g. challenger)")
    parser.add_argument(
        "--canary",
        default=None,
        help="alias served to a share of requests: its version's canary_weight tag in the registry (e.g. canary)",
    )
    parser.add_argument("--graceful-seconds", type=float, default=Settings.graceful_seconds)
    parser.add_argument(
        "--keep-alive-seconds",
        type=float,
        default=Settings.keep_alive_seconds,
        help="how long an idle connection stays open: above your proxy's idle timeout (default: %(default)g)",
    )
    parser.add_argument(
        "--access-log",
        choices=("off", "debug", "info", "warning"),
        default=Settings.access_log,
        help="log one line per request (method, route, status, milliseconds) at this level (default: off)",
    )
    return parser


ENVIRONMENT_HELP = f"""\
Every option can also come from the environment (a Kubernetes ConfigMap's way in, see deploy/):
{ENV_PREFIX}<OPTION> with the option's name in capitals and `_` for `-`, e.g. {ENV_PREFIX}WORKERS=2,
{ENV_PREFIX}MAX_WAIT_MS=2; {ENV_PREFIX}MODEL for MODEL. The command line wins over the environment."""


def from_environment(environ) -> tuple[str | None, list[str]]:
    """MODEL and the options the environment sets (`REPROKIT_SERVE_<OPTION>`; an empty value is
    unset), each checked alone so that a bad value is one error naming its variable. Unknown
    `REPROKIT_SERVE_*` names are refused, so that a misspelt setting does not pass unnoticed; the
    two the service sets for its own worker processes are its own."""
    checker = build_parser(exit_on_error=False)
    options = [dest for dest in vars(checker.parse_args([])) if dest != "model"]  # each `--x-y` has dest `x_y`
    flags = {f"{ENV_PREFIX}{dest.upper()}": f"--{dest.replace('_', '-')}" for dest in options}
    args: list[str] = []
    for variable in sorted(name for name in environ if name.startswith(ENV_PREFIX)):
        value = environ[variable]
        if variable in (f"{ENV_PREFIX}MODEL", SETTINGS_ENV, READY_DIR_ENV) or value == "":
            continue
        if SERVICE_LINK.fullmatch(variable) and (variable not in flags or "://" in value):
            raise argparse.ArgumentTypeError(
                f"{variable}={value[:40]!r} looks like a Kubernetes service link (a Service named reprokit-serve "
                "in the namespace): set `enableServiceLinks: false` in the pod spec, as deploy/deployment.yaml does"
            )
        if variable not in flags:
            known = ", ".join(sorted([f"{ENV_PREFIX}MODEL", *flags]))
            raise argparse.ArgumentTypeError(f"{variable}: not a setting of reprokit serve (known: {known})")
        setting = f"{flags[variable]}={value}"  # one word: a value may start with `-`
        try:
            checker.parse_args([setting])
        except argparse.ArgumentError as exc:
            raise argparse.ArgumentTypeError(f"{variable}={value[:40]!r}: {exc.message}") from None
        args.append(setting)
    return environ.get(f"{ENV_PREFIX}MODEL") or None, args


# The variables Kubernetes gives a pod for each Service of its namespace (`<NAME>_SERVICE_HOST`,
# `<NAME>_PORT=tcp://...`, ...) when service links are on: for a Service named reprokit-serve they
# share this prefix, and `REPROKIT_SERVE_PORT` would be its address.
SERVICE_LINK = re.compile(rf"{ENV_PREFIX}(SERVICE_(HOST|PORT)\w*|PORT(_\d+_(TCP|UDP|SCTP)\w*)?)")


def parse_args(argv: list[str] | None = None, environ=None, description: str | None = None) -> Settings:
    """The service's settings from `argv` (default: the command line) over `environ`'s
    `REPROKIT_SERVE_*` (default: the process environment), every value checked; a bad one is
    argparse's usage error naming it (exit 2). `description`: the help text."""
    import sys

    environ = os.environ if environ is None else environ
    try:
        model, env_args = from_environment(environ)
    except argparse.ArgumentTypeError as exc:
        build_parser(description=description).error(str(exc))
    parser = build_parser(model or Settings.model, description=description)
    args = parser.parse_args([*env_args, *(sys.argv[1:] if argv is None else argv)])
    from reprokit.core.config import ConfigError
    from reprokit.model.scoring_model import thread_budget_setting

    try:
        n_threads = thread_budget_setting(args.threads, args.params, "serve")
    except ConfigError as exc:
        parser.error(str(exc))
    if not args.model.startswith("models:/") and not os.path.isfile(os.path.join(args.model, "MLmodel")):
        parser.error(
            f"{args.model}: not a package directory (no MLmodel); run `dvc repro` or give models:/<name>@<alias>"
        )
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    for name, value, low in (
        ("--workers", args.workers, 1),
        ("--threads", n_threads, 1),
        ("--max-batch", args.max_batch, 1),
        ("--max-body-bytes", args.max_body_bytes, 1),
        ("--max-records", args.max_records, 1),
    ):
        if value < low:
            parser.error(f"{name} must be at least {low}")
    for name, value in (
        ("--max-wait-ms", args.max_wait_ms),
        ("--poll-seconds", args.poll_seconds),
        ("--graceful-seconds", args.graceful_seconds),
    ):
        if not math.isfinite(value) or value < 0:
            parser.error(f"{name} must be a finite number of at least 0")
    # 0 would close every connection right after its answer, without a `Connection: close`:
    # the race a long keep-alive avoids, on every request.
    if not math.isfinite(args.keep_alive_seconds) or args.keep_alive_seconds <= 0:
        parser.error("--keep-alive-seconds must be a finite number above 0")
    from reprokit.model.split import ALIAS

    served = args.model.split("@", 1)[1] if "@" in args.model else None
    for name, alias in (("--shadow", args.shadow), ("--canary", args.canary)):
        if alias and not args.model.startswith("models:/"):
            parser.error(f"{name} needs a registry model: models:/<name>@<alias>")
        if alias and not ALIAS.fullmatch(alias):
            parser.error(f"{name} {alias[:80]!r}: an alias is letters, digits, _ and -")
        if alias and alias == served:
            parser.error(f"{name} {alias}: the alias the service serves as its stable model")
    return Settings(
        model=args.model,
        host=args.host,
        port=args.port,
        workers=args.workers,
        n_threads=n_threads,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_body_bytes=args.max_body_bytes,
        max_records=args.max_records,
        poll_seconds=args.poll_seconds,
        shadow=args.shadow,
        canary=args.canary,
        graceful_seconds=args.graceful_seconds,
        keep_alive_seconds=args.keep_alive_seconds,
        access_log=args.access_log,
    )
