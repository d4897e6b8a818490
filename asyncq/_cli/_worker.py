"""`asyncq worker package.module:queue`: run a queue's workers until a signal."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys

from .._errors import QueueFailed
from .._queue import Queue
from ._command import USAGE, CliError, Command, positive

log = logging.getLogger("asyncq")
# Seconds tasks left over after `stop()` get to end before the worker exits anyway
# (the queue already gave handlers their `SHUTDOWN_GRACE`).
_LEFTOVER_GRACE = 0.1


def load_queue(spec: str) -> Queue:
    """The `Queue` named by `package.module:attribute`; `CliError` saying why not."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CliError(f"expected 'package.module:queue', got {spec!r}", USAGE)
    sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and f"{module_name}.".startswith(f"{exc.name}."):
            raise CliError(f"cannot import {module_name!r}: {exc}") from None
        raise CliError(f"importing {module_name!r} failed: {_one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - whatever the module raises, said in one line
        raise CliError(f"importing {module_name!r} failed: {_one_line(exc)}") from None
    if not hasattr(module, attribute):
        raise CliError(f"module {module_name!r} has no attribute {attribute!r}")
    queue = getattr(module, attribute)
    if not isinstance(queue, Queue):
        raise CliError(f"{spec!r} is of type {type(queue).__name__}, not a Queue")
    return queue


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


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


def run_until_stopped(queue: Queue, concurrency: int | None) -> int:
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


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queue", help="where the Queue lives, as package.module:attribute")
    parser.add_argument(
        "-c", "--concurrency", type=positive, help="worker coroutines (default: the queue's)"
    )


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run_until_stopped(load_queue(args.queue), args.concurrency)


COMMANDS = [
    Command(
        "worker",
        "run the workers of a queue defined in a module, until SIGTERM or SIGINT",
        _arguments,
        _run,
    )
]
