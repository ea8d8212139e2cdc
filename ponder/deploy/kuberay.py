"""KubeRay custom resources (ray.io/v1, checked against the KubeRay v1.7.0 CRDs): the RayCluster
spec shared by the RayService and the RayJob, and those two objects.

The head group has no GPUs and no Ray CPUs (`num-cpus: 0`: the control actors and the Serve
ingress ask for none; nothing else lands there). Each pool has its worker group, `policy` and
`prm`, whose pods offer a custom Ray resource that the pool's replica actors request
(`cluster.policy_resources` / `cluster.reward_resources`), so replicas land on their group; the
in-tree autoscaler adds a pod when a replica is pending and removes idle ones, between the
group's min and max (the pools' `cluster.*_min/max_replicas`)."""

from __future__ import annotations

import shlex
from typing import Any

from ponder.deploy import checks
from ponder.deploy.plan import (
    CONFIG_DIR,
    CONFIG_FILE,
    METRICS_PORT,
    Group,
    Plan,
    quantity,
)
from ponder.deploy.yamlout import dump

API_VERSION = "ray.io/v1"
HEAD_CONTAINER = "ray-head"
WORKER_CONTAINER = "ray-worker"
SUBMITTER_CONTAINER = "ray-job-submitter"  # the name KubeRay gives the submitter container


def config_map_name(plan: Plan) -> str:
    return f"{plan.name}-config"


def container_resources(cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    amounts = {"cpu": cpu, "memory": memory}
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _placement(spec: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.node_selector:
        out["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        out["tolerations"] = [dict(t) for t in spec.tolerations]
    return out


def _api_key_env(plan: Plan) -> list[dict[str, Any]]:
    d = plan.deploy
    if not d.auth:
        return []
    return [{"name": "PONDER_API_KEY",
             "valueFrom": {"secretKeyRef": {"name": d.api_key_secret, "key": d.api_key_secret_key}}}]


def _head(plan: Plan, instance: str, serve: bool) -> dict[str, Any]:
    d = plan.deploy
    ports = [{"containerPort": 6379, "name": "gcs-server"}, {"containerPort": 8265, "name": "dashboard"},
             {"containerPort": 10001, "name": "client"}, {"containerPort": METRICS_PORT, "name": "metrics"}]
    if serve:
        ports.append({"containerPort": int(plan.config.api.port), "name": "serve"})
    container: dict[str, Any] = {
        "name": HEAD_CONTAINER,
        "image": d.image,
        "imagePullPolicy": d.image_pull_policy,
        "ports": ports,
    }
    env = _api_key_env(plan) if serve else []
    if env:
        container["env"] = env
    container["resources"] = container_resources(d.head.cpu, d.head.memory)
    # The runtime config as a file, for the CLI on the head (`ponder submit --config ...`): the
    # RayJob's entrypoint, or an operator's `kubectl exec`.
    container["volumeMounts"] = [{"name": "ponder-config", "mountPath": CONFIG_DIR, "readOnly": True}]
    pod: dict[str, Any] = {**_placement(d.head), "containers": [container],
                           "volumes": [{"name": "ponder-config", "configMap": {"name": config_map_name(plan)}}]}
    return {
        # No Ray CPUs on the head: replicas need their group's resource, and the scheduler, job
        # worker, replica owner and ingress actors ask for no CPU.
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
        "template": {"metadata": {"labels": plan.labels("head", instance)}, "spec": pod},
    }


def _worker(plan: Plan, group: Group, instance: str, serve: bool) -> dict[str, Any]:
    d, spec = plan.deploy, group.spec
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": d.image,
        "imagePullPolicy": d.image_pull_policy,
        "ports": [{"containerPort": METRICS_PORT, "name": "metrics"}],
    }
    env = _api_key_env(plan) if serve else []  # an ingress replica (0 CPUs) may run on any node
    if env:
        container["env"] = env
    container["resources"] = container_resources(spec.cpu, spec.memory, spec.gpus)
    container["lifecycle"] = {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}}
    mounts, volumes = [], []
    if d.models_pvc:
        mounts.append({"name": "models", "mountPath": d.models_mount, "readOnly": True})
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": d.models_pvc, "readOnly": True}})
    if spec.gpus:  # vLLM's workers share tensors through /dev/shm
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    if mounts:
        container["volumeMounts"] = mounts
    pod: dict[str, Any] = {**_placement(spec), "containers": [container]}
    if volumes:
        pod["volumes"] = volumes
    return {
        "groupName": group.name,
        "replicas": group.initial_pods,
        "minReplicas": group.min_pods,
        "maxReplicas": group.max_pods,
        # The custom resource the pool's replicas request: they can only land on this group.
        "resources": {k: quantity(v) for k, v in group.pod_resources.items()},
        "template": {"metadata": {"labels": plan.labels(group.name, instance)}, "spec": pod},
    }


def cluster_spec(plan: Plan, *, instance: str, serve: bool, gcs_ft: bool) -> dict[str, Any]:
    d = plan.deploy
    spec: dict[str, Any] = {
        "rayVersion": d.ray_version,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": d.idle_timeout_s,
            "imagePullPolicy": d.image_pull_policy,
            "resources": container_resources("500m", "512Mi"),
        },
    }
    if gcs_ft and plan.gcs_redis_address:
        spec["gcsFaultToleranceOptions"] = {"redisAddress": plan.gcs_redis_address}
    spec["headGroupSpec"] = _head(plan, instance, serve)
    spec["workerGroupSpecs"] = [_worker(plan, g, instance, serve) for g in plan.groups]
    return spec


