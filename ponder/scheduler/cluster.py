"""Connecting to Ray: start a local cluster bound to 127.0.0.1, or join an existing one."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from ponder.config import ClusterConfig, ConfigError


def ensure_ray(cluster: ClusterConfig, **init_kw: Any) -> None:
    """Initialise Ray for `cluster.address` unless this process already is connected.

    "local" starts a local cluster (dashboard only if asked, everything on 127.0.0.1); any
    other value is the address of a running cluster ("auto", "ray://host:10001", "host:6379").
    """
    import ray

    if ray.is_initialized():
        return
    if not cluster.address:
        raise ConfigError("cluster.address is not set: nothing to connect to")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray's own start-up chatter (INFO lines, its auth notice) would bury ponder's output.
    kw: dict[str, Any] = {"namespace": cluster.namespace, "log_to_driver": False, "logging_level": logging.ERROR, **init_kw}
    if cluster.address == "local":
        kw.setdefault("include_dashboard", cluster.dashboard)
        kw.setdefault("_node_ip_address", "127.0.0.1")
        if cluster.dashboard:
            kw.setdefault("dashboard_host", "127.0.0.1")
        ray.init(**kw)
    else:
        _check_reachable(cluster.address)
        try:
            ray.init(address=cluster.address, **kw)
        except ConnectionError as e:
            raise ConfigError(f"cannot connect to the Ray cluster at {cluster.address!r}: {e}") from None


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
