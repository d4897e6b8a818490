"""The README's quickstart is the example file, and it runs as written."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_quickstart_in_the_readme_is_examples_quickstart() -> None:
    quickstart = (ROOT / "examples" / "quickstart.py").read_text()
    assert quickstart in readme_python_blocks()


def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    script = ROOT / "examples" / "quickstart.py"
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "returned 200" in done.stdout
    assert "4 jobs succeeded in this run" in done.stdout
    assert "the journal holds 4 succeeded and 0 pending jobs" in done.stdout
    assert list(tmp_path.iterdir()) == []  # no journal left in the working directory


def test_the_quickstart_reports_the_same_counts_when_run_again(tmp_path: Path) -> None:
    script = ROOT / "examples" / "quickstart.py"
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "the journal holds 4 succeeded and 0 pending jobs" in done.stdout


def test_the_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in readme
    assert "python -m pytest -q" in ci
    assert 'pip install -e ".[dev]"' in readme
    assert 'pip install --quiet -e ".[dev]"' in ci


def test_the_readmes_refer_only_to_files_in_the_repository() -> None:
    for readme in (ROOT / "README.md", ROOT / "benchmarks" / "README.md"):
        text = readme.read_text()
        named = set(re.findall(r"[\w./-]+/[\w.-]+\.(?:py|md|txt|png|toml)\b", text))
        missing = [
            name
            for name in named
            if not any((base / name).exists() for base in (ROOT, readme.parent, ROOT / "asyncq"))
        ]
        assert missing == [], readme