def serve_config(plan: Plan) -> dict[str, Any]:
    """The Serve config (serveConfigV2): the ingress app built by `app_from_args` from the whole
    runtime config."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": int(plan.config.api.port)},
        "applications": [{
            "name": "ponder",
            "route_prefix": "/",
            "import_path": "ponder.api.app:app_from_args",
            "args": {"config": plan.runtime_config()},
        }],
    }


def rayservice(plan: Plan) -> dict[str, Any]:
    d = plan.deploy
    upgrade: dict[str, Any] = {"type": d.upgrade_strategy}
    if d.upgrade_strategy == "NewClusterWithIncrementalUpgrade":
        upgrade["clusterUpgradeOptions"] = {"gatewayClassName": d.gateway_class, "stepSizePercent": 25,
                                            "intervalSeconds": 60, "maxSurgePercent": 25}
    port = int(plan.config.api.port)
    return {
        "apiVersion": API_VERSION,
        "kind": "RayService",
        "metadata": plan.meta(plan.name, "rayservice"),
        "spec": {
            "upgradeStrategy": upgrade,
            # The HTTP Service: KubeRay points it at the active cluster's Serve proxies (and
            # switches it over when an upgrade's new cluster is ready).
            "serveService": {
                "metadata": {"name": plan.name, "labels": plan.labels("serve")},
                "spec": {"type": d.service_type,
                         "ports": [{"name": "serve", "port": port, "targetPort": port, "protocol": "TCP"}]},
            },
            "serveConfigV2": dump(serve_config(plan)),
            "rayClusterConfig": cluster_spec(plan, instance=plan.name, serve=True, gcs_ft=d.gcs_fault_tolerance),
        },
    }


def job_entrypoint(plan: Plan) -> str:
    """`ponder submit` through the job core against the RayJob's cluster, then `ponder jobs wait`
    (non-zero when the job failed or has error records)."""
    job = plan.deploy.job
    submit = ["ponder", "submit", job.dataset]
    for s in checks.job_strategies(plan.config):
        submit += ["--strategy", s]
    for b in checks.job_budgets(plan.config):
        submit += ["--budget", b]
    if job.job_budget is not None:
        submit += ["--job-budget", str(job.job_budget)]
    submit += ["--name", plan.job_name, "--config", CONFIG_FILE, "--address", "auto"]
    wait = ["ponder", "jobs", "wait", '"$job"', "--redis", shlex.quote(plan.redis_url or ""), "--quiet"]
    return f"job=$({shlex.join(submit)}) && echo \"ponder job $job\" && {' '.join(wait)}"


def rayjob(plan: Plan) -> dict[str, Any]:
    d = plan.deploy
    instance = plan.job_name
    rules = [
        {"policy": "DeleteCluster", "condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": d.job.ttl_s}},
        {"policy": "DeleteCluster", "condition": {"jobStatus": "FAILED", "ttlSeconds": d.job.failed_ttl_s}},
        {"policy": "DeleteCluster", "condition": {"jobDeploymentStatus": "Failed", "ttlSeconds": d.job.failed_ttl_s}},
    ]
    spec: dict[str, Any] = {
        "entrypoint": job_entrypoint(plan),
        "submissionMode": "K8sJobMode",
        # The deletion rules remove the job's cluster when it ends; the records are in Redis.
        "deletionStrategy": {"deletionRules": rules},
    }
    if d.job.active_deadline_s is not None:
        spec["activeDeadlineSeconds"] = d.job.active_deadline_s
    spec["submitterPodTemplate"] = {
        "metadata": {"labels": plan.labels("submitter", instance)},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": SUBMITTER_CONTAINER, "image": d.image, "imagePullPolicy": d.image_pull_policy,
                                 "resources": container_resources("500m", "512Mi")}]},
    }
    spec["rayClusterSpec"] = cluster_spec(plan, instance=instance, serve=False, gcs_ft=False)
    return {"apiVersion": API_VERSION, "kind": "RayJob", "metadata": plan.meta(instance, "rayjob", instance),
            "spec": spec}
