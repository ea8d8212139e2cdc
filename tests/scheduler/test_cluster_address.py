"""`--address auto` with several local Ray clusters names them instead of picking one."""

import pytest

from ponder.config import ClusterConfig, ConfigError
from ponder.scheduler import cluster


def test_auto_with_several_clusters_is_one_clear_line(monkeypatch):
    import ray
    import ray._private.services as services

    monkeypatch.setattr(services, "find_gcs_addresses", lambda: {"127.0.0.1:6379", "127.0.0.1:6380"})
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster, "_have_ray_token", lambda: False)  # or it sets RAY_AUTH_MODE for the session
    with pytest.raises(ConfigError, match="2 Ray clusters run on this machine .*127.0.0.1:6379, 127.0.0.1:6380"):
        cluster.ensure_ray(ClusterConfig(address="auto"))
