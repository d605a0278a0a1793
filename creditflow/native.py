"""Compiled hot paths: the per-event modules built with mypyc, loaded only while they match their source.

The flow spends most of its time in plain Python over small objects (journeys, device graphs,
channel rules, windows). mypyc compiles those typed modules to C extensions: same code, same
semantics, about a fifth fewer instructions per event (``loadtest.flow_instructions``).

``build()`` compiles ``NATIVE_MODULES`` into ``.native/`` beside the packages (or
``$CREDITFLOW_NATIVE_DIR``) with a manifest of each source file's sha256. ``install()``, called by
the ``creditflow`` package as it is imported (``state``, ``operators`` and ``schemas`` import it
first), puts a finder in
front of the normal import system that serves those modules from the build, all of them or none:

- ``CREDITFLOW_PURE=1`` in the environment: none, plain Python.
- no build or a build for another Python: none, plain Python.
- a stale build (a listed source changed, a module added to or dropped from the list): none, plain
  Python, with one warning naming the file and the command that rebuilds (``./dev setup``).

All or none because compiled modules call each other's classes natively: a compiled
``state.journeys`` cannot take a pure ``state.journey_state.Journey``. Snapshots are the same
pickles either way (``tests/recovery/test_kill_harness.py`` resumes one store across the two modes).

>>> NATIVE_MODULES[0]
'state/journey_state.py'
>>> status().mode in ("native", "pure")
True
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["NATIVE_MODULES", "NativeStatus", "build", "install", "module_name", "native_dir", "status"]

NATIVE_MODULES: tuple[str, ...] = (
    "state/journey_state.py",
    "state/journeys.py",
    "state/device_graph.py",
    "state/probable_links.py",
    "state/user_devices.py",
    "state/kpi_windows.py",
    "state/shard_store.py",
    "state/conversion_dedup.py",
    "state/event_dedup.py",
    "operators/sharded.py",
    "operators/parcels.py",
    "creditflow/channels.py",
    "creditflow/pii.py",
    "creditflow/attribution.py",
    "creditflow/kpis.py",
    "creditflow/consent.py",
    "schemas/decode.py",
    "sources/redis_streams.py",
)
"""Source files compiled, relative to the project root. Not here: modules with Bytewax ``@operator``
functions (bytewax reads their signatures, which compiled functions lack), ``creditflow/events.py``
(builds its record classes with ``exec``), the ClickHouse sink (its rows key tables by class
attributes, which compiled slotted classes turn into slots; its writer has a ``_thread`` attribute,
a C keyword once mangled) and ``creditflow/forgotten.py`` (the same class attribute). Routing,
progress, the state guard, wake times and the weights scorer compiled and passed, but saved no
measurable instruction (``loadtest.flow_instructions``), so they stay plain."""

MANIFEST = "manifest.json"
PURE_ENV = "CREDITFLOW_PURE"
DIR_ENV = "CREDITFLOW_NATIVE_DIR"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class NativeStatus:
    """What ``install()`` decided: ``mode`` is ``"native"`` or ``"pure"``, ``reason`` says why."""

    mode: str
    reason: str
    modules: int = 0
    stale: bool = False
    """A build exists but no longer matches the sources: ``install()`` warns."""


def native_dir() -> Path:
    """Where the build lives: ``$CREDITFLOW_NATIVE_DIR`` or ``.native/`` at the project root."""
    return Path(os.environ.get(DIR_ENV) or ROOT / ".native")


def module_name(source: str) -> str:
    """The import name of a ``NATIVE_MODULES`` entry.

    >>> module_name("state/journeys.py")
    'state.journeys'
    """
    return source.removesuffix(".py").replace("/", ".")


def _stale(reason: str) -> tuple[NativeStatus, dict[str, Path]]:
    return NativeStatus("pure", f"{reason} (rebuild: ./dev setup)", stale=True), {}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _abi() -> str:
    """The extension suffix names the interpreter ABI; a build for another Python must not load."""
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def _check(directory: Path, *, honour_env: bool = True) -> tuple[NativeStatus, dict[str, Path]]:
    """What to load from ``directory``: the decision and, when native, each module's file by name."""
    if honour_env and os.environ.get(PURE_ENV, "") not in ("", "0"):
        return NativeStatus("pure", f"{PURE_ENV}={os.environ[PURE_ENV]} in the environment"), {}
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return NativeStatus("pure", f"no native build in {directory} (build it: ./dev setup)"), {}
    try:
        return _match(directory, manifest)
    except (AttributeError, KeyError, TypeError) as error:  # e.g. a hand-edited or truncated manifest
        return _stale(f"the native build's {directory / MANIFEST} is malformed ({error!r})")


