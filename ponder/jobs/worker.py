"""The job worker: a detached Ray actor that runs every active job of a Redis job store.

It is what makes a job outlive its client: `ponder submit` writes the job into Redis and makes
sure a worker exists, then returns. The worker polls the store's active set, runs each job's
loop (`run_job`) on a named, detached scheduler for the job's engines and search settings, and
keeps going across failures:
- the scheduler actor crashes: Ray restarts it, it re-attaches to its replicas, the loop
  requeues the searches that were in flight and re-opens the job's state;
- Redis restarts: every store call retries until the server answers again (AOF keeps the data);
- the worker itself crashes: Ray restarts it, `__init__` starts the poll loop again, and the
  same consumer name takes back its pending items at once (others' after their lease).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

import ray

from ponder.config import PonderConfig
from ponder.jobs.core import run_job
from ponder.jobs.redis_store import FINISHED, RedisJobStore
from ponder.jobs.spec import JobSpec

log = logging.getLogger(__name__)


def deployment_name(config: PonderConfig) -> str:
    """Jobs with the same engines, search settings and pool layout share one scheduler."""
    d = config.to_dict()
    d["search"] = {k: v for k, v in d["search"].items() if k != "params"}
    # Where the client connected from (cluster.address) does not change the deployment.
    d["cluster"] = {k: v for k, v in d["cluster"].items() if k not in ("address", "dashboard")}
    material = {k: d[k] for k in ("policy", "reward", "search", "scheduler", "cluster")}
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"ponder-{digest}"


def scheduler_names(config: PonderConfig) -> tuple[str, str]:
    """(scheduler actor, replica owner) names of `config`'s deployment: the job worker and the
    HTTP service use the same ones, so they share the pools."""
    name = deployment_name(config)
    return f"{name}-scheduler", f"{name}-replicas"


class JobWorkerImpl:
    def __init__(self, redis_url: str, consumer: str = "worker-0", poll_s: float = 1.0, lease_s: float = 60.0):
        self.store = RedisJobStore(redis_url)
        self.consumer = consumer
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.running: dict[str, asyncio.Task] = {}
        self.schedulers: dict[str, Any] = {}
        # An async actor's __init__ runs on its event loop, so the loop starts on every (re)start.
        self._main = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            self.running = {j: t for j, t in self.running.items() if not t.done()}
            try:
                for job_id in await self.store.active():
                    if job_id not in self.running:
                        self.running[job_id] = asyncio.get_running_loop().create_task(self._run(job_id))
            except Exception as e:  # the store is down for longer than its retries: poll again
                log.warning("job worker: cannot list active jobs (%s)", e)
            await asyncio.sleep(self.poll_s)

    async def _scheduler(self, spec: JobSpec) -> Any:
        from ponder.scheduler.shards import connect_scheduler

        config = spec.ponder_config()
        sched, owner = scheduler_names(config)
        if sched not in self.schedulers:
            self.schedulers[sched] = await connect_scheduler(config, sched, owner)
        return self.schedulers[sched]

    async def _run(self, job_id: str) -> None:
        meta = await self.store.get(job_id)
        if meta is None or meta["status"] in FINISHED:
            return
        spec = JobSpec.from_dict(meta["spec"])
        try:
            scheduler = await self._scheduler(spec)
        except Exception as e:  # engines that cannot start: the job cannot run anywhere
            log.error("job %s: cannot start its scheduler: %s", job_id, e)
            await self.store.set_status(job_id, "failed", error=str(e))
            return
        if meta["status"] == "queued":
            await self.store.set_status(job_id, "running")
        queue = self.store.queue(job_id, self.consumer, max_attempts=spec.max_attempts, lease_s=self.lease_s)

        async def cancelled() -> bool:
            m = await self.store.get(job_id)
            return m is None or m["status"] == "cancelled"

        await run_job(scheduler, spec, queue, concurrency=spec.ponder_config().scheduler.max_concurrent_searches,
                      cancelled=cancelled, renew_s=self.lease_s / 3)

    async def ping(self) -> dict[str, Any]:
        return {"consumer": self.consumer, "running": sorted(j for j, t in self.running.items() if not t.done())}


JobWorker = ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=1000)(JobWorkerImpl)


def _worker(redis_url: str, config: PonderConfig) -> Any:
    jc = config.jobs
    return JobWorker.options(name=jc.worker, namespace=config.cluster.namespace, get_if_exists=True,
                             lifetime="detached").remote(
        redis_url, "worker-0", 1.0, jc.lease_s)


def ensure_worker(redis_url: str, config: PonderConfig) -> Any:
    """The job worker of this Ray namespace, started if none runs (the caller is connected)."""
    handle = _worker(redis_url, config)
    ray.get(handle.ping.remote())
    return handle


async def ensure_worker_async(redis_url: str, config: PonderConfig) -> Any:
    """`ensure_worker` from inside an event loop (the HTTP service)."""
    handle = _worker(redis_url, config)
    await handle.ping.remote()
    return handle
