"""The commands that only read: `stats`, `jobs`, `show`, `dead`.

They read through `ReadOnlyJournal` (a file) or `PostgresReadOnly` (a
`postgresql://` connection string), so they never create, migrate or change a
journal: a mistyped path fails, naming the file (or the schema), instead of leaving
an empty journal behind."""

from __future__ import annotations

import argparse
import time

from .._records import JobState
from ._command import CliError, Command, add_journal, positive, print_json, require_rich
from ._documents import detail_document, job_document, stats_document
from ._readers import reader


def _stats_arguments(parser: argparse.ArgumentParser) -> None:
    add_journal(parser)


def _stats(args: argparse.Namespace) -> int:
    now = time.time()
    document = stats_document(reader(args.path).stats(now), now)
    if args.json:
        print_json(document)
        return 0
    require_rich()
    from ._tables import show, stats_view

    show(stats_view(args.path, document))
    return 0


def _jobs_arguments(parser: argparse.ArgumentParser) -> None:
    add_journal(parser)
    parser.add_argument("-s", "--state", choices=[s.value for s in JobState], help="in this state")
    parser.add_argument("-d", "--destination", help="of this destination")
    parser.add_argument("-t", "--task", help="of this task (its name)")
    parser.add_argument("-n", "--limit", type=positive, default=50, help="at most this many (50)")
    parser.add_argument(
        "--after", type=int, default=0, metavar="ID", help="ids above this one (the next page)"
    )


def _jobs(args: argparse.Namespace) -> int:
    # One more than asked tells whether there is a next page.
    found = reader(args.path).jobs(
        state=None if args.state is None else JobState(args.state),
        destination=args.destination,
        task=args.task,
        after=args.after,
        limit=args.limit + 1,
    )
    page = found[: args.limit]
    next_after = page[-1].id if len(found) > args.limit else None
    documents = [job_document(info) for info in page]
    if args.json:
        print_json({"jobs": documents, "next_after": next_after})
        return 0
    require_rich()
    from ._tables import jobs_view, show

    show(jobs_view(documents, next_after, time.time()))
    return 0


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    add_journal(parser)
    parser.add_argument("id", type=int, help="the job's id")


def _show(args: argparse.Namespace) -> int:
    detail = reader(args.path).get(args.id)
    if detail is None:
        raise CliError(f"no job with id {args.id} in the journal {args.path!r}")
    document = detail_document(detail)
    if args.json:
        print_json(document)
        return 0
    require_rich()
    from ._tables import job_view, show

    show(job_view(document, time.time()))
    return 0


def _dead_arguments(parser: argparse.ArgumentParser) -> None:
    add_journal(parser)
    parser.add_argument("-d", "--destination", help="only this destination")
    parser.add_argument("-n", "--limit", type=positive, default=100, help="at most this many (100)")


def _dead(args: argparse.Namespace) -> int:
    dead = reader(args.path).dead_letters(args.destination, limit=args.limit)
    documents = [job_document(info) for info in dead]
    if args.json:
        print_json({"dead": documents})
        return 0
    require_rich()
    from ._tables import dead_view, show

    show(dead_view(documents, time.time()))
    return 0


COMMANDS = [
    Command(
        "stats",
        "per destination: jobs by state, rates, limit, pause, hold, circuit",
        _stats_arguments,
        _stats,
    ),
    Command(
        "jobs",
        "list jobs by state, destination or task, in id order, a page at a time",
        _jobs_arguments,
        _jobs,
    ),
    Command(
        "show",
        "every field of one job: payload, result, last error, history, dependencies",
        _show_arguments,
        _show,
    ),
    Command(
        "dead",
        "list dead jobs, the most recent first: id, destination, task, attempts, error",
        _dead_arguments,
        _dead,
    ),
]
