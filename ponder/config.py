"""One typed config object, loaded from YAML and `a.b=value` overrides, shared by the CLI, the
server and the cluster entry points."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
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

    def validate(self, where: str) -> None:
        # The kind is checked by the engine factory, where engines register.
        _at_least(f"{where}.max_batch", self.max_batch, 1)


@dataclass
class SearchConfig:
    strategy: str = "best_of_n"
    budget: str = "n=16"  # "n=N" (width) or a token count
    temperature: float = 0.8
    top_p: float = 1.0  # nucleus sampling for every expansion
    max_step_tokens: int = 48
    max_steps: int = 16
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)  # strategy config fields

    def validate(self) -> None:
        _finite("search.temperature", self.temperature, 0.0)
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise ConfigError(f"search.top_p must be in (0, 1], got {self.top_p}")
        _at_least("search.max_step_tokens", self.max_step_tokens, 1)
        _at_least("search.max_steps", self.max_steps, 1)
        Budget.parse(self.budget)  # a bad default budget fails here, once


@dataclass
class SchedulerConfig:
    batch_window_ms: float = 2.0  # how long a batch waits for more requests
    max_batch: int = 64
    # Requests per policy call, when it should differ from max_batch (None: max_batch). An engine
    # call returns when its last request is done, so on a continuous-batching engine (vLLM) smaller
    # policy calls hand each search its samples sooner (bench/README.md: 8 is measured there).
    policy_max_batch: int | None = None
    max_concurrent_searches: int = 32
    prm_cost_ratio: float = 1.0  # one PRM token costs this many policy tokens
    # A prompt token an engine reused from its prefix cache costs this many computed ones
    # (0: a cache hit is free, as vLLM's prefix cache; 1: charge as if nothing were cached).
    cache_discount: float = 0.0
    allocation_table: str | None = None  # file written by `ponder calibrate`; None: the shipped default
    probe_samples: int = 4  # difficulty probe width
    job_budget: float | None = None  # an eval job's total tokens for `auto`; None: per-query budget x problems
    # A job ledger takes each query's grant in the order the queries came, from the spend of those
    # at least this many places back and the grants of the ones between (`OrderedLedger`), so the
    # grants never depend on timing; a query waits for the one this many places back to finish.
    # None: 4 x max_concurrent_searches (fix it to get the same grants at other concurrency).
    ledger_window: int | None = None
    # Engine calls in flight per pool; the rest wait in the scheduler, most urgent first
    # (interactive before job work). None: replicas x cluster.max_inflight_per_replica over Ray,
    # no bound in-process.
    max_inflight_calls: int | None = None

    def validate(self) -> None:
        _finite("scheduler.batch_window_ms", self.batch_window_ms, 0.0, hi=60_000.0)
        _at_least("scheduler.max_batch", self.max_batch, 1)
        if self.policy_max_batch is not None:
            _at_least("scheduler.policy_max_batch", self.policy_max_batch, 1)
        _at_least("scheduler.max_concurrent_searches", self.max_concurrent_searches, 1)
        _finite("scheduler.prm_cost_ratio", self.prm_cost_ratio, 0.0)
        _finite("scheduler.cache_discount", self.cache_discount, 0.0, hi=1.0)
        _at_least("scheduler.probe_samples", self.probe_samples, 1)
        if self.ledger_window is not None:
            _at_least("scheduler.ledger_window", self.ledger_window, 1)
        if self.max_inflight_calls is not None:
            _at_least("scheduler.max_inflight_calls", self.max_inflight_calls, 1)
        if self.job_budget is not None and Budget.parse(self.job_budget).n is not None:
            raise ConfigError("scheduler.job_budget is a token total (e.g. 2m), not a width")
        if self.allocation_table is not None and not Path(self.allocation_table).is_file():
            raise ConfigError(f"scheduler.allocation_table: file not found: {self.allocation_table}")


IN_PROCESS = "inprocess"  # cluster.address for no Ray at all


def _at_least(name: str, value: int, lo: int) -> None:
    if value < lo:
        raise ConfigError(f"{name} must be at least {lo}, got {value}")


def _finite(name: str, value: float, lo: float, hi: float = math.inf) -> None:
    if not (math.isfinite(value) and lo <= value <= hi):
        bound = f"between {lo:g} and {hi:g}" if math.isfinite(hi) else f"a finite number >= {lo:g}"
        raise ConfigError(f"{name} must be {bound}, got {value}")


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
    # Scheduler actors sharing the pools' replicas (scheduler/shards.py): more expansions per
    # second than one actor's CPU drives. Pools keep fixed sizes with more than one.
    scheduler_shards: int = 1

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
        if self.scheduler_shards < 1:
            raise ConfigError(f"cluster.scheduler_shards must be at least 1, got {self.scheduler_shards}")
        if self.scheduler_shards > 1 and self.autoscales:
            raise ConfigError("cluster.scheduler_shards > 1 needs fixed pool sizes: leave the *_min/max_replicas unset")
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

    def admission(self) -> dict[str, int]:
        """The admission limits, as the scheduler takes them (`AdmissionLimits`)."""
        return {"max_running": self.max_running, "max_queued": self.max_queued,
                "tenant_max_running": self.tenant_max_running, "tenant_max_queued": self.tenant_max_queued}

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


_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUANTITY = re.compile(r"\d+(\.\d+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


def quantity_value(q: str) -> float:
    """A Kubernetes quantity ("500m", "4", "16Gi") as a number."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", str(q))
    if not m:
        raise ConfigError(f"{q!r} is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)")
    scale = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    return float(m.group(1)) * scale[m.group(2)]


