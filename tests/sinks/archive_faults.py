"""Test helper: a local filesystem (pyarrow ``PyFileSystem``) whose file writes fail on demand.

The Parquet archive sink writes through pyarrow filesystems; a real disk or
object store will not fail on cue, so ``FaultyFileSystem`` wraps the local one
and makes chosen output streams write half their bytes, then raise ``OSError``
(a full disk, a dropped connection). It records the paths it opened and moved.
With ``object_store=True`` it creates missing parent directories on write, as
an object store has none to create.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

__all__ = ["FaultyFileSystem", "faulty_filesystem"]


class _HalfWriter:
    """A writable file object that writes half of the first write, then raises."""

    def __init__(self, stream: pa.NativeFile) -> None:
        self._stream = stream
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._stream.write(view[: len(view) // 2])
        self._stream.flush()
        raise OSError("No space left on device (simulated)")

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
            self.closed = True


class FaultyFileSystem(pafs.FileSystemHandler):
    """Local files; the n-th output stream (0-based, counted over the handler's life) fails if ``fail(n, path)``."""

    def __init__(
        self, fail: Callable[[int, str], bool] = lambda n, path: False, name: str = "faulty", object_store: bool = False
    ) -> None:
        self.local = pafs.LocalFileSystem()
        self.object_store = object_store
        self.fail = fail
        self.name = name
        self.opened: list[str] = []
        self.moved: list[tuple[str, str]] = []

    def get_type_name(self) -> str:
        return self.name

    def open_output_stream(self, path: str, metadata: Any) -> pa.NativeFile:
        n = len(self.opened)
        self.opened.append(path)
        if self.object_store:
            self.local.create_dir(path.rsplit("/", 1)[0], recursive=True)
        stream = self.local.open_output_stream(path, compression=None)
        if self.fail(n, path):
            return pa.PythonFile(_HalfWriter(stream), mode="w")
        return stream

    def move(self, src: str, dest: str) -> None:
        self.moved.append((src, dest))
        self.local.move(src, dest)

    # The rest delegates to the local filesystem.
    def normalize_path(self, path: str) -> str:
        return self.local.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to empty the root directory")

    def delete_file(self, path: str) -> None:
        self.local.delete_file(path)

    def copy_file(self, src: str, dest: str) -> None:
        self.local.copy_file(src, dest)

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.local.open_input_stream(path)

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self.local.open_input_file(path)

    def open_append_stream(self, path: str, metadata: Any) -> pa.NativeFile:
        return self.local.open_append_stream(path)


def faulty_filesystem(
    fail: Callable[[int, str], bool] = lambda n, path: False, name: str = "faulty", object_store: bool = False
) -> tuple[pafs.PyFileSystem, FaultyFileSystem]:
    """A pyarrow filesystem over a :class:`FaultyFileSystem`, and the handler (to inspect or re-arm)."""
    handler = FaultyFileSystem(fail, name, object_store)
    return pafs.PyFileSystem(handler), handler
