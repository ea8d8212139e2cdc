"""What a deployment is, derived from the config once: names, labels, the Redis addresses, the
worker groups' sizes and resources, and the runtime config every Ray process loads. The
manifests and cluster.yaml are written from this, so the pieces cannot disagree."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ponder.config import (
    ConfigError,
    DeployConfig,
    DeployGroup,
    PonderConfig,
    default_policy,
    default_reward,
    quantity_value,
)

REDIS_PORT = 6379
CONFIG_DIR = "/etc/ponder"  # where a RayJob's head pod finds the config (a ConfigMap)
CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"
METRICS_PORT = 8080  # Ray's own metrics on every pod


@dataclass(frozen=True)
class Group:
    """One worker group / launcher node type: the pods of one pool."""

    name: str  # group name and custom resource prefix: "policy" | "prm"
    role: str  # the pool: "policy" | "reward"
    spec: DeployGroup
    replica_resources: dict[str, float]  # what one replica actor requests (cluster.*_resources)
    initial_pods: int
    min_pods: int
    max_pods: int

    @property
    def pod_resources(self) -> dict[str, float]:
        """The custom Ray resources one pod offers: room for `replicas_per_pod` replicas."""
        return {k: v * self.spec.replicas_per_pod for k, v in sorted(self.replica_resources.items())}


@dataclass(frozen=True)
class Plan:
    config: PonderConfig
    name: str
    namespace: str
    redis_url: str | None  # the job store every pod reaches: the in-cluster Redis or jobs.redis_url
    in_cluster_redis: bool  # render the Redis StatefulSet
    gcs_redis_address: str | None
    groups: tuple[Group, Group]

    @property
    def deploy(self) -> DeployConfig:
        return self.config.deploy

    def labels(self, component: str | None = None, instance: str | None = None) -> dict[str, str]:
        out = {"app.kubernetes.io/name": "ponder", "app.kubernetes.io/instance": instance or self.name}
        if component:
            out["app.kubernetes.io/component"] = component
        out["app.kubernetes.io/managed-by"] = "ponder-deploy"
        return out

    def selector(self, component: str, instance: str | None = None) -> dict[str, str]:
        return {"app.kubernetes.io/instance": instance or self.name, "app.kubernetes.io/component": component}

    def meta(self, name: str, component: str | None = None, instance: str | None = None) -> dict[str, Any]:
        return {"name": name, "namespace": self.namespace, "labels": self.labels(component, instance)}

    @property
    def redis_name(self) -> str:
        return f"{self.name}-redis"

    @property
    def job_name(self) -> str:
        return f"{self.name}-{self.deploy.job.name}"

    @property
    def needs_vllm(self) -> bool:
        return "vllm" in (self.config.policy.kind, self.config.reward.kind)

    def runtime_config(self) -> dict[str, Any]:
        """The PonderConfig every Ray process of the deployment loads (the Serve app's args, the
        RayJob's config file): the whole config but its `deploy` section, joined to the running
        cluster (`cluster.address: auto`), with the job store's URL. A shipped model path (the
        default engine's) is left out, so the installed ponder on the pods finds its own copy."""
        d = self.config.to_dict()
        d.pop("deploy", None)
        for role, default in (("policy", default_policy()), ("reward", default_reward())):
            if d[role].get("path") == default.path:
                del d[role]["path"]
        d["cluster"]["address"] = "auto"
        d["jobs"]["redis_url"] = self.redis_url
        d["jobs"]["state_dir"] = None
        return d


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _groups(config: PonderConfig) -> tuple[Group, Group]:
    c = config.cluster
    out = []
    for name, role, spec, resources in (("policy", "policy", config.deploy.policy, c.policy_resources),
                                        ("prm", "reward", config.deploy.prm, c.reward_resources)):
        where = f"cluster.{role}_resources"
        if not resources:
            raise ConfigError(f"{where} is empty: name the custom resource that puts {role} replicas on the "
                              f"'{name}' group (e.g. {{{name}: 1}})")
        if not isinstance(resources, dict) or not all(
                isinstance(k, str) and k not in ("CPU", "GPU", "memory") and isinstance(v, (int, float)) and v > 0
                for k, v in resources.items()):
            raise ConfigError(f"{where} must map custom resource names to positive amounts, got {resources!r}")
        rpp = spec.replicas_per_pod
        lo, hi = c.replica_range(role)
        if hi < 1:
            raise ConfigError(f"cluster.{role}_max_replicas must be at least 1, got {hi}")
        group_where = f"deploy.{name}"
        if spec.gpus and c.gpus_per_replica > 0 and spec.gpus + 1e-9 < rpp * c.gpus_per_replica:
            raise ConfigError(f"{group_where}.gpus ({spec.gpus}) cannot hold {rpp} replica(s) of "
                              f"cluster.gpus_per_replica {c.gpus_per_replica:g}")
        if quantity_value(spec.cpu) + 1e-9 < rpp * c.cpus_per_replica:
            raise ConfigError(f"{group_where}.cpu ({spec.cpu}) cannot hold {rpp} replica(s) of "
                              f"cluster.cpus_per_replica {c.cpus_per_replica:g}")
        fixed = c.policy_replicas if role == "policy" else c.reward_replicas
        out.append(Group(name, role, spec, {k: float(v) for k, v in resources.items()},
                         _ceil_div(fixed, rpp), _ceil_div(lo, rpp), _ceil_div(hi, rpp)))
    names = [set(g.replica_resources) for g in out]
    if names[0] & names[1]:
        raise ConfigError("cluster.policy_resources and cluster.reward_resources must name different custom "
                          f"resources (both have {min(names[0] & names[1])!r})")
    return out[0], out[1]


def _redis(config: PonderConfig) -> tuple[str, bool, str | None]:
    d = config.deploy
    url = config.jobs.redis_url
    if url is None:
        host = f"{d.name}-redis.{d.namespace}.svc.cluster.local"
        return f"redis://{host}:{REDIS_PORT}/0", True, d.gcs_redis_address or f"{host}:{REDIS_PORT}"
    parts = urlsplit(url)
    if parts.scheme == "unix":
        raise ConfigError("jobs.redis_url is a unix socket: a deployment needs a Redis every pod reaches over TCP")
    if parts.password:
        raise ConfigError("jobs.redis_url carries a password, which would be written into the manifests: "
                          "use a Redis without one on a private network, or leave jobs.redis_url unset for the "
                          "in-cluster Redis")
    gcs = d.gcs_redis_address
    if gcs is None and d.gcs_fault_tolerance:
        if parts.scheme != "redis" or not parts.hostname:
            raise ConfigError("set deploy.gcs_redis_address (host:port) for GCS fault tolerance: it cannot be "
                              f"derived from jobs.redis_url {url!r}")
        gcs = f"{parts.hostname}:{parts.port or REDIS_PORT}"
    return url, False, gcs


def make_plan(config: PonderConfig) -> Plan:
    url, in_cluster, gcs = _redis(config)
    return Plan(config, config.deploy.name, config.deploy.namespace, url, in_cluster, gcs, _groups(config))


def quantity(value: float) -> str:
    """A number as a Kubernetes quantity string: 1 -> "1", 0.5 -> "500m"."""
    if float(value).is_integer():
        return str(int(value))
    milli = value * 1000
    if not math.isclose(milli, round(milli)):
        raise ConfigError(f"custom resource amount {value} is finer than a thousandth")
    return f"{round(milli)}m"
