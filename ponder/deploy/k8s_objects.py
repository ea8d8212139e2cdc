"""Plain Kubernetes objects around the Ray clusters: the Namespace, the API-key Secret (dev
only: in production it is created by hand), the job store's Redis (a StatefulSet with AOF on
a PVC, and its Service), the runtime config file (a ConfigMap), PodDisruptionBudgets for the
worker groups, and the prometheus-operator monitors."""

from __future__ import annotations

from typing import Any

from ponder.deploy.kuberay import container_resources
from ponder.deploy.plan import CONFIG_FILE, REDIS_PORT, Plan
from ponder.deploy.yamlout import dump


def namespace(plan: Plan) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": plan.namespace, "labels": plan.labels()}}


def api_key_secret(plan: Plan) -> dict[str, Any]:
    d = plan.deploy
    return {"apiVersion": "v1", "kind": "Secret", "metadata": plan.meta(d.api_key_secret, "api-key"),
            "type": "Opaque", "stringData": {d.api_key_secret_key: d.api_key_value}}


def redis(plan: Plan) -> list[dict[str, Any]]:
    d = plan.deploy
    name, sel = plan.redis_name, plan.selector("redis")
    # The job store's durability: every write is in the append-only file before it is acknowledged
    # (as with the embedded store); no RDB snapshots; never evict a key.
    args = ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--dir", "/data",
            "--maxmemory-policy", "noeviction"]
    container = {
        "name": "redis",
        "image": d.redis_image,
        "imagePullPolicy": d.image_pull_policy,
        "args": args,
        "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "initialDelaySeconds": 15, "periodSeconds": 10},
        "resources": container_resources(d.redis_cpu, d.redis_memory),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": d.redis_storage}}}
    if d.redis_storage_class:
        claim["storageClassName"] = d.redis_storage_class
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": plan.meta(name, "redis"),
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": sel},
            "template": {"metadata": {"labels": plan.labels("redis")},
                         "spec": {"terminationGracePeriodSeconds": 30, "containers": [container]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim}],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": plan.meta(name, "redis"),
        "spec": {"selector": sel, "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}]},
    }
    return [service, statefulset]


def config_map(plan: Plan, name: str) -> dict[str, Any]:
    """The runtime config (the Serve app's args) as the file the heads mount at CONFIG_FILE."""
    file = CONFIG_FILE.rsplit("/", 1)[1]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": plan.meta(name, "config"),
            "data": {file: dump(plan.runtime_config())}}


def disruption_budgets(plan: Plan) -> list[dict[str, Any]]:
    """A node drain takes at most one pod of a pool's group at a time (the pools retry a lost
    replica's calls elsewhere). The head and Redis have one pod each and no budget: a budget of
    zero disruptions would block every drain."""
    return [{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
             "metadata": plan.meta(f"{plan.name}-{g.name}", g.name),
             "spec": {"maxUnavailable": 1, "selector": {"matchLabels": plan.selector(g.name)}}}
            for g in plan.groups]


def monitors(plan: Plan) -> list[dict[str, Any]]:
    """The service's GET /metrics (through its Service) and Ray's own metrics on every pod."""
    service_monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": plan.meta(plan.name, "serve"),
        "spec": {"selector": {"matchLabels": plan.selector("serve")},
                 "endpoints": [{"port": "serve", "path": "/metrics", "interval": "30s"}]},
    }
    pod_monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": plan.meta(f"{plan.name}-ray", "ray"),
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/instance": plan.name},
                              "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                                    "values": ["head", *(g.name for g in plan.groups)]}]},
                 "podMetricsEndpoints": [{"port": "metrics", "interval": "30s"}]},
    }
    return [service_monitor, pod_monitor]
