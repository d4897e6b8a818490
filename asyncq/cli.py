"""The `asyncq` command: run workers, look at a journal."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict

from ._queue import Queue


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


async def run_worker(queue: Queue, concurrency: int | None) -> None:
    """Run `queue`'s workers until SIGTERM or SIGINT, then shut down gracefully."""
    if concurrency is not None:
        queue.concurrency = concurrency
    elif queue.concurrency == 0:
        queue.concurrency = 64  # the module's queue is a producer; a worker must run jobs
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with queue:
        logging.getLogger("asyncq").info(
            "worker running %s with concurrency %d", queue.path, queue.concurrency
        )
        await stop.wait()


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "worker":
        asyncio.run(run_worker(load_queue(args.queue), args.concurrency))
    elif args.command == "stats":
        asyncio.run(_stats(args.path))
    elif args.command == "dead":
        asyncio.run(_dead(args.path, args.destination, args.limit))
    elif args.command == "redrive":
        if not args.ids and args.destination is None:
            parser.error("redrive needs job ids or --destination")
        asyncio.run(_redrive(args.path, args.ids, args.destination, args.spacing))
    elif args.command in ("pause", "resume"):
        asyncio.run(_pause(args.path, args.name, args.command == "pause"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
