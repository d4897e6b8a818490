"""Connection strings: what a PostgreSQL journal is called in messages, logs and
`repr` (never its password), and the scrubbing of driver errors that might quote it."""

from __future__ import annotations

import re
import urllib.parse

_SCHEMES = ("postgresql://", "postgres://")
# key=value connection strings ("host=db password=secret"), and the password
# parameter of a URL's query ("?password=secret").
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def is_postgres_dsn(path: str) -> bool:
    """Whether `Queue(path)` names a PostgreSQL database rather than a SQLite file."""
    return path.startswith(_SCHEMES)


def describe(dsn: str) -> str:
    """The connection string without its password: `postgresql://app@db:5432/app`."""
    try:
        parts = urllib.parse.urlsplit(dsn)
    except ValueError:
        return "postgresql://(a connection string that does not parse)"
    netloc = parts.netloc
    if "@" in netloc:
        user_info, host = netloc.rsplit("@", 1)
        user = user_info.split(":", 1)[0]
        netloc = f"{user}@{host}"
    query = _KEYWORD_PASSWORD.sub(r"\1***", parts.query)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def secrets_of(dsn: str) -> list[str]:
    """The passwords a connection string holds (as written and as decoded)."""
    found: list[str] = []
    try:
        parts = urllib.parse.urlsplit(dsn)
        if parts.password:
            found += [parts.password, urllib.parse.unquote(parts.password)]
    except ValueError:
        pass
    found += [m.group(2).strip("'") for m in _KEYWORD_PASSWORD.finditer(dsn)]
    return [s for s in dict.fromkeys(found) if s]


def scrub(message: str, dsn: str) -> str:
    """`message` with every password of `dsn` replaced by `***`."""
    for secret in secrets_of(dsn):
        message = message.replace(secret, "***")
    return message
