"""The journal's file on disk: created 0600, checked before SQLite touches it,
and watched while open, so that a file deleted or replaced under a running
queue is noticed before a write is acknowledged into a file nobody will read."""

from __future__ import annotations

import logging
import os
import stat

from .._errors import JournalCorrupt, JournalError

log = logging.getLogger("asyncq.journal")

_HEADER = b"SQLite format 3\x00"
_SIDE_FILES = ("-wal", "-shm")

#: (st_dev, st_ino): what the path named when the journal was opened.
Identity = tuple[int, int]


def prepare_file(path: str) -> None:
    """Create a new journal 0600, or check an existing one: refuse a directory or a
    file that is not SQLite without touching it, and tighten a looser mode to 0600
    (with a warning), for the file and its -wal and -shm files alike."""
    if os.path.isdir(path):
        raise JournalError(path, "is a directory, not a journal file")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        _check_existing(path)
        return
    except OSError as exc:
        raise JournalError(path, f"cannot create: {exc}") from exc
    # umask can only take bits away; chmod makes the mode exactly 0600. SQLite
    # gives the -wal and -shm files the database file's mode.
    os.fchmod(fd, 0o600)
    os.close(fd)


def _check_existing(path: str) -> None:
    try:
        with open(path, "rb") as existing:
            header = existing.read(len(_HEADER))
    except OSError as exc:
        raise JournalError(path, f"cannot read: {exc}") from exc
    if header and header != _HEADER:
        raise JournalCorrupt(path, "not a SQLite database (bad header)")
    for name in (path, *(path + suffix for suffix in _SIDE_FILES)):
        _tighten(name)


def _tighten(name: str) -> None:
    """Make `name` 0600 if others or the group may read or write it."""
    try:
        mode = stat.S_IMODE(os.stat(name).st_mode)
    except FileNotFoundError:
        return
    if not mode & 0o077:
        return
    try:
        os.chmod(name, mode & 0o700 | 0o600)
    except OSError as exc:
        raise JournalError(
            name, f"is open to other users (mode {mode:04o}) and cannot be made 0600: {exc}"
        ) from exc
    log.warning("journal file %s had mode %04o; tightened to 0600", name, mode)


def identity(path: str) -> Identity:
    """What `path` names now."""
    found = os.stat(path)
    return found.st_dev, found.st_ino


def check_identity(path: str, opened: Identity) -> None:
    """Raise `JournalError` if `path` no longer names the file that was opened."""
    try:
        now = identity(path)
    except FileNotFoundError:
        now = None
    if now != opened:
        what = "deleted" if now is None else "replaced by another file"
        raise JournalError(
            path,
            f"the journal file was {what} while the queue had it open; nothing more is "
            "written (it would be lost): restore the file or restart the queue",
        )
