"""One local Ray cluster for all runtime tests (2 CPUs; actors ask for 0 CPUs so many fit).

Import the fixtures into a test module: `from tests.scheduler.ray_fixtures import ray_local, ray_session`.
A module that needs its own cluster shuts this one down; the next module starts it again.
"""

from __future__ import annotations

import os

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray")


def init_local() -> None:
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 namespace="ponder-tests")


@pytest.fixture(scope="session")
def ray_session():
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_local(ray_session):
    init_local()
    yield
