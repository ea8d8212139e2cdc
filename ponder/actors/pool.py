"""`ReplicaPool`: a set of replica actors behind the engine protocol.

The runner uses a pool exactly like an in-process engine (`generate` / `score` over a batch).
The pool splits each batch into per-replica sub-batches:

- routing by least outstanding work, with prefix affinity: requests with the same `affinity`
  key (a search tree) go back to the replica that served the key before, so that replica's
  prefix cache hits, unless that replica is overloaded: at its in-flight cap, or both more than
  `affinity_slack` over the least loaded and over (1 + `affinity_load_factor`) x the mean load
  (bounded-load routing: affinity holds at high concurrency, and no replica runs away);
- failure: when a replica dies mid-call its sub-batch is sent again to another replica
  (generation is seeded per request, so a retry gives the same result) while the pool waits
  for Ray to restart the actor, or replaces it if it does not come back;
- `scale(n)` adds replicas or drains and removes some, dropping no request;
- ownership: given a `ReplicaOwner` (ponder/actors/owner.py) the pool creates and kills replicas
  through it, so they outlive the process hosting the pool, and `start` attaches to the ones the
  owner already has before creating any;
- shared load: a packed reply carries the work the replica's other callers (other scheduler
  shards' pools over the same replicas) have there, and routing counts it (for `load_ttl_s`
  after the reply) beside the pool's own, so every shard routes by the replicas' total load.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorDiedError, RayActorError

from ponder.actors import wire
from ponder.actors.engine import EngineInfo, EngineUnavailable, GeneratedStep, ScoreRequest, ScoreResult, StepRequest
from ponder.actors.replica import EngineBuilder, actor_options, make_replica
from ponder.config import ClusterConfig, EngineConfig

log = logging.getLogger(__name__)

_AFFINITY_KEYS = 100_000  # remembered affinity keys (LRU)


class PoolUnavailable(EngineUnavailable):
    """No replica answered within the pool's restart timeout."""


@dataclass(eq=False)
class Member:
    handle: Any
    id: int
    outstanding: int = 0  # work (samples) in flight
    calls: int = 0  # sub-batches in flight
    healthy: bool = True
    draining: bool = False
    failures: int = 0
    others: int = 0  # work other pools (shards) had on this replica at its last packed reply
    others_at: float = float("-inf")  # when that reply came (time.monotonic())
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    recovery: asyncio.Task | None = None

    def __post_init__(self) -> None:
        self.idle.set()


def _work(req: Any) -> int:
    return max(1, getattr(req, "n", 1))


