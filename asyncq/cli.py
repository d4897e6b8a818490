"""The `asyncq` command; `asyncq.cli:main` is its entry point. The commands live
in `asyncq/_cli/`, one module per concern."""

from __future__ import annotations

from ._cli._main import main
from ._cli._worker import load_queue, run_worker

__all__ = ["load_queue", "main", "run_worker"]

if __name__ == "__main__":
    raise SystemExit(main())
