"""The commands that change a journal: `redrive`, `purge`, `pause`, `resume`,
`cancel` through a producer `Queue` (the calls an application makes), and
`vacuum`. Each refuses a path that does not exist rather than create a journal."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from .._errors import JobNotFound
from .._queue import Queue
from .._vacuum import report, vacuum
from ._command import USAGE, CliError, Command, add_journal, print_json, require_existing

Document = dict[str, Any]


@asynccontextmanager
async def _open(path: str) -> AsyncIterator[Queue]:
    """A producer queue on an existing journal; a refused argument as a `CliError`."""
    require_existing(path)
    async with Queue(path, concurrency=0) as queue:
        try:
            yield queue
        except (ValueError, TypeError) as exc:
            raise CliError(str(exc)) from None


def _run(
    args: argparse.Namespace, act: Callable[[Queue], Awaitable[tuple[Document, str, int]]]
) -> int:
    """Run `act` on the journal; print its document (`--json`) or its message (on
    stderr if it failed)."""

    async def run() -> tuple[Document, str, int]:
        async with _open(args.path) as queue:
            return await act(queue)

    document, message, status = asyncio.run(run())
    if args.json:
        print_json(document)
    else:
        print(message, file=sys.stdout if status == 0 else sys.stderr)
    return status


# -- redrive ------------------------------------------------------------------


def _redrive_arguments(parser: argparse.ArgumentParser) -> None:
    add_journal(parser)
    parser.add_argument("ids", nargs="*", type=int, help="job ids (or use --destination)")
    parser.add_argument("-d", "--destination", help="every dead job of this destination")
    parser.add_argument("--spacing", type=float, default=0.0, help="seconds between them")


def _redrive(args: argparse.Namespace) -> int:
    if not args.ids and args.destination is None:
        raise CliError("redrive needs job ids or --destination", USAGE)

    async def act(queue: Queue) -> tuple[Document, str, int]:
        count = await queue.redrive(
            args.ids or None, destination=args.destination, spacing=args.spacing
        )
        return {"redriven": count}, f"redrove {count} job(s)", 0

    return _run(args, act)


# -- purge --------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """An argparse type: seconds, given as `90`, `90s`, `15m`, `12h` or `7d`."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 15m, 12h, 7d: {text!r}")
    return float(match[1]) * _SECONDS[match[2]]


def moment(text: str) -> float:
    """An argparse type: seconds since the epoch, given as such or as an ISO 8601
    date and time (UTC unless it names its offset)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds since the epoch or an ISO 8601 time: {text!r}"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _purge_arguments(parser: argparse.ArgumentParser) -> None:
    add_journal(parser)
    parser.add_argument("ids", nargs="*", type=int, help="dead job ids")
    parser.add_argument("-d", "--destination", help="dead jobs of this destination")
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--before", type=moment, metavar="TIME", help="dead before this time (ISO 8601, or epoch s)"
    )
    when.add_argument(
        "--older-than", type=duration, metavar="AGE", help="dead longer ago than this (15m, 7d)"
    )
    parser.add_argument("--all", action="store_true", help="every dead job")


def _purge(args: argparse.Namespace) -> int:
    before = args.before if args.older_than is None else time.time() - args.older_than
    chosen = bool(args.ids) or args.destination is not None or before is not None
    if chosen == args.all:
        raise CliError(
            "purge needs job ids, --destination, --before or --older-than, or else --all", USAGE
        )

    async def act(queue: Queue) -> tuple[Document, str, int]:
        count = await queue.purge(args.ids or None, destination=args.destination, before=before)
        return {"purged": count}, f"deleted {count} dead job(s)", 0

    return _run(args, act)


# -- pause, resume ------------------------------------------------------------


def _pause_arguments(parser: argparse.ArgumentParser) -> None:
    add_journal(parser)
    parser.add_argument("name", help="the destination")


def _pausing(paused: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def act(queue: Queue) -> tuple[Document, str, int]:
            await (queue.pause(args.name) if paused else queue.resume(args.name))
            verb = "paused" if paused else "resumed"
            return {"destination": args.name, "paused": paused}, f"{args.name}: {verb}", 0

        return _run(args, act)

    return run


# -- cancel -------------------------------------------------------------------


def _cancel_arguments(parser: argparse.ArgumentParser) -> None:
    add_journal(parser)
    parser.add_argument("id", nargs="?", type=int, help="a job id (or select with the options)")
    parser.add_argument("-d", "--destination", help="jobs of this destination")
    parser.add_argument("-t", "--task", help="jobs of this task (its name)")
    parser.add_argument(
        "-s", "--state", choices=["pending", "blocked", "running"], help="jobs in this state"
    )


def _cancel(args: argparse.Namespace) -> int:
    """Cancel one job (waiting for a running one to end) or a selection; exit status
    1 if the job had finished."""
    selection = {"destination": args.destination, "task": args.task, "state": args.state}
    chosen = any(value is not None for value in selection.values())
    if (args.id is None) == (not chosen):
        raise CliError(
            "cancel needs a job id or a selection (--destination, --task, --state)", USAGE
        )

    async def one(queue: Queue) -> tuple[Document, str, int]:
        try:
            cancelled = await queue.cancel(args.id)
        except JobNotFound:
            raise CliError(f"no job with id {args.id} in the journal {args.path!r}") from None
        state = (await queue.get(args.id)).state.value
        document = {"id": args.id, "cancelled": cancelled, "state": state}
        if cancelled:
            return document, f"cancelled job {args.id}", 0
        return document, f"job {args.id} was not cancelled: it is {state}", 1

    async def many(queue: Queue) -> tuple[Document, str, int]:
        count = await queue.cancel(**selection)
        return {"cancelled": count}, f"cancelled {count} job(s) (running ones: asked to stop)", 0

    return _run(args, one if args.id is not None else many)


# -- vacuum -------------------------------------------------------------------


def _vacuum(args: argparse.Namespace) -> int:
    done = vacuum(args.path)
    if args.json:
        print_json(
            {
                "file_before": done.file_before,
                "wal_before": done.wal_before,
                "file_after": done.file_after,
                "wal_after": done.wal_after,
            }
        )
    else:
        print(report(args.path, done))
    return 0


COMMANDS = [
    Command("redrive", "send dead jobs again, attempts reset", _redrive_arguments, _redrive),
    Command(
        "purge",
        "delete dead jobs: by id, destination, age, or --all",
        _purge_arguments,
        _purge,
    ),
    Command("pause", "pause calls to a destination, everywhere", _pause_arguments, _pausing(True)),
    Command(
        "resume", "resume calls to a destination, everywhere", _pause_arguments, _pausing(False)
    ),
    Command(
        "cancel",
        "cancel a job by id, or every job of a selection (one transaction)",
        _cancel_arguments,
        _cancel,
    ),
    Command(
        "vacuum",
        "compact a journal that no queue has open; print its size before and after",
        add_journal,
        _vacuum,
    ),
]
