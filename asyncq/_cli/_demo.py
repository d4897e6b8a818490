"""`asyncq demo`: the command's entry; the demo itself lives in `asyncq/_demo/`."""

from __future__ import annotations

from .. import _demo
from ._command import Command

COMMANDS = [Command("demo", _demo.HELP, _demo.arguments, _demo.main)]
