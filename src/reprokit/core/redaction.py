"""One home for redaction: what of a URL, a URI or a message may be shown in a log or an error.

A location can carry a secret in two places: its user information
(`postgresql://user:password@host/db`, `s3://key:secret@bucket/x`, `https://token@host/hook`)
and its query or fragment (a presigned URL's signature, a webhook's token). Both are dropped
wherever a location is shown; a local path is shown as it is. `redact_text` does the same
to every URL inside a longer text (an exception's message, a log line), and
`RedactingFormatter` applies it to every log line a command writes, tracebacks included.
"""

from __future__ import annotations

import logging
import re
import urllib.parse

# A URL inside free text: a scheme, `://`, then everything up to a blank, a quote or a bracket.
_URL = re.compile(r"""\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'"<>()\[\]{}`]+""")
SHOWN = "***"  # in place of a URL's user information


def redact(location: str) -> str:
    """`location` as it may be shown: a URL without its user, password, query and fragment
    (`***@` marks removed user information); a local path unchanged."""
    location = str(location)
    try:
        parts = urllib.parse.urlsplit(location)
        port = parts.port
    except ValueError:  # a malformed port or bracket: show the scheme only
        scheme = location.split(":", 1)[0]
        return f"{scheme}://{SHOWN}" if "://" in location else location
    if not parts.scheme or len(parts.scheme) == 1 or not location[len(parts.scheme) :].startswith(":"):
        return location  # a local path (or a Windows drive letter)
    if "@" not in parts.netloc and not parts.query and not parts.fragment and "?" not in location:
        return location
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    if port is not None:
        host += f":{port}"
    if "@" in parts.netloc:
        host = f"{SHOWN}@{host}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (`redact`); punctuation that ends a sentence or
    a clause after the URL (`at http://host:8080: refused`) is not part of it."""

    def shown(match: re.Match) -> str:
        url = match.group(0)
        end = len(url.rstrip(".,;:!?"))
        return redact(url[:end]) + url[end:]

    return _URL.sub(shown, str(text))


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """`exc` as one line an error message may quote: the first line of its message with every
    URL redacted, then cut at `limit` characters (redacted first, so that a cut never leaves
    part of a secret behind); its type's name when it has no message."""
    lines = str(exc).strip().splitlines()
    return redact_text(lines[0])[:limit] if lines else type(exc).__name__


def is_redacted(location: str) -> bool:
    """Whether `location` shows nothing `redact` would hide."""
    return redact(location) == location


# Environment variables whose values are secrets whatever they look like.
SECRET_VARIABLES = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIALS?|SESSION_KEY)$", re.IGNORECASE)
MIN_SECRET = 4  # shorter pieces are not replaced: they would mangle ordinary words


def secrets_of(values: list[str], environ: dict[str, str]) -> list[str]:
    """The secret pieces of `values` (a command's arguments) and of `environ`: every URL's
    password (or lone user name: a token), query values and fragment, and the values of variables named like secrets. A
    library's message may quote such a piece without its URL (`Invalid bucket name "key:secret@b"`)."""
    pieces: set[str] = set()
    texts = list(values) + [v for v in environ.values() if "://" in v]
    for text in texts:
        for match in _URL.finditer(str(text)):
            try:
                parts = urllib.parse.urlsplit(match.group(0))
            except ValueError:
                continue
            userinfo = parts.netloc.rpartition("@")[0]
            user, colon, password = userinfo.partition(":")
            # a user name is not secret, but a lone one is a token (https://token@host)
            pieces.update(urllib.parse.unquote(p) for p in (userinfo, password if colon else user) if p)
            pieces.update(v for _, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
            pieces.update((parts.query, parts.fragment))
    pieces.update(v for k, v in environ.items() if SECRET_VARIABLES.search(k))
    return sorted((p for p in pieces if len(p) >= MIN_SECRET), key=len, reverse=True)


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every line, traceback included, has its URLs redacted and the
    secret pieces of the command's arguments and environment (`secrets_of`) masked."""

    def __init__(self, fmt: str | None = None) -> None:
        import os
        import sys

        super().__init__(fmt)
        self.secrets = secrets_of(sys.argv[1:], dict(os.environ))

    def format(self, record: logging.LogRecord) -> str:
        text = redact_text(super().format(record))
        for secret in self.secrets:
            text = text.replace(secret, SHOWN)
        return text


def configure_logging(fmt: str = "%(levelname)s %(name)s: %(message)s", level: int = logging.INFO) -> None:
    """Log to standard error through `RedactingFormatter`: the one logging set-up of every command."""
    import sys

    root = logging.getLogger()
    if any(isinstance(h.formatter, RedactingFormatter) for h in root.handlers):
        return  # set up already (a command calling another in the same process)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt))
    root.addHandler(handler)
    root.setLevel(level)
