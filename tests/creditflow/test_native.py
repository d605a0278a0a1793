"""The compiled modules load only from a build that matches every source, and never when told not to."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import creditflow.native as native
from creditflow.native import NATIVE_MODULES, PURE_ENV, ROOT, module_name, native_dir, status


def fake_build(directory: Path, **changes: object) -> Path:
    """A manifest (and empty files) describing a build of the current sources, with ``changes`` applied."""
    modules = {}
    for source in NATIVE_MODULES:
        file = Path(source.removesuffix(".py") + native._abi())
        (directory / file).parent.mkdir(parents=True, exist_ok=True)
        (directory / file).write_bytes(b"")
        modules[source] = {"sha256": native._sha256(ROOT / source), "file": str(file)}
    manifest: dict[str, object] = {"abi": native._abi(), "modules": modules, "support": {}}
    manifest.update(changes)
    (directory / native.MANIFEST).write_text(json.dumps(manifest))
    return directory


def test_a_build_of_the_current_sources_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PURE_ENV, raising=False)
    decided, files = native._check(fake_build(tmp_path))
    assert decided.mode == "native" and decided.modules == len(NATIVE_MODULES)
    assert files["state.journeys"] == tmp_path / f"state/journeys{native._abi()}"


def test_one_changed_source_makes_every_module_plain_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PURE_ENV, raising=False)
    fake_build(tmp_path)
    manifest = json.loads((tmp_path / native.MANIFEST).read_text())
    manifest["modules"]["creditflow/kpis.py"]["sha256"] = "0" * 64
    (tmp_path / native.MANIFEST).write_text(json.dumps(manifest))
    decided, files = native._check(tmp_path)
    assert (decided.mode, files) == ("pure", {})
    assert "creditflow/kpis.py changed since the native build (rebuild: ./dev setup)" in decided.reason


def test_a_build_with_a_module_no_longer_listed_is_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PURE_ENV, raising=False)
    fake_build(tmp_path)
    manifest = json.loads((tmp_path / native.MANIFEST).read_text())
    manifest["modules"]["sinks/old.py"] = {"sha256": "0" * 64, "file": "sinks/old.so"}
    (tmp_path / native.MANIFEST).write_text(json.dumps(manifest))
    decided, files = native._check(tmp_path)
    assert (decided.mode, files) == ("pure", {})
    assert "the native build has sinks/old.py, no longer compiled (rebuild: ./dev setup)" in decided.reason


@pytest.mark.parametrize("manifest", ['["a list"]', '{"abi": "%s", "modules": {"state/journey_state.py": {}}}'])
def test_a_malformed_manifest_is_a_stale_build_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manifest: str
) -> None:
    monkeypatch.delenv(PURE_ENV, raising=False)
    (tmp_path / native.MANIFEST).write_text(manifest.replace("%s", native._abi()))
    decided, files = native._check(tmp_path)
    assert (decided.mode, decided.stale, files) == ("pure", True, {})
    assert "manifest.json is malformed" in decided.reason and "(rebuild: ./dev setup)" in decided.reason


@pytest.mark.parametrize(
    ("env", "changes", "reason"),
    [
        ("1", {}, "CREDITFLOW_PURE=1 in the environment"),
        ("", {"abi": ".cpython-39-x86_64-linux-gnu.so"}, "the native build is for .cpython-39"),
        ("", {"modules": {}}, "the native build lacks state/journey_state.py"),
    ],
)
def test_plain_python_when_told_or_built_for_something_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str, changes: dict[str, object], reason: str
) -> None:
    monkeypatch.setenv(PURE_ENV, env)
    decided, files = native._check(fake_build(tmp_path, **changes))
    assert (decided.mode, files) == ("pure", {})
    assert reason in decided.reason


def test_no_build_is_plain_python_with_the_command_that_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PURE_ENV, raising=False)
    decided, _ = native._check(tmp_path / "nothing")
    assert decided.mode == "pure" and "./dev setup" in decided.reason


def test_this_process_runs_the_modules_its_status_names() -> None:
    import state.journeys

    compiled = Path(state.journeys.__file__).suffix == ".so"
    assert compiled == (status().mode == "native"), (status(), state.journeys.__file__)
    if compiled:
        assert Path(state.journeys.__file__).is_relative_to(native_dir())


@pytest.mark.slow
def test_a_stale_build_warns_and_loads_nothing_compiled(tmp_path: Path) -> None:
    if status().mode != "native":
        pytest.skip(f"no fresh native build here: {status().reason}")
    stale = shutil.copytree(native_dir(), tmp_path / "native")
    manifest = json.loads((stale / native.MANIFEST).read_text())
    manifest["modules"]["state/journeys.py"]["sha256"] = "0" * 64
    (stale / native.MANIFEST).write_text(json.dumps(manifest))
    env = {**os.environ, native.DIR_ENV: str(stale)}
    env.pop(PURE_ENV, None)
    code = "import state.journeys as j, state.journey_state as s; print(j.__file__, s.__file__)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.split() == [str(ROOT / "state/journeys.py"), str(ROOT / "state/journey_state.py")]
    assert "creditflow runs as plain Python: state/journeys.py changed since the native build" in done.stderr


@pytest.mark.parametrize("source", [s for s in NATIVE_MODULES if ">>>" in (ROOT / s).read_text()])
def test_the_doctests_of_each_compiled_module_pass_against_the_compiled_module(source: str) -> None:
    name = module_name(source)
    module = importlib.import_module(name)
    if Path(module.__file__ or "").suffix != ".so":
        pytest.skip("plain Python: pytest --doctest-modules runs these doctests itself")
    spec = importlib.util.spec_from_file_location(name, ROOT / source)
    assert spec is not None and spec.loader is not None
    docs = importlib.util.module_from_spec(spec)  # the source, for its docstrings; never put in sys.modules
    spec.loader.exec_module(docs)
    sys.modules[name] = docs  # DocTestFinder takes only what inspect.getmodule places in the module
    try:
        tests = [t for t in doctest.DocTestFinder().find(docs, name) if t.examples]
    finally:
        sys.modules[name] = module
    assert tests, f"{source} has examples but none were found"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)  # pytest's default doctest flags
    report: list[str] = []
    for test in tests:
        test.globs = dict(module.__dict__)  # the examples run against the compiled module
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
    assert runner.tries >= len(tests)


def test_the_cli_says_which_mode_this_python_runs_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    from creditflow.cli import main

    assert main(["native", "status"]) == 0
    assert capsys.readouterr().out == f"{status().mode}: {status().reason}\n"
