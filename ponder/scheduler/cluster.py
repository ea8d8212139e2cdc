"""Connecting to Ray: start a local cluster bound to 127.0.0.1, or join an existing one."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from ponder.config import ClusterConfig, ConfigError


def ensure_ray(cluster: ClusterConfig, **init_kw: Any) -> None:
    """Initialise Ray for `cluster.address` unless this process already is connected.

    "local" starts a local cluster (dashboard only if asked, everything on 127.0.0.1); any
    other value is the address of a running cluster ("auto", "ray://host:10001", "host:6379").
    """
    if cluster.address not in (None, "local") and "RAY_AUTH_MODE" not in os.environ and _have_ray_token():
        # Ray turns token authentication on for clusters it starts, but a driver joining one by
        # address does not send its token unless told to; set before `ray` is imported.
        os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when `ray` is imported
    import ray

    if ray.is_initialized():
        return
    if not cluster.address:
        raise ConfigError("cluster.address is not set: nothing to connect to")
    # Ray's own start-up chatter (INFO lines, its auth notice) would bury ponder's output.
    kw: dict[str, Any] = {"namespace": cluster.namespace, "log_to_driver": False, "logging_level": logging.ERROR, **init_kw}
    if cluster.address == "local":
        kw.setdefault("include_dashboard", cluster.dashboard)
        kw.setdefault("_node_ip_address", "127.0.0.1")
        if cluster.dashboard:
            kw.setdefault("dashboard_host", "127.0.0.1")
        from ponder.scheduler import reaper

        reaper.start_watcher()  # the cluster's processes end with this one, even if it is killed
        ray.init(**kw)
        reaper.arm()
    else:
        if cluster.address == "auto":
            _one_local_cluster()
        _check_reachable(cluster.address)
        host = cluster.address.split("://", 1)[-1].rpartition(":")[0]
        if host in ("127.0.0.1", "localhost"):
            # A single-machine cluster on loopback (`ponder submit`'s local head): this driver must
            # join it on loopback too, or Ray looks for the head at the machine's own address.
            kw.setdefault("_node_ip_address", "127.0.0.1")
        try:
            ray.init(address=cluster.address, **kw)
        except ConnectionError as e:
            hint = "" if os.environ.get("RAY_AUTH_MODE") == "token" else (
                " (if the cluster uses Ray's token authentication, put its token in ~/.ray/auth_token"
                " or RAY_AUTH_TOKEN and set RAY_AUTH_MODE=token)")
            raise ConfigError(f"cannot connect to the Ray cluster at {cluster.address!r}: {e}{hint}") from None


def _one_local_cluster() -> None:
    """`auto` means the one Ray cluster this machine runs; with several, Ray would pick one
    silently, so say which there are instead."""
    try:
        from ray._private.services import find_gcs_addresses  # Ray's own discovery (not public API)

        found = sorted(find_gcs_addresses())
    except Exception:  # a Ray without it: let ray.init decide
        return
    if len(found) > 1:
        raise ConfigError(f"--address auto: {len(found)} Ray clusters run on this machine ({', '.join(found)}); "
                          "pass one of them as --address HOST:PORT")


def _have_ray_token() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return Path(path).is_file()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a GCS address nothing listens on (Ray itself retries for many minutes)."""
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms: Ray resolves and reports them itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {e.strerror or e}") from None


def node_of(actor: Any) -> str:
    """The node id an actor runs on (from its `health()`)."""
    import ray

    return ray.get(actor.health.remote())["node_id"]


# The local head and every driver joining it: loopback only (this is a single-machine cluster;
# the first variable must never be set on a real one) and Ray's token authentication (the token
# in ~/.ray/auth_token), which a driver joining by address does not switch on by itself.
LOCAL_HEAD_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}


def ensure_local_head(state_dir: Path, num_cpus: int | None = None) -> str:
    """A local Ray head on 127.0.0.1 that outlives this process (for `ponder submit` on the
    embedded default): the one whose address `state_dir/ray/address` records, started with
    `ray start --head` if none answers there. Returns its GCS address. Call it before `ray` is
    imported: Ray reads these settings at import."""
    import shutil
    import subprocess
    import sys

    for k, v in LOCAL_HEAD_ENV.items():
        os.environ.setdefault(k, v)

    state = Path(state_dir) / "ray"
    state.mkdir(parents=True, exist_ok=True)
    record = state / "address"
    if record.exists():
        address = record.read_text().strip()
        try:
            _check_reachable(address, timeout_s=2.0)
            return address
        except ConfigError:
            pass  # stale: the head is gone (a reboot, `ray stop`)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_bin is None:
        raise ConfigError("cannot start a local Ray cluster: the `ray` command is not installed")
    cmd = [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
           "--include-dashboard=false", "--disable-usage-stats"]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    env = {**os.environ, **LOCAL_HEAD_ENV}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConfigError(f"cannot start a local Ray cluster: {last[0]}")
    address = f"127.0.0.1:{port}"
    tmp = record.with_suffix(".tmp")
    tmp.write_text(address + "\n")
    tmp.replace(record)
    return address
