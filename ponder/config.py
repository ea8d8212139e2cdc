"""One typed config object, loaded from YAML and `a.b=value` overrides, shared by the CLI, the
server and the cluster entry points."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
# The shipped models are package data: an installed ponder (a wheel, a container image) has them.
MODELS_DIR = Path(__file__).resolve().parent / "models"


class ConfigError(ValueError):
    """A bad config file, flag or value; its message is one line for the user."""


@dataclass
class EngineConfig:
    kind: str = "hf"  # hf | sim | vllm | openai
    path: str | None = None  # model directory (hf, vllm) or model name (openai)
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"
    max_batch: int = 64  # requests per engine call
    options: dict[str, Any] = field(default_factory=dict)  # engine-specific settings


@dataclass
class SearchConfig:
    strategy: str = "best_of_n"
    budget: str = "n=16"  # "n=N" (width) or a token count
    temperature: float = 0.8
    max_step_tokens: int = 48
    max_steps: int = 16
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)  # strategy config fields


@dataclass
class SchedulerConfig:
    batch_window_ms: float = 2.0  # how long a batch waits for more requests
    max_batch: int = 64
    max_concurrent_searches: int = 32
    prm_cost_ratio: float = 1.0  # one PRM token costs this many policy tokens
    allocation_table: str | None = None  # file written by `ponder calibrate`; None: the shipped default
    probe_samples: int = 4  # difficulty probe width
    job_budget: float | None = None  # an eval job's total tokens for `auto`; None: per-query budget x problems
    # Engine calls in flight per pool; the rest wait in the scheduler, most urgent first
    # (interactive before job work). None: replicas x cluster.max_inflight_per_replica over Ray,
    # no bound in-process.
    max_inflight_calls: int | None = None


IN_PROCESS = "inprocess"  # cluster.address for no Ray at all


@dataclass
class ClusterConfig:
    # "local": start a local Ray cluster (127.0.0.1) with the pools on this machine; a Ray address
    # ("auto", "host:6379", "ray://host:10001") joins a running cluster; "inprocess" (or null): no Ray,
    # engines in this process (the same results for the same seed; for tests and quick runs).
    address: str | None = "local"
    policy_replicas: int = 1
    reward_replicas: int = 1
    gpus_per_replica: float = 1.0  # each replica's GPU share, used only when the cluster has GPUs
    cpus_per_replica: float = 1.0
    max_inflight_per_replica: int = 16  # engine calls in flight per replica (the engine batches them)
    policy_resources: dict[str, float] = field(default_factory=dict)  # e.g. {"policy_node": 1}
    reward_resources: dict[str, float] = field(default_factory=dict)
    dashboard: bool = False
    namespace: str = "ponder"
    restart_timeout_s: float = 60.0  # how long a pool waits for a crashed replica before replacing it
    # Autoscaling on search backlog: a pool grows (up to its max) while the work queued for it
    # would take longer than `autoscale_target_s` to serve, and shrinks (down to its min) after
    # `autoscale_idle_s` without a backlog. A replica that cannot be placed stays pending, which
    # is what the Ray autoscaler (KubeRay's on Kubernetes, the launcher's on VMs) adds nodes for.
    # None: the pool's fixed size (policy_replicas / reward_replicas), no autoscaling.
    policy_min_replicas: int | None = None
    policy_max_replicas: int | None = None
    reward_min_replicas: int | None = None
    reward_max_replicas: int | None = None
    autoscale_target_s: float = 2.0
    autoscale_interval_s: float = 2.0
    autoscale_idle_s: float = 30.0

    @property
    def uses_ray(self) -> bool:
        return bool(self.address) and self.address != IN_PROCESS

    def replica_range(self, role: str) -> tuple[int, int]:
        """(min, max) replicas of a pool ("policy" or "reward")."""
        fixed = self.policy_replicas if role == "policy" else self.reward_replicas
        lo = getattr(self, f"{role}_min_replicas")
        hi = getattr(self, f"{role}_max_replicas")
        return (fixed if lo is None else lo, fixed if hi is None else hi)

    @property
    def autoscales(self) -> bool:
        return any(lo != hi for lo, hi in (self.replica_range("policy"), self.replica_range("reward")))

    def validate(self) -> None:
        for role in ("policy", "reward"):
            lo, hi = self.replica_range(role)
            fixed = self.policy_replicas if role == "policy" else self.reward_replicas
            if fixed < 1 or lo < 1:
                raise ConfigError(f"the {role} pool needs at least one replica (cluster.{role}_*replicas)")
            if hi < lo:
                raise ConfigError(f"cluster.{role}_max_replicas ({hi}) is below its minimum ({lo})")
            if not lo <= fixed <= hi:
                raise ConfigError(f"cluster.{role}_replicas ({fixed}) must lie within its min and max ({lo}..{hi})")
        if not (self.autoscale_target_s > 0 and self.autoscale_interval_s > 0 and self.autoscale_idle_s > 0):
            raise ConfigError("cluster.autoscale_target_s, autoscale_interval_s and autoscale_idle_s must be positive")


def _default_effort() -> dict[str, str]:
    return {"low": "n=4", "medium": "n=16", "high": "n=64"}


@dataclass
class ApiConfig:
    """The HTTP service (`ponder serve`): where it listens, who may call it, what it admits."""

    host: str = "127.0.0.1"
    port: int = 8000
    # Bearer tokens: a YAML/JSON file mapping token -> tenant, and/or $PONDER_API_KEY (tenant
    # "default"). With neither, the server has no auth and listens on 127.0.0.1 only.
    tokens_file: str | None = None
    # Admission of interactive searches (429 + Retry-After beyond the waiting room).
    max_running: int = 64
    max_queued: int = 256
    tenant_max_running: int = 64
    tenant_max_queued: int = 256
    # Request limits. The shipped models read 512 characters (their tokens), solution included.
    max_problem_chars: int = 256
    max_budget_tokens: float = 1e6
    max_width: int = 1024
    max_deadline_s: float = 3600.0
    max_upload_bytes: int = 32 * 2**20
    max_job_rows: int = 100_000
    reasoning_effort: dict[str, str] = field(default_factory=_default_effort)  # OpenAI effort -> budget
    deadline_grace_s: float = 2.0  # past its deadline a search gets this long to return its best
    # Serve's autoscaling of the ingress replicas (the pools scale separately).
    min_replicas: int = 1
    max_replicas: int = 4
    target_ongoing_requests: int = 64

    def validate(self) -> None:
        if not (0 < int(self.port) < 65536):
            raise ConfigError(f"api.port must be in 1..65535, got {self.port}")
        for name in ("max_running", "tenant_max_running", "max_problem_chars", "max_width", "max_upload_bytes",
                     "max_job_rows", "min_replicas", "target_ongoing_requests"):
            if getattr(self, name) < 1:
                raise ConfigError(f"api.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_queued", "tenant_max_queued"):
            if getattr(self, name) < 0:
                raise ConfigError(f"api.{name} must be at least 0, got {getattr(self, name)}")
        if self.max_replicas < self.min_replicas:
            raise ConfigError(f"api.max_replicas ({self.max_replicas}) is below api.min_replicas ({self.min_replicas})")
        if not self.max_budget_tokens > 0 or not self.max_deadline_s > 0 or self.deadline_grace_s < 0:
            raise ConfigError("api.max_budget_tokens and api.max_deadline_s must be positive, api.deadline_grace_s not negative")
        if not isinstance(self.reasoning_effort, dict) or set(self.reasoning_effort) != {"low", "medium", "high"}:
            raise ConfigError("api.reasoning_effort must map exactly low, medium and high to budgets")
        for effort, spec in self.reasoning_effort.items():
            try:
                Budget.parse(spec)
            except ConfigError as e:
                raise ConfigError(f"api.reasoning_effort.{effort}: {e}") from None


@dataclass
class JobsConfig:
    # The job store. None: an embedded redis-server with its data (AOF) under `state_dir`; a
    # cluster points every node at one real Redis ("redis://host:6379/0").
    redis_url: str | None = None
    state_dir: str | None = None  # None: $PONDER_STATE_DIR, else $XDG_STATE_HOME/ponder, else ~/.local/state/ponder
    max_attempts: int = 3  # a search that fails this often ends as an error record
    # A claimed item not finished within its lease is run again by another worker. Workers renew
    # the leases of running searches every lease_s / 3, so it only has to outlast a worker crash.
    lease_s: float = 60.0
    worker: str = "ponder-jobs"  # the job worker actor's name (one per Ray namespace)

    def validate(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"jobs.max_attempts must be at least 1, got {self.max_attempts}")
        if not self.lease_s > 0:
            raise ConfigError(f"jobs.lease_s must be positive, got {self.lease_s}")
        if self.redis_url is not None and not str(self.redis_url).startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"jobs.redis_url must be a redis://, rediss:// or unix:// URL, got {self.redis_url!r}")


def default_policy() -> EngineConfig:
    return EngineConfig(kind="hf", path=str(MODELS_DIR / "arith-policy"))


def default_reward() -> EngineConfig:
    return EngineConfig(kind="hf", path=str(MODELS_DIR / "arith-prm"))


@dataclass
class PonderConfig:
    policy: EngineConfig = field(default_factory=default_policy)
    reward: EngineConfig = field(default_factory=default_reward)
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PonderConfig:
        config = _build(cls, data or {}, "")
        config.cluster.validate()
        config.jobs.validate()
        config.api.validate()
        return config

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> PonderConfig:
        data: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file not found: {p}")
            try:
                data = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"config file {p} must hold a mapping at the top level")
        for item in overrides or []:
            _set_path(data, item)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, data: dict[str, Any], where: str, base: Any = None):
    """Build `cls` from `data`, merged onto `base` (or the class defaults): a partial section such as
    `policy: {max_batch: 8}` keeps the default engine rather than resetting it."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{where or 'top'}' must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key '{where + unknown[0]}' (known: {', '.join(fields)})")
    obj = base if base is not None else cls()
    kwargs = {}
    for name, value in data.items():
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            kwargs[name] = _build(type(current), value or {}, f"{where}{name}.", current)
        else:
            kwargs[name] = value
    return dataclasses.replace(obj, **kwargs)


