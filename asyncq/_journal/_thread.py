"""The one adapter onto aiosqlite's internals.

A journal transaction must cost one thread hop, not one per statement (an
aiosqlite await costs 65-70 us), so whole transactions run as one function on
one thread that owns the `sqlite3.Connection`. aiosqlite has no public call
for that (checked up to 0.22.1), so there are two paths:

- The private hook: a call goes on aiosqlite's connection thread's queue,
  `Connection._tx`, as aiosqlite's own `_execute` puts it there, and runs with
  `Connection._conn`, the live connection. It goes without a future (as
  aiosqlite's own `stop()` queues one), so that the call's own reply is the only
  wake-up of the loop; before aiosqlite 0.22.1, whose thread needs a future, with
  one that is done already. Used when these exist with the expected shape;
  tests/unit/test_thread_adapter.py pins the releases this was checked against.
- The fallback, when they do not (or when asked for): a second
  `sqlite3.Connection` to the same database, opened by file name (from
  `PRAGMA database_list`, read through aiosqlite's public `execute_fetchall`)
  with the same `isolation_level`, on one thread of asyncq's own that runs the
  functions one at a time, in order. aiosqlite's connection stays open and
  idle. An in-memory database gets a fresh in-memory database of its own:
  correct for the journal, which touches its database only through this class.
  Other `connect()` arguments are not carried over (the journal passes none).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
import sqlite3
import threading
import weakref
from collections.abc import Awaitable, Callable
from queue import SimpleQueue
from typing import Any, TypeVar, cast

import aiosqlite

T = TypeVar("T")

TESTED_AIOSQLITE = ("0.20", "0.21", "0.22")

log = logging.getLogger("asyncq.journal")
_untested_version_logged = False


class ConnectionThread:
    """Runs functions of a `sqlite3.Connection` on one thread, one at a time, in order.

    `private_hook=False` forces the fallback (see the module's docstring).
    """

    def __init__(self, db: aiosqlite.Connection, *, private_hook: bool = True) -> None:
        self._db: aiosqlite.Connection | None = None
        self._own: _OwnThread | None = None
        self.private_hook = private_hook and hook_fits(db)
        if self.private_hook:
            self._db = db
            _note_untested_version()
            return
        if private_hook:
            log.warning(
                "aiosqlite %s: Connection._tx/_conn are not what asyncq was checked "
                "against (aiosqlite %s); the journal runs on a connection and thread of "
                "its own instead",
                _aiosqlite_version(),
                ", ".join(TESTED_AIOSQLITE),
            )
        self._own = _OwnThread(db)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.run_then(fn, _nothing)

    def run_then(
        self, fn: Callable[[sqlite3.Connection], T], then: Callable[[T], None]
    ) -> Awaitable[T]:
        """`run(fn)`, and `then(result)` on the event loop as soon as `fn` returned,
        in the thread's one wake-up of the loop: before the awaiting task resumes,
        so that what `then` wakes runs first. (`then` is not called if `fn` raised;
        if `then` raises, the loop's exception handler hears of it, and the result
        is returned all the same.) A future, not a coroutine: a frame less per call."""
        if self._own is not None and not self._own.is_started:
            return self._start_then(fn, then)
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def on_done(result: T | None, error: BaseException | None) -> None:
            try:
                if error is None:
                    then(cast(T, result))
            finally:
                if done.done():
                    pass  # the awaiting task was cancelled meanwhile
                elif error is None:
                    done.set_result(cast(T, result))
                else:
                    done.set_exception(error)

        self.submit(fn, on_done)
        return done

    async def _start_then(
        self, fn: Callable[[sqlite3.Connection], T], then: Callable[[T], None]
    ) -> T:
        assert self._own is not None
        await self._own.started()
        return await self.run_then(fn, then)

    def submit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        on_done: Callable[[T | None, BaseException | None], None],
    ) -> None:
        """Queue `fn(connection)` and return at once; `on_done(result, error)` is
        called on the running event loop when it has run: one wake-up of the loop
        per call, where `run` costs the awaiting task a loop turn more."""
        loop = asyncio.get_running_loop()
        reply = functools.partial(_deliver, loop.call_soon_threadsafe, on_done)
        own = self._own
        if own is not None:
            own.submit(fn, reply)
            return
        db: Any = self._db
        if not db._running or db._connection is None:
            raise ValueError("Connection closed")  # as aiosqlite's own calls say

        def call() -> None:
            # Everything inside: aiosqlite drops what a call without a future raises.
            try:
                result = fn(db._conn)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                reply(None, exc)
            else:
                reply(result, None)

        # aiosqlite 0.22.1 and later send no reply for a call queued without a future
        # (as their own stop() does); earlier releases need one, whose reply then
        # finds it done already and is dropped (a wake-up of the loop more).
        placeholder = None
        if not _NO_FUTURE_OK:
            placeholder = loop.create_future()
            placeholder.set_result(None)
        db._tx.put_nowait((placeholder, call))

    async def close(self) -> None:
        """Close the fallback's connection and stop its thread (nothing on the private
        hook, where closing aiosqlite's connection is enough). If this is never
        called, the fallback closes when aiosqlite's connection is garbage-collected."""
        if self._own is not None:
            await self._own.close()


def hook_fits(db: object) -> bool:
    """Whether `db` has aiosqlite's private `_execute` coroutine (whose way of queueing
    calls `submit` follows), `_conn` property, `_tx` queue of (future, function) and
    `_running` and `_connection` flags: the shape ConnectionThread relies on."""
    cls = type(db)
    return (
        inspect.iscoroutinefunction(inspect.getattr_static(cls, "_execute", None))
        and isinstance(inspect.getattr_static(cls, "_conn", None), property)
        and isinstance(getattr(db, "_tx", None), SimpleQueue)
        and hasattr(db, "_running")
        and hasattr(db, "_connection")
    )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


# Whether aiosqlite's thread accepts a call queued without a future (0.22.1 added
# the check; before it, such a call ended the thread).
_NO_FUTURE_OK = _version(getattr(aiosqlite, "__version__", "0")) >= (0, 22, 1)


def _deliver(
    call_soon_threadsafe: Callable[..., Any],
    on_done: Callable[[Any, BaseException | None], None],
    result: Any,
    error: BaseException | None,
) -> None:
    # On a connection thread. Nothing may end the thread while callers wait on
    # it: a reply that cannot be delivered is the caller's loop being closed.
    try:
        call_soon_threadsafe(on_done, result, error)
    except RuntimeError:
        pass
    except Exception:
        log.exception("asyncq journal thread: a reply could not be delivered")


def _nothing(result: object) -> None:
    """`run`'s `then`: nothing to do before the caller resumes."""


def _aiosqlite_version() -> str:
    return str(getattr(aiosqlite, "__version__", "unknown"))


def _note_untested_version() -> None:
    global _untested_version_logged
    version = _aiosqlite_version()
    if _untested_version_logged or ".".join(version.split(".")[:2]) in TESTED_AIOSQLITE:
        return
    _untested_version_logged = True
    log.info(
        "aiosqlite %s was not checked with asyncq (checked: %s); its private "
        "Connection._tx and _conn have the expected shape and are used",
        version,
        ", ".join(TESTED_AIOSQLITE),
    )


# -- the fallback -----------------------------------------------------------

# Whom to tell: a future, a function (result, error) that replies itself, or nobody.
_ReplyTo = asyncio.Future[Any] | Callable[[Any, BaseException | None], None] | None
_Call = tuple[_ReplyTo, Callable[[sqlite3.Connection], Any] | None]
_STOP = (None, None)  # a call without a function: close the connection, end the thread


class _OwnThread:
    """A sqlite3 connection to `db`'s database, opened and used on one thread of
    its own. The thread starts at the first call, once the file name is known."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = weakref.ref(db)
        self._isolation_level = db.isolation_level
        self._calls: SimpleQueue[_Call] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Whoever forgets close(): stop with aiosqlite's connection. The callback
        # holds the queue only, not this object or `db`.
        weakref.finalize(db, self._calls.put, _STOP)

    def submit(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        reply: Callable[[Any, BaseException | None], None],
    ) -> None:
        """Queue `fn`; `reply(result, error)` is called on this thread once it has
        run, or failed to (see `ConnectionThread.submit`). The thread must have
        started (`started`)."""
        if self._thread is None or self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        self._calls.put((reply, fn))

    @property
    def is_started(self) -> bool:
        return self._thread is not None

    async def started(self) -> None:
        """Start the thread if no call has yet."""
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        if self._thread is None:
            await self._start()

    async def _start(self) -> None:
        db = self._db()
        if db is None:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        rows = await db.execute_fetchall("PRAGMA database_list")
        database = next((str(row[2]) for row in rows if row[1] == "main"), "") or ":memory:"
        if self._thread is None:  # a concurrent first call may have started it meanwhile
            self._thread = threading.Thread(
                target=_serve,
                args=(self._calls, database, self._isolation_level),
                name="asyncq-journal",
                daemon=True,
            )
            self._thread.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._calls.put((done, None))
        await done
        self._thread.join()  # it has closed the connection; nothing is left but to return


def _serve(calls: SimpleQueue[_Call], database: str, isolation_level: str | None) -> None:
    """The fallback's thread: open the connection, run calls in order until told to stop."""
    failure: BaseException | None = None
    conn: sqlite3.Connection | None = None
    try:
        # cast: the stubs leave out "", sqlite3's own default (DEFERRED, implicitly).
        conn = sqlite3.connect(database, isolation_level=cast(Any, isolation_level))
    except BaseException as exc:  # noqa: BLE001 - every call then fails with it
        failure = exc
    while True:
        future, fn = calls.get()
        if fn is None:
            if conn is not None:
                conn.close()
            _reply(future, None, None)
            return
        try:
            if conn is None:
                assert failure is not None
                raise failure.with_traceback(None)
            result = fn(conn)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            _reply(future, None, exc)
        else:
            _reply(future, result, None)


def _reply(future: _ReplyTo, result: Any, error: BaseException | None) -> None:
    if future is None:
        return
    if not isinstance(future, asyncio.Future):
        future(result, error)  # it delivers the reply itself (and never raises)
        return
    # Nothing may end this thread while callers wait on it: a reply that cannot be
    # delivered is the caller's loop being closed (RuntimeError), so nobody waits.
    try:
        future.get_loop().call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:
        pass
    except Exception:
        log.exception("asyncq journal thread: a reply could not be delivered")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled while the call ran
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
