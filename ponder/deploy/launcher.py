"""The Ray cluster-launcher config (`ray up cluster.yaml`) for plain VMs: a head node type
without Ray CPUs, and one node type per pool (`policy_gpu`, `prm_gpu`; `_cpu` without GPUs)
offering the same custom resources as the KubeRay groups, with min/max workers from the pools'
replica ranges. Every node installs the built ponder wheel (the same install as the container
image) and gets the runtime config at ~/ponder/config.yaml.

AWS by default: `deploy.launcher_provider` is Ray's provider section as is, and a group's
`node_config` replaces the AWS node_config built from its instance type (see k8s/README.md for
GCP and Azure)."""

from __future__ import annotations

import json
import shlex
from typing import Any

from ponder import __version__
from ponder.config import ConfigError, quantity_value
from ponder.deploy.plan import Group, Plan

WHEEL = f"ponder-{__version__}-py3-none-any.whl"
REMOTE_DIR = "~/ponder"


def node_type_name(group: Group) -> str:
    return f"{group.name}_{'gpu' if group.spec.gpus else 'cpu'}"


def _node_config(plan: Plan, spec: Any) -> dict[str, Any]:
    if spec.node_config:
        return dict(spec.node_config)
    return {"InstanceType": spec.instance_type,
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1",
                                     "Ebs": {"VolumeSize": plan.deploy.launcher_disk_gb, "VolumeType": "gp3"}}]}


def _int_resources(group: Group) -> dict[str, int]:
    out = {"CPU": int(quantity_value(group.spec.cpu))}
    if group.spec.gpus:
        out["GPU"] = group.spec.gpus
    for k, v in group.pod_resources.items():
        if not float(v).is_integer():
            raise ConfigError(f"the cluster launcher needs whole custom resources: {group.name} pods would offer "
                              f"{k}={v:g} (cluster.{group.role}_resources x deploy.{group.name}.replicas_per_pod)")
        out[k] = int(v)
    return out


def runtime_config(plan: Plan) -> dict[str, Any]:
    """The runtime config of the VMs: no in-cluster Redis there, so jobs.redis_url is the config's
    own (unset: pass `--redis` to ponder submit and ponder serve)."""
    d = plan.runtime_config()
    d["jobs"]["redis_url"] = plan.config.jobs.redis_url
    return d


def cluster_yaml(plan: Plan) -> dict[str, Any]:
    d = plan.deploy
    extras = "[vllm]" if plan.needs_vllm else ""
    config_json = json.dumps(runtime_config(plan), sort_keys=False, separators=(",", ":"))
    setup = [
        f"pip install --quiet \"$HOME/ponder/{WHEEL}{extras}\" \"ray[default]=={d.ray_version}\"",
        f"mkdir -p {REMOTE_DIR} && printf '%s\\n' {shlex.quote(config_json)} > {REMOTE_DIR}/config.yaml",
        *d.launcher_setup_commands,
    ]
    node_types: dict[str, Any] = {
        "head": {"resources": {"CPU": 0}, "node_config": _node_config(plan, d.head)},
    }
    for g in plan.groups:
        node_types[node_type_name(g)] = {
            "min_workers": g.min_pods,
            "max_workers": g.max_pods,
            "resources": _int_resources(g),
            "node_config": _node_config(plan, g.spec),
        }
    return {
        "cluster_name": plan.name,
        "max_workers": sum(g.max_pods for g in plan.groups),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": max(1, -(-d.idle_timeout_s // 60)),
        "provider": dict(d.launcher_provider),
        "auth": {"ssh_user": d.launcher_ssh_user},
        "available_node_types": node_types,
        "head_node_type": "head",
        # Build the wheel first: pip wheel --no-deps -w dist .
        "file_mounts": {f"{REMOTE_DIR}/{WHEEL}": f"dist/{WHEEL}"},
        "setup_commands": setup,
        "head_start_ray_commands": [
            "ray stop",
            ("ray start --head --port=6379 --object-manager-port=8076 --autoscaling-config=~/ray_bootstrap_config.yaml "
             "--dashboard-host=0.0.0.0 --disable-usage-stats"),
        ],
        "worker_start_ray_commands": [
            "ray stop",
            "ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076 --disable-usage-stats",
        ],
    }
