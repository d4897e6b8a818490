"""What the commands share: the `Command` record, `CliError`, the journal argument,
JSON output, and the check for the optional `rich`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._errors import JournalError
from .._journal._postgres_dsn import is_postgres_dsn

#: Exit statuses: the command ran into a problem (a missing journal, an unknown job,
#: a module that does not import); the command line itself is wrong (argparse's).
FAILED, USAGE = 1, 2

NEED_RICH = "tables need the 'cli' extra: pip install 'asyncq[cli]'"


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand: its name, one line of help, a function that adds its arguments
    to its parser, and one that runs it and returns the exit status."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A command that cannot be carried out: the message is printed as one line."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


def add_journal(parser: argparse.ArgumentParser, *, json_output: bool = True) -> None:
    """The journal file argument, and `--json` for commands that print a document."""
    parser.add_argument("path", help="the journal file (or a postgresql:// connection string)")
    if json_output:
        parser.add_argument(
            "--json", action="store_true", help="print one JSON document (for scripts)"
        )


def require_existing(path: str) -> None:
    """Refuse a journal path that does not exist, before a `Queue` would create it
    (a `postgresql://` connection string names a database, not a file)."""
    if is_postgres_dsn(path):
        return
    if os.path.isdir(path):
        raise JournalError(path, "is a directory, not a journal file")
    if not os.path.exists(path):
        raise JournalError(path, "no such file")


def print_json(document: Any) -> None:
    """One JSON document on stdout. ASCII only: text that is not valid UTF-8 (a row
    written by hand) comes out escaped instead of failing the output."""
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def require_rich(instead: str = "or add --json") -> None:
    """Raise `CliError` naming the extra if rich, which draws the tables, is missing;
    `instead` says what works without it."""
    try:
        import rich  # noqa: F401 - only checks that it is there
    except ImportError:
        raise CliError(f"{NEED_RICH} ({instead})") from None


def positive(text: str) -> int:
    """An argparse type: an int above 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value
