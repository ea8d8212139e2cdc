"""The autoscaling scenario, run in its own process by test_autoscale.py (it needs Ray's fake
multi-node provider, which must own the head it runs on).

A head with no `policy` or `prm` resource and an autoscaler that can add `policy_node` and
`prm_node` workers (each a real raylet on loopback, launched by the real Ray autoscaler). The
scheduler's pools ask for those resources, start at one replica each (so one node of each type
comes up) and may grow to two. A burst of searches makes a backlog: each pool grows, its new
replica waits for the node the autoscaler adds, the backlog is served; then the pools shrink and
the autoscaler removes the idle nodes. Prints one JSON line with what happened.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LATENCY = {"call_overhead_s": 0.01, "per_request_s": 0.003}
NODE_TYPES = {
    "policy_node": {"resources": {"CPU": 1, "policy": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2},
    "prm_node": {"resources": {"CPU": 1, "prm": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def autoscaler_config(gcs: str) -> dict:
    # What ray.cluster_utils.AutoscalingCluster builds from a base file the 2.60 wheel lacks.
    return {
        "cluster_name": "ponder-fake", "max_workers": 4, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs},
        "auth": {"ssh_user": "ray"}, "docker": {},
        "available_node_types": {**NODE_TYPES, "ray.head.default": {"resources": {"CPU": 1}, "node_config": {},
                                                                      "max_workers": 0}},
        "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def nodes_by_type(ray) -> dict[str, int]:
    out = {"policy": 0, "prm": 0}
    for n in ray.nodes():
        if n["Alive"]:
            for k in out:
                if n["Resources"].get(k):
                    out[k] += 1
    return out


def main() -> None:
    port = free_port()
    gcs = f"127.0.0.1:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="pas-", dir="/tmp"))
    cfg_file = tmp / "autoscaler.json"
    cfg_file.write_text(json.dumps(autoscaler_config(gcs)))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    ray_bin = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                    f"--autoscaling-config={cfg_file}", f"--temp-dir={tmp}", "--include-dashboard=false",
                    "--disable-usage-stats"], env=env, check=True, capture_output=True)
    print(json.dumps({"gcs": gcs, "tmp": str(tmp)}), flush=True)  # for the test's cleanup, first
    os.environ.update({k: env[k] for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")})
    import asyncio

    import ray

    from ponder.config import PonderConfig
    from ponder.scheduler.scheduler import RemoteRunner
    from ponder.tasks.datasets import load_problems

    ray.init(address=gcs, _node_ip_address="127.0.0.1", log_to_driver=False, namespace="ponder-autoscale")
    opts = [f"{role}.options.{k}={v}" for role in ("policy", "reward") for k, v in LATENCY.items()]
    config = PonderConfig.load("configs/sim.yaml", [
        *opts, "cluster.address=auto", "cluster.cpus_per_replica=0",
        "cluster.policy_resources={policy: 1}", "cluster.reward_resources={prm: 1}",
        "cluster.policy_max_replicas=2", "cluster.reward_max_replicas=2",
        "cluster.autoscale_target_s=0.5", "cluster.autoscale_interval_s=0.5", "cluster.autoscale_idle_s=3",
        "scheduler.max_concurrent_searches=200"])
    t0 = time.monotonic()
    runner = RemoteRunner.start(config)
    started = {"s": time.monotonic() - t0, "nodes": nodes_by_type(ray)}
    problems = load_problems("arith:150:seed=5")
    samples: list[dict] = []

    async def burst() -> list:
        out = {}

        async def watch() -> None:
            while True:
                st = await runner.stats()
                samples.append({"t": time.monotonic() - t0, "nodes": nodes_by_type(ray),
                                "sizes": {k: v["size"] for k, v in st["autoscale"].items()},
                                "backlog": {k: v["backlog_s"] for k, v in st["autoscale"].items()}})
                await asyncio.sleep(0.5)

        w = asyncio.ensure_future(watch())
        async for p, r in runner.run(problems, "beam_search", "n=8"):
            out[p.id] = r
        w.cancel()
        return [out[p.id] for p in problems]

    results = asyncio.run(burst())
    served = time.monotonic() - t0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # the pools shrink, then the idle nodes go
        st = asyncio.run(runner.stats())
        sizes = {k: v["size"] for k, v in st["autoscale"].items()}
        nodes = nodes_by_type(ray)
        if sizes == {"policy": 1, "reward": 1} and nodes == {"policy": 1, "prm": 1}:
            break
        time.sleep(1.0)
    final = {"sizes": sizes, "nodes": nodes, "scalings": {k: v["scalings"] for k, v in st["autoscale"].items()}}
    print(json.dumps({
        "started": started, "served_s": served, "end_s": time.monotonic() - t0,
        "answers": {p.id: r.answer for p, r in zip(problems, results)},
        "stop_reasons": sorted({r.stop_reason for r in results}),
        "max_nodes": {k: max(s["nodes"][k] for s in samples) for k in ("policy", "prm")} if samples else {},
        "max_sizes": {k: max(s["sizes"][k] for s in samples) for k in ("policy", "reward")} if samples else {},
        "final": final,
    }), flush=True)
    runner.shutdown()


if __name__ == "__main__":
    main()
