"""One real Serve app on the shared local Ray cluster (loopback), over `sim` engines with some
latency (so searches last long enough to cancel, queue and time out), a real redis-server as the
job store, and two tenants' bearer tokens."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.jobs.conftest import RedisServer, redis_binary  # noqa: F401  (fixture)
from tests.scheduler.ray_fixtures import init_local, ray, ray_session  # noqa: F401  (fixture)

ALPHA, BETA = "alpha-token-0123456789", "beta-token-0123456789"
SIM_LATENCY = ["policy.options.call_overhead_s=0.01", "policy.options.per_step_s=0.001",
               "reward.options.call_overhead_s=0.005"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    url: str
    config: object
    names: tuple[str, str]

    def headers(self, token: str = ALPHA) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def scheduler(self):
        """A client of the service's scheduler actor (for its stats and admission limits)."""
        from ponder.jobs.spec import runner_config
        from ponder.scheduler.scheduler import RemoteRunner

        return asyncio.run(RemoteRunner.connect(runner_config(self.config), *self.names))


def sim_config(*extra: str):
    from ponder.config import PonderConfig

    return PonderConfig.load("configs/sim.yaml", [
        "cluster.address=auto", "cluster.cpus_per_replica=0", "jobs.worker=ponder-jobs-service-tests",
        *SIM_LATENCY, *extra])


@pytest.fixture(scope="module")
def redis_url(redis_binary: str, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    d: Path = tmp_path_factory.mktemp("redis")
    server = RedisServer(redis_binary, d)
    server.start()
    yield server.url
    server.kill()


@pytest.fixture(scope="module")
def service(ray_session, redis_url: str):  # noqa: F811
    from ray import serve

    from ponder.api.app import build_app
    from ponder.api.auth import digest
    from ponder.jobs.spec import runner_config
    from ponder.jobs.worker import scheduler_names

    init_local()
    config = sim_config()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    tokens = {digest(ALPHA): "alpha", digest(BETA): "beta"}
    serve.run(build_app(config, redis_url=redis_url, tokens=tokens), name="ponder-sim", route_prefix="/")
    svc = Service(f"http://127.0.0.1:{port}", config, scheduler_names(runner_config(config)))
    yield svc
    serve.shutdown()
    svc.scheduler().shutdown()  # detached: the scheduler, its replica owner and the replicas
    try:
        ray.kill(ray.get_actor(config.jobs.worker, namespace=config.cluster.namespace), no_restart=True)
    except ValueError:
        pass
