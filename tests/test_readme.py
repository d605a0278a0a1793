"""The README's two opening commands are the ones that work, and CI runs the test one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def opening_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README must open with a bash block"
    return [line.split("#")[0].strip() for line in block.group(1).strip().splitlines()]


def test_readme_opens_with_the_demo_and_the_check_command() -> None:
    assert opening_commands() == ["./dev demo", "./dev check"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./dev check" in ci.splitlines()[-1]


@pytest.mark.slow
def test_demo_command_runs_and_prints_the_summary(tmp_path: Path) -> None:
    done = subprocess.run(
        ["./dev", "demo", "--persons", "300", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "Conversions credited per channel and model" in out
    assert "Revenue credited per channel and model" in out
    assert re.search(r"conversions: [1-9]\d* \(\d+ attributed\)", out)
    assert "dead letters: " in out and "dead letters: none" not in out  # the demo includes some bad records
    assert (tmp_path / "demo-credit-by-channel.png").stat().st_size > 10_000
