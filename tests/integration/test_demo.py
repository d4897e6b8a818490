"""`asyncq demo` as a user runs it: the console script in a subprocess, against its
own receivers on 127.0.0.1; its report opened in headless Chromium.

Two runs start together (module fixture), so the suite waits for the longer one
only: a quick run that must pass its own checks, and one whose email receiver
allows fewer calls than the queue sends, which must fail them.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from asyncq.cli import main

ASYNCQ = Path(sys.executable).with_name("asyncq")  # this checkout's console script
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Run:
    returncode: int
    out: str
    report: Path

    @property
    def journal_dir(self) -> Path:
        found = re.search(r"journal in (\S+)", self.out)
        assert found, self.out
        return Path(found.group(1))


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _read_all(fd: int, into: list[bytes]) -> None:
    """Read a pseudo-terminal until the program closes it (EIO on Linux)."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        into.append(chunk)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """Both demo runs, started at once; each with its report in a directory of its own.

    The quick run has a terminal (a pseudo-terminal), so it shows the live view; the
    other writes to a pipe, so it prints plain lines."""
    commands = {
        "quick": ["--quick"],
        # The queue sends 16 emails a second; this receiver allows 12: it must count
        # violations, and the demo must say so and fail.
        "strict": ["--duration", "8", "--email-limit", "12", "--keep"],
    }
    env = {**os.environ, "COLUMNS": "150", "LINES": "60", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    started = {}
    for name, options in commands.items():
        workdir = tmp_path_factory.mktemp(f"demo-{name}")
        report = workdir / "report.html"
        command = [str(ASYNCQ), "demo", "--report", str(report), *options]
        if name == "quick":
            leader, follower = pty.openpty()
            proc = subprocess.Popen(
                command, cwd=workdir, env=env, stdin=follower, stdout=follower, stderr=follower
            )
            os.close(follower)
            screen: list[bytes] = []
            reader = threading.Thread(target=_read_all, args=(leader, screen), daemon=True)
            reader.start()
            started[name] = (proc, report, (leader, reader, screen))
        else:
            proc = subprocess.Popen(
                command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            started[name] = (proc, report, None)
    done = {}
    for name, (proc, report, terminal) in started.items():
        if terminal is None:
            out, _ = proc.communicate(timeout=90)
        else:
            leader, reader, screen = terminal
            proc.wait(timeout=90)
            reader.join(timeout=10)
            os.close(leader)
            out = ANSI.sub("", b"".join(screen).decode(errors="replace"))
        done[name] = Run(proc.returncode, out, report)
    yield done
    shutil.rmtree(done["strict"].journal_dir, ignore_errors=True)


def test_the_quick_demo_passes_its_own_checks(runs: dict[str, Run]) -> None:
    run = runs["quick"]
    assert run.returncode == 0, run.out
    assert "what the receivers counted" in run.out
    summary = run.out.split("what the receivers counted")[-1]
    for destination in ("email", "crm", "enrichment"):
        row = re.search(rf"│ {destination}\s+│\s+(\d+) │\s+(\d+) │\s+(\d+) │", summary)
        assert row, summary
        submitted, delivered, lost = map(int, row.groups())
        assert submitted > 0
        assert delivered == submitted
        assert lost == 0
    assert "passed: no receiver saw its limit exceeded, every job was delivered" in run.out
    assert "FAILED" not in run.out
    # The backlog alert fired when the CRM went down and cleared once it was back.
    assert re.search(r"backlog alert on crm: fired at [\d.]+ s \(\w+\), cleared at", run.out)
    # On a terminal it showed the live view: the queue as `asyncq top` shows it, and
    # the receivers' side.
    assert "the queue (asyncq top)" in run.out
    assert re.search(r"destination +depth +ready +running +oldest +in/s", run.out)
    assert "what the receivers see" in run.out
    # The stories were played: the CRM went down and came back, its dead letters
    # were redriven, the enrichment API pushed back once.
    assert "the CRM goes down: it answers 503" in run.out
    assert "the CRM is back" in run.out
    assert "the operator redrives" in run.out
    assert f"report: {run.report.resolve()}" in run.out
    assert run.report.stat().st_size > 100_000  # Chart.js is inside
    assert not run.journal_dir.exists()  # the temporary journal is gone


def test_a_receiver_limit_below_the_queues_pace_fails_the_demo(runs: dict[str, Run]) -> None:
    run = runs["strict"]
    assert run.returncode == 1, run.out
    assert re.search(r"FAILED email: the receiver saw its terms broken \d+ time", run.out)
    assert "passed:" not in run.out
    # Off a terminal: plain progress lines, no live view.
    assert re.search(r"\d s  email: \d+ ok, \d+ left, \d+/12 calls/s \| crm: ", run.out)
    assert "the queue (asyncq top)" not in run.out
    assert "FAILED crm" not in run.out  # the other receivers' checks still pass
    assert "FAILED enrichment" not in run.out
    page = run.report.read_text()
    assert "Checks failed" in page
    assert run.journal_dir.is_dir()  # --keep
    assert (run.journal_dir / "demo.db").exists()


def _require_chromium() -> str:
    if CHROMIUM is None:
        reason = "headless Chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("ASYNCQ_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ASYNCQ_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return CHROMIUM


def test_the_report_draws_its_charts_in_headless_chromium(
    runs: dict[str, Run], tmp_path: Path
) -> None:
    chromium = _require_chromium()
    report = runs["quick"].report
    done = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # The page's script marks each chart once Chart.js has drawn it with its points.
    assert '<body data-charts-drawn="5">' in dom, dom[:500]
    canvases = dict(re.findall(r'<canvas id="([\w-]+)"[^>]*data-points="(\d+)"', dom))
    assert set(canvases) == {"calls-email", "calls-crm", "calls-enrichment", "depth", "retries"}
    seconds = int(re.search(r'"length":(\d+)', report.read_text()).group(1))  # type: ignore[union-attr]
    # One point a second for each line of calls; depth is sampled four times a second.
    assert int(canvases["calls-email"]) >= 2 * seconds
    assert int(canvases["depth"]) >= 3 * 2 * seconds


def test_the_demo_without_its_extra_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['rich'] = None\n"
        "from asyncq.cli import main\n"
        "raise SystemExit(main(['demo', '--quick']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "asyncq demo needs rich: pip install 'asyncq[demo]'"


def test_a_duration_too_short_to_play_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--duration", "2"]) == 2
    assert capsys.readouterr().err == "asyncq demo: --duration must be at least 8 seconds\n"


ROOT = Path(__file__).resolve().parents[2]


def test_the_readmes_first_command_installs_the_extra_and_runs_the_demo() -> None:
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"```sh\n(.*?)```", readme, flags=re.DOTALL)
    assert first is not None
    command = [line for line in first.group(1).splitlines() if not line.startswith("#")]
    assert command == [
        'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[demo]" && asyncq demo'
    ]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {re.split(r"[<>=\[ ]", spec)[0] for spec in extras["demo"]}
    assert names == {"aiohttp", "rich"}
    assert names <= {re.split(r"[<>=\[ ]", spec)[0] for spec in extras["dev"]}
    assert (ROOT / "docs" / "demo-report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_report_path_that_cannot_be_written_is_refused_before_the_demo_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("")
    report = tmp_path / "a-file" / "report.html"
    assert main(["demo", "--quick", "--report", str(report)]) == 2
    assert capsys.readouterr().err == (
        f"asyncq demo: cannot write the report to {report}: File exists\n"
    )
