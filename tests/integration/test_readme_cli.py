"""The README's `asyncq` commands are commands the parser takes, the extra it names
exists, and the example its `asyncq top` excerpt came from runs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from asyncq._cli._main import parser
from asyncq.cli import main

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[list[str]]:
    """Every `asyncq ...` line of the README's shell blocks, its comment cut off."""
    text = (ROOT / "README.md").read_text()
    lines = [
        line.split("#")[0].strip()
        for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
        for line in block.splitlines()
    ]
    return [shlex.split(line)[1:] for line in lines if line.startswith("asyncq ")]


def test_every_command_of_the_readme_is_taken_by_the_parser() -> None:
    commands = readme_commands()
    named = {command[0] for command in commands}
    assert named >= {
        "worker", "top", "stats", "jobs", "show", "dead", "redrive", "purge", "pause", "cancel",
        "vacuum",
    }  # fmt: skip
    for command in commands:
        parser().parse_args(command)  # a usage error would exit


def test_the_extra_the_readme_names_holds_rich() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "pip install 'asyncq[cli]'" in (ROOT / "README.md").read_text()
    assert any(dep.startswith("rich") for dep in project["optional-dependencies"]["cli"])
    assert all(not dep.startswith("rich") for dep in project["dependencies"])


def test_the_operations_example_leaves_work_to_look_at(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "ops.db"
    example = ROOT / "examples" / "operations.py"
    done = subprocess.run(
        [sys.executable, str(example), str(journal), "--seconds", "0.2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert main(["stats", str(journal), "--json"]) == 0
    destinations = json.loads(capsys.readouterr().out)["destinations"]
    assert set(destinations) == {"crm", "email", "enrich"}
    assert sum(destinations["email"][state] for state in ("ready", "succeeded")) == 300
