"""`asyncq demo`: the three stories of DESIGN.md against local receivers, in about a
minute, with live progress, a verdict from the receivers' counts and an HTML report.

This module imports nothing of the `demo` extra (aiohttp, rich): the command line
can offer the subcommand without it, and says which extra to install.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from pathlib import Path

from ._scenario import DEFAULT_DURATION, EMAIL_LIMIT, QUICK_DURATION, scenario_for

EXTRA = "pip install 'asyncq[demo]'"
DEFAULT_REPORT = "asyncq-demo-report.html"


#: One line for `asyncq --help` and `asyncq demo --help`.
HELP = (
    "play the three stories against HTTP receivers on 127.0.0.1 in about a minute "
    "(paced email, a CRM that goes down and comes back, an API answering 429 + "
    "Retry-After); judge by what the receivers counted; write an HTML report"
)


def arguments(demo: argparse.ArgumentParser) -> None:
    """The options of `asyncq demo`."""
    demo.add_argument(
        "--quick",
        action="store_true",
        help=f"compress the stories into {QUICK_DURATION:g} s instead of {DEFAULT_DURATION:g}",
    )
    demo.add_argument("--duration", type=float, help="seconds the stories take (at least 8)")
    demo.add_argument(
        "--report",
        type=Path,
        default=Path(DEFAULT_REPORT),
        help=f"where to write the HTML report (default: ./{DEFAULT_REPORT})",
    )
    demo.add_argument(
        "--keep", action="store_true", help="keep the temporary directory of the journal"
    )
    demo.add_argument(
        "--no-live",
        action="store_true",
        help="print plain progress lines instead of the live view (automatic off a terminal)",
    )
    demo.add_argument(
        "--email-limit",
        type=int,
        default=EMAIL_LIMIT,
        help=(
            f"calls per second the email receiver allows (default {EMAIL_LIMIT}; the queue "
            f"sends {EMAIL_LIMIT * 0.8:g}/s: set it lower to see the demo's checks fail)"
        ),
    )


def main(args: argparse.Namespace) -> int:
    """Run the demo for parsed `args`; the exit status."""
    missing = [name for name in ("aiohttp", "rich") if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"asyncq demo needs {' and '.join(missing)}: {EXTRA}",
            file=sys.stderr,
        )
        return 2
    duration = args.duration
    if duration is None:
        duration = QUICK_DURATION if args.quick else DEFAULT_DURATION
    try:
        scenario = scenario_for(duration, email_limit=args.email_limit)
    except ValueError as exc:
        print(f"asyncq demo: {exc}", file=sys.stderr)
        return 2

    report: Path = args.report
    try:  # before a minute of demo, not after
        report.parent.mkdir(parents=True, exist_ok=True)
        report.touch()
    except OSError as exc:
        print(f"asyncq demo: cannot write the report to {report}: {exc.strerror}", file=sys.stderr)
        return 2

    from rich.console import Console

    from ._run import Options, run

    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    options = Options(
        scenario=scenario,
        report=args.report,
        keep=args.keep,
        live=console.is_terminal and not args.no_live,
    )
    try:
        return asyncio.run(run(options, console))
    except KeyboardInterrupt:
        print("asyncq demo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback: a port taken, a full disk
        print(f"asyncq demo: failed: {_first_cause(exc)}", file=sys.stderr)
        return 1


def _first_cause(exc: BaseException) -> str:
    """The first real error inside task groups' exception groups, as one line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