def _match(directory: Path, manifest: dict[str, Any]) -> tuple[NativeStatus, dict[str, Path]]:
    """The decision for a parsed manifest: every listed source built and unchanged, every file there."""
    if manifest.get("abi") != _abi():
        return NativeStatus("pure", f"the native build is for {manifest.get('abi')}, this Python is {_abi()}"), {}
    modules = manifest.get("modules", {})
    extra = sorted(set(modules) - set(NATIVE_MODULES))
    if extra:  # compiled together, they expect each other compiled
        return _stale(f"the native build has {extra[0]}, no longer compiled")
    files: dict[str, Path] = {}
    for source in NATIVE_MODULES:
        entry = modules.get(source)
        if entry is None:
            return _stale(f"the native build lacks {source}")
        if _sha256(ROOT / source) != entry["sha256"]:
            return _stale(f"{source} changed since the native build")
        files[module_name(source)] = directory / entry["file"]
    for name, file in manifest.get("support", {}).items():
        files[name] = directory / file
    missing = [str(f) for f in files.values() if not f.exists()]
    if missing:
        return _stale(f"the native build misses {missing[0]}")
    return NativeStatus("native", f"{len(NATIVE_MODULES)} modules compiled by mypyc", len(NATIVE_MODULES)), files


class _NativeFinder(importlib.abc.MetaPathFinder):
    """Serves the compiled modules by name; every other import falls through to the normal finders."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, str(file), loader=loader)


_status: NativeStatus | None = None


def install() -> NativeStatus:
    """Decide once per process and, when the build matches, serve the compiled modules."""
    global _status
    if _status is None:
        _status, files = _check(native_dir())
        if files:
            sys.meta_path.insert(0, _NativeFinder(files))
        elif _status.stale:
            warnings.warn(f"creditflow runs as plain Python: {_status.reason}", RuntimeWarning, stacklevel=2)
    return _status


def status() -> NativeStatus:
    """The mode this process runs in (installs the finder if nothing has yet)."""
    return install()


def build(directory: Path | None = None, *, force: bool = False, opt_level: str = "3") -> Path:
    """Compile ``NATIVE_MODULES`` into ``directory`` (default ``native_dir()``); skip if already fresh.

    Runs mypyc on copies of the sources in a scratch directory, so the work tree gets no ``.so`` or
    ``build/`` litter, then replaces the old build. Needs mypy (the ``dev`` extra) and a C compiler.
    """
    directory = directory or native_dir()
    if not force and _check(directory, honour_env=False)[0].mode == "native":
        print(f"[native] {directory} is up to date", file=sys.stderr)
        return directory
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="creditflow-native-") as scratch:
        stage = Path(scratch)
        for package in ("creditflow", "state", "operators", "sinks", "schemas", "sources", "flows", "jobs"):
            if (ROOT / package).is_dir():
                shutil.copytree(ROOT / package, stage / package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        setup = (
            "import sys\n"
            "from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            f"setup(name='creditflow-native', ext_modules=mypycify(sys.argv[1:], opt_level={opt_level!r}),\n"
            "      script_args=['build_ext', '--inplace', '--quiet'])\n"
        )
        (stage / "build_native.py").write_text(setup)
        print(f"[native] compiling {len(NATIVE_MODULES)} modules with mypyc (about a minute)...", file=sys.stderr)
        done = subprocess.run(
            [sys.executable, "build_native.py", "--ignore-missing-imports", *NATIVE_MODULES],
            cwd=stage,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(
                "mypyc could not compile creditflow's hot modules; creditflow still runs as plain Python.\n"
                f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        built = stage / (directory.name + ".new")
        built.mkdir()
        suffix = _abi()
        modules = {}
        for source in NATIVE_MODULES:
            so = Path(source.removesuffix(".py") + suffix)
            (built / so.parent).mkdir(parents=True, exist_ok=True)
            shutil.copy2(stage / so, built / so)
            modules[source] = {"sha256": _sha256(ROOT / source), "file": str(so)}
        support = {}
        for shared in stage.glob(f"*__mypyc{suffix}"):
            shutil.copy2(shared, built / shared.name)
            support[shared.name.removesuffix(suffix)] = shared.name
        manifest = {"abi": suffix, "python": sys.version, "modules": modules, "support": support}
        (built / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if directory.exists():
            shutil.rmtree(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(built), str(directory))
    print(f"[native] built {directory} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return directory


def main(argv: Sequence[str] | None = None) -> int:
    """``creditflow native status`` or ``creditflow native build [--force]``."""
    args = list(argv if argv is not None else sys.argv[1:])
    if args[:1] == ["build"]:
        try:
            build(force="--force" in args)
        except RuntimeError as error:
            print(f"[native] {error}", file=sys.stderr)
            return 1
        return 0
    print(f"{status().mode}: {status().reason}")
    return 0
