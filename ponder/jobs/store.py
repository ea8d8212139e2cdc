"""The results store of an eval job: one record per (problem, strategy, budget, config).

`ResultStore` is the tiny interface the CLI needs (`done_keys`, `append`, `records`); the local
implementation is an append-only JSONL file, and a Redis-backed store can implement the same
interface (DESIGN.md: results keyed by job, problem id and config fingerprint).

Resume semantics, shared by every implementation:
- a record's key is (problem id, strategy, budget label, config fingerprint);
- a key is done once it has a record whose stop_reason is not "error" (errors are retried);
- `records()` gives the latest record per key, so a retried error is superseded, never doubled.

The JSONL file survives crashes: each record is one `write` of a full line followed by flush and
fsync, so at most the last line can be torn; a torn last line is dropped (and cut from the file
before the next append) without losing the lines before it.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ponder.config import PonderConfig

Key = tuple[str, str, str, str]


class StoreError(ValueError):
    """A results file that cannot be used; the message is one line for the user."""


def record_key(record: dict[str, Any]) -> Key:
    return (str(record["id"]), str(record["strategy"]), str(record["budget"]), str(record["fingerprint"]))


def config_fingerprint(config: PonderConfig, strategy: str, params: dict[str, Any] | None = None) -> str:
    """A short stable hash of what changes a result: the engines, the search settings and the
    strategy's parameters. Output paths, batching, concurrency and the cluster layout do not
    change results (per-request seeds make them batch-independent), so they are left out;
    strategy and budget are separate parts of the key."""

    def engine(e: Any) -> dict[str, Any]:
        return {"kind": e.kind, "path": e.path, "dtype": e.dtype, "options": e.options}

    s, sc = config.search, config.scheduler
    material = {
        "policy": engine(config.policy),
        "reward": engine(config.reward),
        "search": {
            "temperature": s.temperature,
            **({"top_p": s.top_p} if s.top_p != 1.0 else {}),  # absent at the default: old keys stay valid
            "max_step_tokens": s.max_step_tokens,
            "max_steps": s.max_steps,
            "seed": s.seed,
        },
        "scheduler": {
            "prm_cost_ratio": sc.prm_cost_ratio,
            **({"cache_discount": sc.cache_discount} if sc.cache_discount else {}),  # old keys stay valid
            "allocation_table": _file_digest(sc.allocation_table),  # its content: calibrate rewrites it
            "probe_samples": sc.probe_samples,
            "job_budget": getattr(sc, "job_budget", None),  # the ledger's total for `auto`
        },
        "strategy": strategy,
        "params": params or {},
    }
    blob = json.dumps(material, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _file_digest(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return str(path)


class ResultStore(ABC):
    warnings: list[str]  # problems found while opening (e.g. a torn last line)
    @abstractmethod
    def done_keys(self) -> set[Key]:
        """Keys with a finished (non-error) record: skipped on resume."""

    @abstractmethod
    def append(self, record: dict[str, Any]) -> None:
        """Store one record durably before returning."""

    @abstractmethod
    def records(self) -> list[dict[str, Any]]:
        """The latest record per key, in first-seen order."""

    def close(self) -> None:
        pass


class JsonlStore(ResultStore):
    """Results in a local JSONL file. Reading never modifies the file; the first `append`
    opens it for appending (after cutting a torn last line), so a run that fails validation
    leaves an existing file byte-identical."""

    def __init__(self, path: str | os.PathLike[str], *, writer: bool = False):
        self.path = Path(path)
        self._lock_fd: int | None = None
        if writer:
            self._lock()
        self._records: list[dict[str, Any]] = []
        self._valid_bytes = 0  # file length up to and including the last complete record
        self._needs_newline = False  # last record is complete JSON but lacks its newline
        self._torn = False
        self._file: Any = None
        self.warnings: list[str] = []  # for the caller to show once the run is under way
        self._load()

    def _lock(self) -> None:
        """One writer per results file: two processes appending to one file lose records (a torn
        line cut by one is the other's whole record). The lock is on the file itself, taken before
        it is read, and held until `close`; a second writer fails at once."""
        import fcntl

        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"results path {self.path} is not a file")
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"cannot open results file {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"results file {self.path} is being written by another ponder process; "
                             "wait for it to finish or use another --out") from None
        self._lock_fd = fd

    def _load(self) -> None:
        if not self.path.exists():
            return
        if not self.path.is_file():
            raise StoreError(f"results path {self.path} is not a file")
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise StoreError(f"cannot read results file {self.path}: {e.strerror}") from None
        lines = data.split(b"\n")
        offset = 0
        for lineno, raw in enumerate(lines, 1):
            last = lineno == len(lines)
            end = offset + len(raw) + (0 if last else 1)
            if raw.strip():
                rec = self._parse(raw)
                if rec is not None:
                    self._records.append(rec)
                    self._valid_bytes = end
                    self._needs_newline = last
                elif last:
                    # A crash mid-write: the only line that can be torn is the last one.
                    self._torn = True
                    self.warnings.append(f"dropping a truncated last line in {self.path}")
                else:
                    # Never ours (we write whole lines); keep it in the file, but ignore it.
                    self._valid_bytes = end
                    self.warnings.append(f"ignoring malformed line {lineno} of {self.path}")
            else:
                self._valid_bytes = end if not last else self._valid_bytes
            offset = end
        if not self._records and data.strip() and not data.lstrip().startswith(b'{"id"'):
            # Not ours (a dataset, a log): appending would cut its last line and mix records in.
            raise StoreError(f"{self.path} is not a ponder results file (no line of it is a results "
                             "record); choose another --out")

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any] | None:
        try:
            rec = json.loads(raw)
            record_key(rec)
        except (ValueError, KeyError, TypeError):
            return None
        return rec if isinstance(rec, dict) else None

    def done_keys(self) -> set[Key]:
        return {record_key(r) for r in self._records if r.get("stop_reason") != "error"}

    def records(self) -> list[dict[str, Any]]:
        return latest_per_key(self._records)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        f = self._open()
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())
        self._records.append(json.loads(line))

    def _open(self) -> Any:
        if self._file is None:
            if self.path.exists() and self._torn:
                os.truncate(self.path, self._valid_bytes)
                self._torn = False
            self._file = open(self.path, "ab")
            if self._needs_newline:
                self._file.write(b"\n")
                self._needs_newline = False
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class MemoryStore(ResultStore):
    """Results kept in memory only: an eval without `--out`."""

    def __init__(self) -> None:
        self._records: list[dict[str, Any]] = []
        self.warnings = []

    def done_keys(self) -> set[Key]:
        return {record_key(r) for r in self._records if r.get("stop_reason") != "error"}

    def append(self, record: dict[str, Any]) -> None:
        self._records.append(record)

    def records(self) -> list[dict[str, Any]]:
        return latest_per_key(self._records)


def latest_per_key(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest record per key, in first-seen order; a finished record is never replaced by a
    later error for the same key."""
    latest: dict[Key, dict[str, Any]] = {}
    for r in records:
        key = record_key(r)
        if key in latest and r.get("stop_reason") == "error" and latest[key].get("stop_reason") != "error":
            continue
        latest[key] = r
    return list(latest.values())


def open_store(target: str | os.PathLike[str]) -> ResultStore:
    """The store for `target`; only local JSONL files for now (a redis:// URL later)."""
    if str(target).startswith("redis://"):
        raise StoreError("a Redis results store is not available from the CLI yet; use a .jsonl path")
    return JsonlStore(target, writer=True)
