"""The instruction-count benchmark counts the flow's run alone, and checks out the tree it compares with."""

from __future__ import annotations

import pickle
import shutil
import subprocess
from pathlib import Path

import pytest

from loadtest import flow_instructions
from loadtest.flow_cpu import records
from loadtest.flow_instructions import ROOT, CheckoutFailed, ValgrindMissing, checkout, measure, per_event


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_an_event_costs_instructions_of_the_flow_only(tmp_path: Path) -> None:
    path = tmp_path / "records.pkl"
    path.write_bytes(pickle.dumps(records(300, rate=300)))
    per = per_event(ROOT, path, 300)
    # The flow's logic: decode, identity, journeys, models (the process's imports cancel out: ~3.8e9 of them)
    assert 20_000 < per < 3_000_000


def test_a_revision_is_checked_out_where_asked_and_removed_after(tmp_path: Path) -> None:
    into = checkout("HEAD", tmp_path / "head")
    try:
        assert (into / "loadtest" / "flow_instructions.py").read_text() == (
            subprocess.run(
                ["git", "-C", str(ROOT), "show", "HEAD:loadtest/flow_instructions.py"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(into)], check=True)
    listed = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert str(into) not in listed


def test_without_valgrind_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow_instructions.shutil, "which", lambda name: None)
    with pytest.raises(ValgrindMissing, match="install the Debian package 'valgrind'"):
        measure(100, None, say=lambda _: None)
    assert flow_instructions.main(["--events", "100"]) == 2


def test_a_revision_git_does_not_know_is_named_with_what_to_give_instead(tmp_path: Path) -> None:
    with pytest.raises(CheckoutFailed, match="'no-such-revision-x'.*give --against a revision"):
        checkout("no-such-revision-x", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
