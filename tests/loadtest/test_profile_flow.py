"""The profile breakdown: every component of the flow shows up and the shares add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_profile_names_where_the_time_goes(tmp_path: Path) -> None:
    # as a command: it profiles the plain-Python modules even where the compiled ones are built
    out = tmp_path / "profile.json"
    cmd = [sys.executable, "-m", "loadtest.profile_flow", "--persons", "300", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "journeys" in done.stdout
    shares = result["shares"]
    assert sum(shares.values()) == pytest.approx(1.0, abs=0.01)
    for component in ("decode", "journeys", "windows", "sink", "bytewax + snapshots"):
        assert shares.get(component, 0) > 0.005, (component, shares)
    assert result["events"] > 1000 and result["profiled_events_per_s"] > 0
