"""A type checker sees the handler's signature and return type through the API.

One mypy run (--strict) over one snippet; each line of interest is found by a marker.
"""

from __future__ import annotations

import re
from pathlib import Path

import mypy.api

SNIPPET = """\
from typing import Any

from asyncq import Job, Queue

queue = Queue(":memory:")


@queue.task
async def add(a: int, b: int = 0) -> int:
    return a + b


async def main() -> None:
    job = await add.submit(1, b=2)
    reveal_type(await job.result())  # reveal-result
    later = add.options(key="k", delay=1.5, priority=2, destination="d")
    reveal_type(await (await later.submit(a=1)).result())  # reveal-options
    reveal_type(await later.submit_many([{"a": 1}]))  # reveal-many
    reveal_type(await add.submit_many([{"a": 1}]))  # reveal-task-many
    reveal_type(await queue.submit(add, 1, key="k"))  # reveal-queue
    reveal_type(await queue.submit("add", 1))  # reveal-by-name
    await add.submit(a="one")  # wrong-type
    await later.submit(a="one")  # options-wrong-type
    await later.submit(c=1)  # options-unknown
    await later.submit()  # options-missing
    add.options(priority="high")  # option-type
    typed: Job[str] = await add.submit(1)  # wrong-job-type
    fine: Job[Any] = await queue.submit("add", 1)
    reveal_type(await queue.cancel(job.id))  # reveal-cancel-one
    reveal_type(await queue.cancel(task=add, state="pending"))  # reveal-cancel-many
"""


def test_submit_and_result_are_typed_from_the_handler(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    out, err, _ = mypy.api.run(
        ["--strict", "--cache-dir", str(tmp_path / "mypy-cache"), str(snippet)]
    )
    assert not err, err
    by_marker: dict[str, list[str]] = {}
    lines = SNIPPET.splitlines()
    for report in out.splitlines():
        found = re.match(r".*snippet\.py:(\d+): (.*)", report)
        if found is None:
            continue
        line = lines[int(found[1]) - 1]
        marker = line.split("# ")[-1] if "# " in line else "unmarked"
        by_marker.setdefault(marker, []).append(found[2])

    def revealed(marker: str) -> str:
        (note,) = by_marker.pop(marker)
        shown = re.fullmatch(r'note: Revealed type is "(.*)"', note)
        assert shown is not None, note
        return shown[1].replace("builtins.", "").replace("asyncq._job.", "")

    def error(marker: str) -> str:
        messages = [m for m in by_marker.pop(marker) if m.startswith("error:")]
        assert messages, marker
        return " ".join(messages)

    assert revealed("reveal-result") == "int"
    assert revealed("reveal-options") == "int"
    assert revealed("reveal-many") == "list[Job[int]]"
    assert revealed("reveal-task-many") == "list[Job[int]]"
    assert revealed("reveal-queue") == "Job[int]"
    assert revealed("reveal-by-name") == "Job[Any]"
    assert revealed("reveal-cancel-one") == "bool"
    assert revealed("reveal-cancel-many") == "int"
    assert re.search(
        r'Argument "a" to "submit" of "Task" .* "str"; expected "int"', error("wrong-type")
    )
    assert re.search(
        r'Argument "a" to "submit" of "TaskOptions" .* "str"; expected "int"',
        error("options-wrong-type"),
    )
    assert 'Unexpected keyword argument "c"' in error("options-unknown")
    assert 'Missing positional argument "a"' in error("options-missing")
    assert 'Argument "priority" to "options"' in error("option-type")
    assert re.search(r"Job\[int\].*Job\[str\]", error("wrong-job-type"))
    # Nothing else: the typed API itself checks cleanly under --strict.
    assert by_marker == {}, by_marker
