"""The parser, built from every command module's `COMMANDS`, and `main`: one line
on stderr and exit status 1 or 2 for every error a user can cause."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .._errors import AsyncqError
from . import _demo, _reading, _top, _worker, _writing
from ._command import FAILED, USAGE, CliError, Command

#: Every module that adds commands; `asyncq --help` lists them in this order.
MODULES = (_demo, _worker, _top, _reading, _writing)

DESCRIPTION = (
    "Run a queue's workers, look at a journal while they run, and act on its jobs. "
    "Reading commands (stats, top, jobs, show, dead) never create or change a journal."
)


def commands() -> list[Command]:
    return [command for module in MODULES for command in module.COMMANDS]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="asyncq", description=DESCRIPTION)
    subparsers = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands():
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(sub)
        sub.set_defaults(run=command.run)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `asyncq` command; the exit status."""
    arguments = parser()
    args = arguments.parse_args(argv)
    try:
        status: int = args.run(args)
    except CliError as exc:
        if exc.status == USAGE:
            arguments.exit(exc.status, f"{arguments.prog} {args.command}: error: {exc}\n")
        return _fail(str(exc), exc.status)
    except AsyncqError as exc:  # a journal that cannot be read, a job not found ...
        return _fail(str(exc), FAILED)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`asyncq jobs ... | head`): nothing more to say, and
        # nothing to say it to; stdout goes nowhere, so exiting does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return FAILED
    return status


def _fail(message: str, status: int) -> int:
    print(f"asyncq: {message}", file=sys.stderr)
    return status
