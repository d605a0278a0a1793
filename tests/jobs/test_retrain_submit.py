"""The same retrain entry point submitted to a Ray cluster with `ray job submit` (token authentication on)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from loadtest.retrain_speed import write_archive

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ray_job_submit_runs_the_retrain_on_a_cluster(tmp_path: Path) -> None:
    write_archive(tmp_path / "archive", journeys=3000, seed=3)
    ray = str(Path(sys.executable).parent / "ray")
    port, dash = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    head = [ray, "start", "--head", f"--port={port}", f"--dashboard-port={dash}", "--include-dashboard=true",
            "--num-cpus=2", f"--temp-dir={tempfile.mkdtemp(prefix='ray', dir='/tmp')}"]  # fmt: skip
    # (a short --temp-dir: Ray's Unix sockets live under it and their paths are limited to 107 bytes)
    started = subprocess.run(head, capture_output=True, text=True, env=env, timeout=120)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        submit = [ray, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", str(REPO),
                  "--entrypoint-num-cpus", "0", "--",
                  sys.executable, "-m", "jobs.retrain", "--archive", str(tmp_path / "archive"), "--dry-run",
                  "--out", str(tmp_path / "report.json")]  # fmt: skip
        done = subprocess.run(submit, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        assert "succeeded" in done.stdout + done.stderr
        assert "Ray connected" in done.stdout + done.stderr  # used the cluster, did not start its own
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
    (tenant,) = json.loads((tmp_path / "report.json").read_text())["tenants"]
    assert tenant["status"] == "trained" and tenant["journeys"] == 3000
