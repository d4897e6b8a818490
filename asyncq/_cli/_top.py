"""`asyncq top`: a live view of a journal, redrawn in place every `--interval`.

Each frame is one read-only snapshot (`ReadOnlyJournal` on a file,
`PostgresReadOnly` on a connection string): the view holds no lock or connection
between frames and never changes the journal. A read that fails (the journal
busy, replaced, deleted) is shown in the frame and tried again at the next one.
Ctrl-C ends it with status 0, the last frame left on screen."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from .._errors import JournalError
from ._command import Command, add_journal, require_rich
from ._documents import Document, stats_document
from ._readers import reader

if TYPE_CHECKING:
    from rich.console import RenderableType

#: The shortest refresh interval, seconds: each frame is a few queries.
MIN_INTERVAL = 0.1


def _interval(text: str) -> float:
    value = float(text)
    if value < MIN_INTERVAL:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_INTERVAL} s, got {text}")
    return value


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_journal(parser, json_output=False)
    parser.add_argument(
        "-i", "--interval", type=_interval, default=1.0, help="seconds between frames (1)"
    )
    parser.add_argument("--once", action="store_true", help="print one frame and exit")


def _run(args: argparse.Namespace) -> int:
    require_rich("or use asyncq stats --json")
    from rich.live import Live

    from ._tables import console, top_view

    journal = reader(args.path)
    out = console()
    last: Document | None = None

    def frame() -> RenderableType:
        nonlocal last
        now = time.time()
        try:
            last = stats_document(journal.stats(now), now)
        except JournalError as exc:
            if last is None:
                raise  # not a journal at all: the command fails, in one line
            return top_view(args.path, last, f"(stale: {exc}; retrying)")
        note = "" if args.once else f"every {args.interval:g} s, Ctrl-C to quit"
        return top_view(args.path, last, note)

    try:
        if args.once or not out.is_terminal:
            # Not a terminal (a pipe, a file): one frame after another, not redrawn.
            out.print(frame())
            while not args.once:
                time.sleep(args.interval)
                out.print(frame())
            return 0
        with Live(frame(), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        return 0


COMMANDS = [
    Command(
        "top",
        "a live view: per destination depth, rates, calls against the limit, retries, holds",
        _arguments,
        _run,
    )
]
