"""Real faults for tests: a small filesystem that can be filled up and freed again.

`small_disk` mounts a tmpfs of a few MiB (root only). Tests that need it skip with
the reason elsewhere; `.ci/run` sets ASYNCQ_REQUIRE_FAULTS=1, which turns that
skip into a failure, since CI runs as root on a machine that can mount.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


class SmallDisk:
    """A mounted tmpfs. `fill()` takes all its free space; `free()` gives it back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._filler = root / "filler"

    def fill(self) -> None:
        """Write until the filesystem is full (ENOSPC), leaving no byte free."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 65536, 4096, 1):
                block = b"\0" * size
                try:
                    while True:
                        os.write(fd, block)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)


def _require_or_skip(reason: str) -> None:
    if os.environ.get("ASYNCQ_REQUIRE_FAULTS") == "1":
        pytest.fail(f"ASYNCQ_REQUIRE_FAULTS=1 but {reason}")
    pytest.skip(reason)


@contextmanager
def mounted_small_disk(tmp_path: Path, size_mib: int = 8) -> Iterator[SmallDisk]:
    if os.geteuid() != 0:
        _require_or_skip("a disk-full test mounts a tmpfs, which needs root")
    root = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(root)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        _require_or_skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A tmpfs of 8 MiB that the test can fill and free (root only)."""
    with mounted_small_disk(tmp_path) as disk:
        yield disk
