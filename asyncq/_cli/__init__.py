"""The `asyncq` command, one module per concern.

`_main.py` builds the parser from every module's `COMMANDS` and turns errors into
one line; `_command.py` holds what commands share (the `Command` record, `CliError`,
the journal argument). The commands: `_worker.py` (run a queue's workers),
`_reading.py` (stats, jobs, show, dead: read-only, never create or change a
journal), `_top.py` (the live view), `_writing.py` (redrive, purge, pause, resume,
cancel, vacuum). `_documents.py` turns records into JSON documents; `_tables.py`
renders them with rich, imported only by commands that print tables.

A new subcommand is a module with a `COMMANDS` list, named in `_main.py`'s `MODULES`.
"""