class ReplicaPool:
    def __init__(
        self,
        role: str,
        engine_cfg: EngineConfig,
        cluster: ClusterConfig | None = None,
        *,
        builder: EngineBuilder | None = None,
        affinity_slack: int = 64,
        affinity_load_factor: float = 1.0,
        health_timeout_s: float = 10.0,
        owner: Any = None,
    ):
        if role not in ("policy", "reward"):
            raise ValueError(f"pool role must be 'policy' or 'reward', got {role!r}")
        self.role = role
        self.engine_cfg = engine_cfg
        self.cluster = cluster or ClusterConfig()
        self.builder = builder
        self.cap = max(1, self.cluster.max_inflight_per_replica)
        self.affinity_slack = affinity_slack  # extra work an affine replica may carry over the least loaded
        # Bounded load: an affine replica also keeps its key while its load stays within
        # (1 + this) x the mean load per replica, however far it is above the least loaded, so
        # affinity holds at high concurrency without letting one replica run away (0: the slack
        # alone decides, as before).
        self.affinity_load_factor = affinity_load_factor
        self.health_timeout_s = health_timeout_s
        self.owner = owner  # a ReplicaOwner handle, or None: replicas are this process's children
        self.members: list[Member] = []
        self._ids = itertools.count()
        self._affinity: OrderedDict[str, Member] = OrderedDict()
        self._changed = asyncio.Event()  # set whenever a replica joins or recovers
        self._method = "generate" if role == "policy" else "score"
        # Books for stats(): pool-side busy time and routing outcomes.
        self.started = time.perf_counter()
        self._inflight = 0
        self._busy_since: float | None = None
        self.busy_s = 0.0
        self._outbox: dict[Member, list[tuple[list[Any], asyncio.Future]]] = {}  # this turn's sub-batches
        self._shipping: set[asyncio.Task] = set()
        self._caller = uuid.uuid4().hex[:12]  # who this pool is to the replicas' load books
        self.counts = {"calls": 0, "ray_calls": 0, "requests": 0, "retries": 0, "affinity_hits": 0, "affinity_misses": 0,
                       "replaced": 0, "restarts_seen": 0}

    # ----- lifecycle

    async def start(self, n: int | None = None) -> ReplicaPool:
        n = n if n is not None else (self.cluster.policy_replicas if self.role == "policy" else self.cluster.reward_replicas)
        if n < 1:
            raise ValueError(f"a {self.role} pool needs at least one replica, got {n}")
        if self.owner is not None:
            # Take every replica the owner has (a restarted scheduler's pool finds its old ones;
            # surplus ones are kept, never killed here) and create only the shortfall.
            for h in await self.owner.replicas.remote(self.role):
                self.members.append(Member(h, next(self._ids)))
            n = max(0, n - len(self.members))
        await self._add(n)
        return self

    async def _spawn(self) -> Any:
        if self.owner is not None:
            handle = await self.owner.spawn.remote(self.role, self.engine_cfg, self.cluster, self.builder)
        else:
            handle = make_replica(self.role, self.engine_cfg, self.cluster, self.builder)
        wait = max(self.health_timeout_s, 120.0)
        try:
            await asyncio.wait_for(handle.health.remote(), timeout=wait)
        except asyncio.TimeoutError:
            # Most often the replica cannot be placed: it asks for more than the cluster has free.
            await self._kill(handle)
            asks = {k: v for k, v in actor_options(self.role, self.cluster).items() if k != "max_concurrency"}
            free = {k: v for k, v in ray.available_resources().items() if not k.startswith(("node:", "object_store"))}
            raise PoolUnavailable(
                f"a {self.role} replica did not start within {wait:.0f}s: it asks for {asks} "
                f"and the cluster has {free} free (set cluster.cpus_per_replica or the replica counts)"
            ) from None
        return handle

    async def _add(self, k: int) -> None:
        handles = await asyncio.gather(*(self._spawn() for _ in range(k)))
        for h in handles:
            self.members.append(Member(h, next(self._ids)))
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def scale(self, n: int) -> None:
        """Grow or shrink to `n` replicas. Removed replicas get no new work and are killed once
        their in-flight calls finish."""
        if n < 1:
            raise ValueError(f"a {self.role} pool needs at least one replica, got {n}")
        live = [m for m in self.members if not m.draining]
        if n > len(live):
            await self._add(n - len(live))
            return
        # Drop unhealthy replicas first, then the least loaded.
        victims = sorted(live, key=lambda m: (m.healthy, m.outstanding, -m.id))[: len(live) - n]
        for m in victims:
            m.draining = True
        await asyncio.gather(*(self._retire(m) for m in victims))

    async def _retire(self, m: Member) -> None:
        await m.idle.wait()
        if m.recovery is not None:
            m.recovery.cancel()
        self.members.remove(m)
        await self._kill(m.handle)

    async def _kill(self, handle: Any) -> None:
        if self.owner is not None:
            await self.owner.retire.remote(self.role, handle)
        else:
            ray.kill(handle, no_restart=True)

    async def close(self) -> None:
        """Kill every replica of this pool."""
        members = self.detach()
        await asyncio.gather(*(self._kill(m.handle) for m in members))

    def detach(self) -> list[Member]:
        """Forget every replica without killing it (with an owner, a later pool can attach to them)."""
        members, self.members = self.members, []
        for m in members:
            if m.recovery is not None:
                m.recovery.cancel()
        return members

    @property
    def size(self) -> int:
        return sum(1 for m in self.members if not m.draining)

    # ----- the engine protocol

    async def generate(self, requests: list[StepRequest]) -> list[list[list[GeneratedStep]]]:
        if self.role != "policy":
            raise TypeError("generate() called on a reward pool")
        return await self._dispatch(requests)

    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        if self.role != "reward":
            raise TypeError("score() called on a policy pool")
        return await self._dispatch(requests)

    def info(self) -> EngineInfo:
        return EngineInfo(kind=f"pool:{self.engine_cfg.kind}", model=self.engine_cfg.path or "",
                          extra={"role": self.role, "replicas": self.size})

    # ----- routing

    def _candidates(self, exclude: set[Member]) -> list[Member]:
        return [m for m in self.members if m.healthy and not m.draining and m not in exclude]

    def route(self, requests: Sequence[Any], exclude: set[Member] | None = None) -> dict[Member, list[int]]:
        """Assign each request (by index) to a replica: the key's previous replica if it is not
        overloaded, else the one with least outstanding work."""
        cands = self._candidates(exclude or set())
        if not cands:
            return {}
        # Each candidate's load: this pool's work in flight there, what other shards had there at
        # its last reply (while fresh), and what this routing has planned for it so far.
        now = time.monotonic()
        ttl = self.load_ttl_s
        load = {m: m.outstanding + (m.others if now - m.others_at < ttl else 0) for m in cands}
        groups: dict[Any, list[int]] = {}
        for i, r in enumerate(requests):
            key = getattr(r, "affinity", None)
            groups.setdefault(key if key is not None else ("_", i), []).append(i)
        out: dict[Member, list[int]] = {}
        total = sum(load.values()) + sum(_work(r) for r in requests)
        bound = (1 + self.affinity_load_factor) * total / len(cands) if self.affinity_load_factor > 0 else 0.0
        for key, idx in groups.items():
            work = sum(_work(requests[i]) for i in idx)
            least = min(cands, key=lambda m: (load[m], m.calls))
            chosen = self._affinity.get(key) if isinstance(key, str) else None
            if chosen is not None and chosen in load and not self._overloaded(chosen, least, load, load[chosen] + work <= bound):
                self.counts["affinity_hits"] += 1
            else:
                if chosen is not None:
                    self.counts["affinity_misses"] += 1
                chosen = least
            if isinstance(key, str):
                self._affinity[key] = chosen
                self._affinity.move_to_end(key)
                if len(self._affinity) > _AFFINITY_KEYS:
                    self._affinity.popitem(last=False)
            load[chosen] += work
            out.setdefault(chosen, []).extend(idx)
        return out

    def _overloaded(self, m: Member, least: Member, load: dict[Member, int], within_bound: bool = False) -> bool:
        if m is least:
            return False
        at_cap = m.calls >= self.cap and least.calls < self.cap
        return at_cap or (load[m] - load[least] > self.affinity_slack and not within_bound)

    async def _dispatch(self, requests: list[Any]) -> list[Any]:
        if not requests:
            return []
        results: list[Any] = [None] * len(requests)
        await self._send_all(requests, list(range(len(requests))), results, set())
        return results

    async def _send_all(self, requests: list[Any], idx: list[int], results: list[Any], exclude: set[Member]) -> None:
        plan = await self._plan([requests[i] for i in idx], exclude)
        await asyncio.gather(*(self._send(m, requests, [idx[j] for j in sub], results, exclude) for m, sub in plan.items()))

    async def _plan(self, reqs: list[Any], exclude: set[Member]) -> dict[Member, list[int]]:
        """Route, waiting for a replica to come back when none is available."""
        deadline = time.monotonic() + self.cluster.restart_timeout_s + self.health_timeout_s
        while True:
            plan = self.route(reqs, exclude)
            if plan:
                return plan
            if exclude and self._candidates(set()):
                exclude.clear()  # every replica failed once; try the recovered ones again
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise PoolUnavailable(f"no {self.role} replica available after {self.cluster.restart_timeout_s:.0f}s")
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, 1.0))
            except asyncio.TimeoutError:
                pass

    # Batches travel as msgpack arrays (ponder/actors/wire.py): cloudpickle's per-object hooks
    # cost the scheduler several microseconds per expansion. And the sub-batches bound for one
    # replica within one turn of the event loop (a batcher flushing several batches at once, each
    # split over the replicas) go as one Ray call: each call costs the scheduler about half a
    # millisecond of CPU, and with 8 replicas a pool otherwise makes 8 calls per batch. False:
    # plain objects, one call each (in-process replicas, where nothing crosses a process).
    packed = True
    # Other shards' load on a replica, as its last reply said, counts for routing this long.
    load_ttl_s = 1.0

    async def _call(self, m: Member, sub: list[Any]) -> list[Any]:
        if not self.packed:
            return await getattr(m.handle, self._method).remote(sub)
        loop = asyncio.get_running_loop()
        box = self._outbox.get(m)
        if box is None:
            box = self._outbox[m] = []
            loop.call_soon(self._ship, m)
        fut = loop.create_future()
        box.append((sub, fut))
        return await fut

    def _ship(self, m: Member) -> None:
        box = self._outbox.pop(m, None)
        if box:
            task = asyncio.get_running_loop().create_task(self._ship_box(m, box))
            self._shipping.add(task)
            task.add_done_callback(self._shipping.discard)

    async def _remote(self, m: Member, sub: list[Any]) -> list[Any]:
        self.counts["ray_calls"] += 1
        data = await getattr(m.handle, f"{self._method}_packed").remote(wire.pack_call(self.role, sub, self._caller))
        out, others = wire.unpack_reply(self.role, data)
        m.others, m.others_at = others, time.monotonic()
        return out

    async def _ship_box(self, m: Member, box: list[tuple[list[Any], asyncio.Future]]) -> None:
        def settle(fut: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
            if not fut.done():
                fut.set_exception(error) if error is not None else fut.set_result(result)

        try:
            out = await self._remote(m, [r for sub, _ in box for r in sub])
        except RayActorError as e:  # the replica died: every sub-batch retries elsewhere
            for _, fut in box:
                settle(fut, error=e)
        except Exception as e:
            if len(box) == 1:
                settle(box[0][1], error=e)
                return
            # A request that breaks the engine must fail alone: send the sub-batches on their own.
            async def alone(sub: list[Any], fut: asyncio.Future) -> None:
                try:
                    settle(fut, await self._remote(m, sub))
                except Exception as err:
                    settle(fut, error=err)

            await asyncio.gather(*(alone(sub, fut) for sub, fut in box))
        else:
            at = 0
            for sub, fut in box:
                settle(fut, out[at:at + len(sub)])
                at += len(sub)

    async def _send(self, m: Member, requests: list[Any], idx: list[int], results: list[Any], exclude: set[Member]) -> None:
        sub = [requests[i] for i in idx]
        work = sum(_work(r) for r in sub)
        m.outstanding += work
        m.calls += 1
        m.idle.clear()
        self._enter()
        try:
            out = await self._call(m, sub)
        except RayActorError as e:
            failed = True
            self._on_failure(m, e)
        else:
            failed = False
            self.counts["calls"] += 1
            self.counts["requests"] += len(sub)
            for i, res in zip(idx, out):
                results[i] = res
        finally:
            m.outstanding -= work
            m.calls -= 1
            if m.calls == 0:
                m.idle.set()
            self._exit()
        if failed:
            self.counts["retries"] += 1
            await self._send_all(requests, idx, results, exclude | {m})

    def _enter(self) -> None:
        if self._inflight == 0:
            self._busy_since = time.perf_counter()
        self._inflight += 1

    def _exit(self) -> None:
        self._inflight -= 1
        if self._inflight == 0 and self._busy_since is not None:
            self.busy_s += time.perf_counter() - self._busy_since
            self._busy_since = None

    # ----- failure and health

    def _on_failure(self, m: Member, err: Exception) -> None:
        m.failures += 1
        if m.healthy:
            log.warning("%s replica %d failed (%s); retrying its requests elsewhere", self.role, m.id, type(err).__name__)
            self.counts["restarts_seen"] += 1
        m.healthy = False
        if m.recovery is None or m.recovery.done():
            m.recovery = asyncio.get_running_loop().create_task(self._recover(m))

    async def _recover(self, m: Member) -> None:
        """Wait for Ray to restart the actor; replace it if it is dead for good or too slow."""
        deadline = time.monotonic() + self.cluster.restart_timeout_s
        while time.monotonic() < deadline and not m.draining:
            try:
                await asyncio.wait_for(m.handle.health.remote(), timeout=self.health_timeout_s)
                m.healthy = True
                self._notify()
                return
            except ActorDiedError:
                break  # no restart coming (killed for good, or restarts exhausted)
            except (RayActorError, asyncio.TimeoutError):
                await asyncio.sleep(0.2)
        if m.draining:
            return
        try:
            await self._kill(m.handle)
        except Exception:  # already gone
            pass
        log.warning("%s replica %d did not come back; starting a replacement", self.role, m.id)
        m.handle = await self._spawn()
        self.counts["replaced"] += 1
        m.healthy = True
        self._notify()

    async def health(self) -> list[dict[str, Any]]:
        async def ping(m: Member) -> dict[str, Any]:
            try:
                h = await asyncio.wait_for(m.handle.health.remote(), timeout=self.health_timeout_s)
            except (RayActorError, asyncio.TimeoutError) as e:
                self._on_failure(m, e)
                h = {"ok": False, "error": type(e).__name__}
            return {"id": m.id, "draining": m.draining, **h}

        return list(await asyncio.gather(*(ping(m) for m in self.members)))

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(m.healthy for m in self.members):
            if time.monotonic() > deadline:
                raise PoolUnavailable(f"{self.role} pool not healthy after {timeout:.0f}s")
            await asyncio.sleep(0.1)

    def busy_seconds(self) -> float:
        extra = time.perf_counter() - self._busy_since if self._busy_since is not None else 0.0
        return self.busy_s + extra

    async def stats(self) -> dict[str, Any]:
        """Pool-side routing counts and busy time, plus each replica's own books."""

        async def one(m: Member) -> dict[str, Any]:
            try:
                s = await asyncio.wait_for(m.handle.stats.remote(), timeout=self.health_timeout_s)
            except (RayActorError, asyncio.TimeoutError):
                s = {}
            return {"id": m.id, "healthy": m.healthy, "draining": m.draining, "outstanding": m.outstanding, **s}

        replicas = list(await asyncio.gather(*(one(m) for m in self.members)))
        wall = time.perf_counter() - self.started
        return {
            "role": self.role,
            "replicas": self.size,
            "wall_s": wall,
            "busy_s": self.busy_seconds(),
            "busy_fraction": self.busy_seconds() / wall if wall else 0.0,
            "replica_busy_fraction": (
                sum(r.get("busy_s", 0.0) for r in replicas) / (wall * max(1, len(replicas))) if wall else 0.0
            ),
            "tokens": sum(r.get("tokens", 0) for r in replicas),
            **self.counts,
            "per_replica": replicas,
        }
