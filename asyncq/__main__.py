"""`python -m asyncq`: the `asyncq` command."""

from .cli import main

raise SystemExit(main())
