"""A real ``redis-server`` on a free loopback port, for tests, benchmarks and soak runs.

It keeps nothing on disk (``--save ''``, ``--appendonly no``) and can be
stopped and started again on the same port (outage tests).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


class RedisNotInstalled(RuntimeError):
    """``redis-server`` is not on PATH."""


REDIS_BINARY = "redis-server"
START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """One ``redis-server`` child process on 127.0.0.1; ``start``/``stop`` may repeat."""

    def __init__(self, workdir: Path, port: int | None = None, persist: bool = False):
        """``persist``: append-only file fsynced on every write, so a SIGKILLed server restarts with its data."""
        self.workdir = workdir
        self.persist = persist
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which(REDIS_BINARY)
        if binary is None:
            raise RedisNotInstalled(
                f"{REDIS_BINARY} is not on PATH; install it (apt-get install redis-server, or run ./dev setup)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        cmd = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", "always",
            "--dir", str(self.workdir),
            "--daemonize", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} on port {self.port}:\n{tail}")
            if _pings(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING within {START_TIMEOUT_S} s")

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (``start`` brings it back on the same port)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


def start_on_free_port(workdir: Path, attempts: int = 5, persist: bool = False) -> RedisProcess:
    """Start a server, trying other ports if one was taken between choosing and binding it."""
    error: Exception | None = None
    for _ in range(attempts):
        server = RedisProcess(workdir, persist=persist)
        try:
            server.start()
            return server
        except RuntimeError as exc:
            error = exc
    raise RuntimeError(f"could not start redis-server after {attempts} attempts: {error}")
