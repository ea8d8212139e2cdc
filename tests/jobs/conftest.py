"""A real redis-server for the job-store tests: AOF with fsync always in a tmp dir, killable
(SIGKILL) and restartable on the same port and dir to test riding out a Redis restart."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, binary: str, dir: Path):
        self.binary = binary
        self.dir = dir
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        # Not daemonized: the test holds the process, so it can SIGKILL it.
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if r.ping():
                        return
                except redis.exceptions.ConnectionError:  # refused, or LOADING the AOF
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {self.dir / 'redis.log'}")
                time.sleep(0.02)
        finally:
            r.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: with appendfsync always every acknowledged write is on disk
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture(scope="session")
def redis_binary() -> str:
    from ponder.jobs.embedded import EmbeddedRedisError, redis_server_binary

    try:
        return redis_server_binary()
    except EmbeddedRedisError as e:
        pytest.skip(str(e))


@pytest.fixture
def redis_server(redis_binary: str, tmp_path: Path):
    d = tmp_path / "redis"
    d.mkdir()
    server = RedisServer(redis_binary, d)
    server.start()
    yield server
    server.kill()
