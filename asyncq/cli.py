"""The `asyncq` command: run workers, look at a journal, compact it."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict

from . import _demo
from ._errors import JobNotFound, JournalError, QueueFailed
from ._queue import Queue
from ._vacuum import report, vacuum

log = logging.getLogger("asyncq")
# Seconds tasks left over after `stop()` get to end before the worker exits anyway
# (the queue already gave handlers their `SHUTDOWN_GRACE`).
_LEFTOVER_GRACE = 0.1


def load_queue(spec: str) -> Queue:
    """The `Queue` named by `package.module:attribute`."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"asyncq: expected 'package.module:queue', got {spec!r}")
    sys.path.insert(0, "")
    module = importlib.import_module(module_name)
    queue = getattr(module, attribute, None)
    if not isinstance(queue, Queue):
        raise SystemExit(f"asyncq: {spec!r} is not an asyncq.Queue")
    return queue


async def run_worker(queue: Queue, concurrency: int | None) -> int:
    """Run `queue`'s workers until SIGTERM or SIGINT, then shut down gracefully
    (bounded by the queue's `shutdown_timeout` plus `SHUTDOWN_GRACE`, 1 s). A second
    signal exits at once, with status 128 + its number: the jobs this process
    held run again elsewhere once their leases expire, as after a crash.

    Returns the exit status: 0 after a graceful stop, 1 if the queue failed."""
    if concurrency is not None:
        queue.concurrency = concurrency
    elif queue.concurrency == 0:
        queue.concurrency = 64  # the module's queue is a producer; a worker must run jobs
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.error(
                "%s again: exiting now; held jobs run again when their leases expire", sig.name
            )
            _exit_now(128 + sig)
        log.info("%s: stopping gracefully (send it again to exit at once)", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with queue:
            log.info("worker running %s with concurrency %d", queue.path, queue.concurrency)
            stopping = asyncio.ensure_future(stop.wait())
            failing = asyncio.ensure_future(queue._until_failed())
            await asyncio.wait((stopping, failing), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            failing.cancel()
    except QueueFailed:
        return 1  # logged when it happened
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def _exit_now(status: int) -> None:
    """Exit without running anything more: no handler, no cleanup."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _run_worker(queue: Queue, concurrency: int | None) -> int:
    """`asyncio.run(run_worker(...))`, except that a handler that ignored its
    cancellation cannot keep the process alive: `stop()` has already given it
    `SHUTDOWN_GRACE` and handed its job back, so tasks left over get a moment
    (`_LEFTOVER_GRACE`) to end, and the loop closes without them."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run_worker(queue, concurrency))
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.wait(left, timeout=_LEFTOVER_GRACE))
            stuck = [task for task in left if not task.done()]
            if stuck:
                log.warning("%d task(s) still running after the queue stopped: left", len(stuck))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


async def _stats(path: str) -> None:
    async with Queue(path, concurrency=0) as queue:
        print(json.dumps(asdict(await queue.stats()), indent=2))


async def _dead(path: str, destination: str | None, limit: int) -> None:
    async with Queue(path, concurrency=0) as queue:
        for info in await queue.dead_letters(destination, limit=limit):
            error = (info.last_error or "").splitlines()[0] if info.last_error else ""
            print(f"{info.id}\t{info.destination}\t{info.task}\t{info.attempts}\t{error}")


async def _redrive(path: str, ids: list[int], destination: str | None, spacing: float) -> None:
    async with Queue(path, concurrency=0) as queue:
        count = await queue.redrive(ids or None, destination=destination, spacing=spacing)
        print(f"redrove {count} job(s)")


async def _pause(path: str, name: str, paused: bool) -> None:
    async with Queue(path, concurrency=0) as queue:
        await (queue.pause(name) if paused else queue.resume(name))
        print(f"{name}: {'paused' if paused else 'resumed'}")


async def _cancel(path: str, job_id: int | None, selection: dict[str, str | None]) -> int:
    """Cancel one job (waiting for a running one to end) or a selection; exit status
    1 if the job was not found or had finished."""
    async with Queue(path, concurrency=0) as queue:
        if job_id is None:
            count = await queue.cancel(**selection)
            print(f"cancelled {count} job(s) (running ones: asked to stop)")
            return 0
        try:
            cancelled = await queue.cancel(job_id)
        except JobNotFound as exc:
            print(f"asyncq: {exc}", file=sys.stderr)
            return 1
        if cancelled:
            print(f"cancelled job {job_id}")
            return 0
        state = (await queue.get(job_id)).state.value
        print(f"job {job_id} was not cancelled: it is {state}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asyncq", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run the workers of a queue defined in a module")
    worker.add_argument("queue", help="where the Queue lives, as package.module:attribute")
    worker.add_argument(
        "-c", "--concurrency", type=int, help="worker coroutines (default: the queue's)"
    )
    stats = commands.add_parser("stats", help="print job counts of a journal file")
    stats.add_argument("path", help="the journal file")
    dead = commands.add_parser(
        "dead", help="list dead jobs: id, destination, task, attempts, error"
    )
    dead.add_argument("path", help="the journal file")
    dead.add_argument("-d", "--destination", help="only this destination")
    dead.add_argument("-n", "--limit", type=int, default=100, help="at most this many (100)")
    redrive = commands.add_parser("redrive", help="send dead jobs again, attempts reset")
    redrive.add_argument("path", help="the journal file")
    redrive.add_argument("ids", nargs="*", type=int, help="job ids (or use --destination)")
    redrive.add_argument("-d", "--destination", help="every dead job of this destination")
    redrive.add_argument("--spacing", type=float, default=0.0, help="seconds between them")
    for verb in ("pause", "resume"):
        command = commands.add_parser(verb, help=f"{verb} calls to a destination, everywhere")
        command.add_argument("path", help="the journal file")
        command.add_argument("name", help="the destination")
    cancel = commands.add_parser(
        "cancel", help="cancel a job by id, or every job of a selection (one transaction)"
    )
    cancel.add_argument("path", help="the journal file")
    cancel.add_argument("id", nargs="?", type=int, help="a job id (or select with the options)")
    cancel.add_argument("-d", "--destination", help="jobs of this destination")
    cancel.add_argument("-t", "--task", help="jobs of this task (its name)")
    cancel.add_argument(
        "-s", "--state", choices=["pending", "blocked", "running"], help="jobs in this state"
    )
    compact = commands.add_parser(
        "vacuum", help="compact a journal that no queue has open; print its size before and after"
    )
    compact.add_argument("path", help="the journal file")
    _demo.add_parser(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "demo":
        return _demo.main(args)
    if args.command == "worker":
        return _run_worker(load_queue(args.queue), args.concurrency)
    if args.command == "stats":
        asyncio.run(_stats(args.path))
    elif args.command == "dead":
        asyncio.run(_dead(args.path, args.destination, args.limit))
    elif args.command == "redrive":
        if not args.ids and args.destination is None:
            parser.error("redrive needs job ids or --destination")
        asyncio.run(_redrive(args.path, args.ids, args.destination, args.spacing))
    elif args.command == "cancel":
        selection = {"destination": args.destination, "task": args.task, "state": args.state}
        chosen = any(value is not None for value in selection.values())
        if (args.id is None) == (not chosen):
            parser.error("cancel needs a job id or a selection (--destination, --task, --state)")
        return asyncio.run(_cancel(args.path, args.id, selection))
    elif args.command in ("pause", "resume"):
        asyncio.run(_pause(args.path, args.name, args.command == "pause"))
    elif args.command == "vacuum":
        return _vacuum(args.path)
    return 0


def _vacuum(path: str) -> int:
    try:
        done = vacuum(path)
    except JournalError as exc:
        print(f"asyncq vacuum: {exc}", file=sys.stderr)
        return 1
    print(report(path, done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