def _set_path(data: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw else None
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: '{part}' is not a section")
    node[parts[-1]] = value


@dataclass(frozen=True)
class Budget:
    """A search budget: a width (`n=16`), a token cap, or both (`n=16,tokens=4096`)."""

    n: int | None = None
    tokens: float = math.inf

    @classmethod
    def parse(cls, spec: str | int | float) -> Budget:
        if isinstance(spec, (int, float)):
            spec = str(spec)
        n, tokens = None, math.inf
        for part in str(spec).replace(" ", "").split(","):
            m = re.fullmatch(r"n=(-?\d+)", part)
            if m:
                n = int(m.group(1))
                if n <= 0:
                    raise ConfigError(f"budget width must be positive, got {part!r}")
                continue
            m = re.fullmatch(r"(?:tokens=)?(-?\d+(?:\.\d+)?)([kKmM]?)", part)
            if not m:
                raise ConfigError(f"bad budget {spec!r}: use a token count like 4096 or 8k, or n=16")
            tokens = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()]
            if tokens <= 0:
                raise ConfigError(f"budget must be positive, got {part!r}")
        return cls(n=n, tokens=tokens)

    def label(self) -> str:
        parts = []
        if self.n is not None:
            parts.append(f"n={self.n}")
        if not math.isinf(self.tokens):
            parts.append(f"tokens={int(self.tokens)}")
        return ",".join(parts) or "unbounded"