@dataclass
class DeployGroup:
    """One KubeRay worker group (and cluster-launcher node type) that hosts one pool's replicas,
    or the head group. Pool sizes come from `cluster.*_replicas`, never from here."""

    gpus: int = 0  # nvidia.com/gpu per pod; more than 0 needs a node_selector for the GPU nodes
    cpu: str = "2"  # the pod's CPU request and limit (a Kubernetes quantity); Ray's CPUs on it
    memory: str = "8Gi"  # the pod's memory request and limit
    replicas_per_pod: int = 1  # pool replicas one pod hosts (its custom resource is this many units)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    instance_type: str = "m5.xlarge"  # cluster launcher on AWS: the EC2 instance type
    node_config: dict[str, Any] = field(default_factory=dict)  # cluster launcher: replaces the AWS node_config

    def validate(self, where: str) -> None:
        if not isinstance(self.gpus, int) or self.gpus < 0:
            raise ConfigError(f"{where}.gpus must be a whole number of GPUs (0 or more), got {self.gpus!r}")
        if self.gpus and not self.node_selector:
            raise ConfigError(f"{where}.gpus is {self.gpus} but {where}.node_selector is empty: GPU pods need a "
                              "node selector for the GPU nodes (e.g. {nvidia.com/gpu.present: 'true'})")
        for name in ("cpu", "memory"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _QUANTITY.fullmatch(value) or quantity_value(value) <= 0:
                raise ConfigError(f"{where}.{name} must be a positive Kubernetes quantity such as 4, 500m or 16Gi "
                                  f"(quoted), got {value!r}")
        if not isinstance(self.replicas_per_pod, int) or self.replicas_per_pod < 1:
            raise ConfigError(f"{where}.replicas_per_pod must be at least 1, got {self.replicas_per_pod!r}")
        if not isinstance(self.node_selector, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.node_selector.items()):
            raise ConfigError(f"{where}.node_selector must map label names to (quoted) string values")
        if not isinstance(self.tolerations, list) or not all(isinstance(t, dict) for t in self.tolerations):
            raise ConfigError(f"{where}.tolerations must be a list of Kubernetes tolerations (mappings)")


@dataclass
class DeployJob:
    """The KubeRay RayJob: one evaluation job through the job core, on a cluster of its own that
    a deletion rule removes when the job ends (the records stay in Redis)."""

    name: str = "eval"  # the RayJob is `<deploy.name>-<name>`
    dataset: str = "arith:200"  # as for `ponder submit` (a path on the head pod, arith:N, hf:NAME)
    strategies: list[str] = field(default_factory=list)  # empty: [search.strategy]
    budgets: list[str] = field(default_factory=list)  # empty: [search.budget]
    job_budget: str | None = None  # the whole job's compute (`ponder submit --job-budget`)
    ttl_s: int = 60  # its cluster is deleted this long after the job succeeded
    failed_ttl_s: int = 3600  # ... or failed (time to look at the logs)
    active_deadline_s: int | None = None  # fail the RayJob after this long

    def validate(self) -> None:
        if not isinstance(self.name, str) or not _DNS1035.fullmatch(self.name):
            raise ConfigError(f"deploy.job.name must be a DNS-1035 label (lowercase letters, digits, '-'), got {self.name!r}")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError("deploy.job.dataset must name the dataset to evaluate (e.g. arith:200)")
        for name in ("strategies", "budgets"):
            if not isinstance(getattr(self, name), list):
                raise ConfigError(f"deploy.job.{name} must be a list")
        for name in ("ttl_s", "failed_ttl_s"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"deploy.job.{name} must be a whole number of seconds, 0 or more")
        if self.active_deadline_s is not None and (not isinstance(self.active_deadline_s, int) or self.active_deadline_s < 1):
            raise ConfigError("deploy.job.active_deadline_s must be a positive whole number of seconds")


def _default_launcher_provider() -> dict[str, Any]:
    return {"type": "aws", "region": "us-west-2"}


@dataclass
class DeployConfig:
    """How `ponder deploy render` turns this config into KubeRay manifests and a Ray cluster
    launcher config. Pool sizes, models, engines, budgets and custom resources are the other
    sections' (cluster.*, policy, reward, search); this one only says where and how they run."""

    name: str = "ponder"  # the RayService's name and the prefix of every object
    namespace: str = "ponder"  # the Kubernetes namespace
    image: str = "ponder:0.1.0"  # the container image (see the Dockerfile; the `vllm` extra for GPU engines)
    image_pull_policy: str = "IfNotPresent"
    ray_version: str = "2.60.0"  # the Ray in the image (the Dockerfile's base)
    auth: bool = True  # bearer-token auth on the HTTP service: the key is $PONDER_API_KEY from the Secret
    api_key_secret: str | None = "ponder-api-key"  # the Secret holding the API key (create it; see k8s/README.md)
    api_key_secret_key: str = "api-key"  # its key
    api_key_value: str | None = None  # dev only: render the Secret with this (not secret) key
    service_type: str = "ClusterIP"  # the HTTP Service: ClusterIP | NodePort | LoadBalancer
    head: DeployGroup = field(default_factory=lambda: DeployGroup(cpu="2", memory="8Gi", instance_type="m5.2xlarge"))
    policy: DeployGroup = field(default_factory=DeployGroup)  # worker group `policy`: the policy pool
    prm: DeployGroup = field(default_factory=DeployGroup)  # worker group `prm`: the reward pool
    idle_timeout_s: int = 60  # the Ray autoscaler removes a node idle this long
    upgrade_strategy: str = "NewCluster"  # RayService: NewCluster (blue/green) | NewClusterWithIncrementalUpgrade | None
    gateway_class: str | None = None  # NewClusterWithIncrementalUpgrade: the Gateway API class
    # The job store when jobs.redis_url is unset: a Redis StatefulSet with AOF on a PVC.
    redis_image: str = "redis:7.4"
    redis_storage: str = "10Gi"
    redis_storage_class: str | None = None  # None: the cluster's default StorageClass
    redis_cpu: str = "1"
    redis_memory: str = "2Gi"
    gcs_fault_tolerance: bool = True  # RayService: GCS state in Redis, so a head restart keeps the workers
    gcs_redis_address: str | None = None  # host:port for GCS; None: the job store's Redis
    models_pvc: str | None = None  # a PVC with the model weights, mounted read-only on the workers
    models_mount: str = "/models"
    monitoring: bool = False  # a ServiceMonitor (GET /metrics) and a PodMonitor (Ray's metrics); prometheus-operator
    job: DeployJob = field(default_factory=DeployJob)
    # Ray cluster launcher (cluster.yaml): the provider section as Ray wants it, the SSH user, extra
    # setup commands after ponder is installed (e.g. fetching model weights), the boot disk.
    launcher_provider: dict[str, Any] = field(default_factory=_default_launcher_provider)
    launcher_ssh_user: str = "ubuntu"
    launcher_setup_commands: list[str] = field(default_factory=list)
    launcher_disk_gb: int = 200

    def validate(self) -> None:
        if not isinstance(self.name, str) or not _DNS1035.fullmatch(self.name) or len(self.name) > 40:
            raise ConfigError(f"deploy.name must be a DNS-1035 label of at most 40 characters, got {self.name!r}")
        if not isinstance(self.namespace, str) or not _DNS1035.fullmatch(self.namespace) or len(self.namespace) > 63:
            raise ConfigError(f"deploy.namespace must be a DNS label (lowercase letters, digits, '-'), got {self.namespace!r}")
        if len(f"{self.name}-{self.job.name}") > 47:
            raise ConfigError(f"the RayJob name {self.name}-{self.job.name} is longer than KubeRay's 47 characters")
        if not self.image or not isinstance(self.image, str):
            raise ConfigError("deploy.image must name the container image")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise ConfigError(f"deploy.image_pull_policy must be Always, IfNotPresent or Never, got {self.image_pull_policy!r}")
        if self.auth and not self.api_key_secret:
            raise ConfigError("deploy.auth is on but deploy.api_key_secret is not set: name the Secret that holds "
                              "the API key (or set deploy.auth: false)")
        for name in ("api_key_secret", "models_pvc", "redis_storage_class"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", value)):
                raise ConfigError(f"deploy.{name} must be a Kubernetes object name, got {value!r}")
        if not isinstance(self.api_key_secret_key, str) or not re.fullmatch(r"[-._a-zA-Z0-9]+", self.api_key_secret_key):
            raise ConfigError(f"deploy.api_key_secret_key must be a Secret key, got {self.api_key_secret_key!r}")
        if self.api_key_value is not None:
            if not self.auth or not self.api_key_secret:
                raise ConfigError("deploy.api_key_value needs deploy.auth on and deploy.api_key_secret set")
            if not isinstance(self.api_key_value, str) or len(self.api_key_value) < 16:
                raise ConfigError("deploy.api_key_value must be a string of 16 or more characters")
        if self.service_type not in ("ClusterIP", "NodePort", "LoadBalancer"):
            raise ConfigError(f"deploy.service_type must be ClusterIP, NodePort or LoadBalancer, got {self.service_type!r}")
        self.head.validate("deploy.head")
        if self.head.gpus:
            raise ConfigError("deploy.head.gpus must be 0: the head group runs no replicas")
        self.policy.validate("deploy.policy")
        self.prm.validate("deploy.prm")
        if not isinstance(self.idle_timeout_s, int) or self.idle_timeout_s < 0:
            raise ConfigError("deploy.idle_timeout_s must be a whole number of seconds, 0 or more")
        strategies = ("NewCluster", "NewClusterWithIncrementalUpgrade", "None")
        if self.upgrade_strategy not in strategies:
            raise ConfigError(f"deploy.upgrade_strategy must be one of {', '.join(strategies)}, got {self.upgrade_strategy!r}")
        if self.upgrade_strategy == "NewClusterWithIncrementalUpgrade" and not self.gateway_class:
            raise ConfigError("deploy.upgrade_strategy NewClusterWithIncrementalUpgrade needs deploy.gateway_class "
                              "(a Gateway API GatewayClass)")
        for name in ("redis_storage", "redis_cpu", "redis_memory"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _QUANTITY.fullmatch(value) or quantity_value(value) <= 0:
                raise ConfigError(f"deploy.{name} must be a positive Kubernetes quantity (quoted), got {value!r}")
        if self.gcs_redis_address is not None and not re.fullmatch(r"[^\s:/]+:\d+", str(self.gcs_redis_address)):
            raise ConfigError(f"deploy.gcs_redis_address must be host:port, got {self.gcs_redis_address!r}")
        if not isinstance(self.models_mount, str) or not self.models_mount.startswith("/"):
            raise ConfigError(f"deploy.models_mount must be an absolute path, got {self.models_mount!r}")
        self.job.validate()
        if not isinstance(self.launcher_provider, dict) or not self.launcher_provider.get("type"):
            raise ConfigError("deploy.launcher_provider must be a Ray cluster-launcher provider mapping with a type "
                              "(e.g. {type: aws, region: us-west-2})")
        if not isinstance(self.launcher_setup_commands, list) or not all(
                isinstance(c, str) for c in self.launcher_setup_commands):
            raise ConfigError("deploy.launcher_setup_commands must be a list of shell commands")
        if not isinstance(self.launcher_disk_gb, int) or self.launcher_disk_gb < 8:
            raise ConfigError("deploy.launcher_disk_gb must be at least 8")


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
    deploy: DeployConfig = field(default_factory=DeployConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PonderConfig:
        config = _build(cls, data or {}, "")
        check_types(config)
        config.policy.validate("policy")
        config.reward.validate("reward")
        config.search.validate()
        config.scheduler.validate()
        config.cluster.validate()
        config.jobs.validate()
        config.api.validate()
        config.deploy.validate()
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


def check_types(obj: Any, where: str = "") -> None:
    """Scalar config values must have their field's type: `search.temperature=hot` is a config
    error now, not a failure of every search later."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), f"{where}{f.name}"
        if dataclasses.is_dataclass(value):
            check_types(value, name + ".")
            continue
        allowed = _scalar_types(hints.get(f.name))
        if allowed is None or (value is None and type(None) in allowed):
            continue
        if float in allowed and type(value) is int:
            continue
        if type(value) not in allowed:
            want = " or ".join(t.__name__ for t in allowed if t is not type(None))
            raise ConfigError(f"config {name} must be {want}, got {value!r}")


def _scalar_types(hint: Any) -> tuple[type, ...] | None:
    """The plain types a field accepts, or None when it is not a simple scalar/mapping field."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    out = []
    for a in args:
        a = typing.get_origin(a) or a
        if a not in (int, float, str, bool, dict, list, type(None)):
            return None
        out.append(a)
    return tuple(out)


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


MAX_WIDTH = 100_000


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
                if n > MAX_WIDTH:  # a search holds n trajectories in memory: 10^9 only grows until killed
                    raise ConfigError(f"budget width n={n} is more than a search can hold (at most n={MAX_WIDTH})")
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
