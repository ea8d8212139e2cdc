"""`ReplicaOwner`: a detached actor that creates and keeps a scheduler's replica actors.

A Ray actor shares the fate of the worker that created it, so replicas made inside the Scheduler
actor die with it. A pool given an owner creates and kills its replicas through the owner
instead, and a restarted scheduler attaches to the same replicas (same processes, warm caches).

The replicas are themselves detached and named `"{owner}:{role}:{seq}"`. A non-detached child
would die whenever the owner restarts (`max_restarts=-1`), so there would be nothing left to
recover; detached, they outlive an owner crash too, and the restarted owner finds them again by
name (`list_named_actors`). The cost: the owner is the one place that kills them (`retire`,
`close`), so call `close()` before killing an owner for good, or its replicas stay up.
"""

from __future__ import annotations

from typing import Any

import ray

from ponder.actors.replica import EngineBuilder, make_replica
from ponder.config import ClusterConfig, EngineConfig

_ROLES = ("policy", "reward")


def actor_id(handle: Any) -> str:
    return handle._actor_id.hex()


class ReplicaOwnerImpl:
    def __init__(self, name: str):
        self.name = name
        # role -> actor id -> (name, handle); dicts keep creation order.
        self._live: dict[str, dict[str, tuple[str, Any]]] = {r: {} for r in _ROLES}
        self._seq = 0
        self._recover()

    def _recover(self) -> None:
        """Pick up the replicas an earlier incarnation of this owner made (none on a first start)."""
        prefix, found = f"{self.name}:", []
        for n in ray.util.list_named_actors():
            role, _, seq = n[len(prefix):].partition(":")
            if n.startswith(prefix) and role in _ROLES and seq.isdigit():
                found.append((int(seq), role, n))
        for _, role, n in sorted(found):
            try:
                h = ray.get_actor(n)
            except ValueError:  # died between the listing and the lookup
                continue
            self._live[role][actor_id(h)] = (n, h)
        # Never reuse a sequence number: a retired replica's name may not be released yet.
        self._seq = max((s for s, _, _ in found), default=-1) + 1

    async def replicas(self, role: str) -> list[Any]:
        """Live replicas of `role`, oldest first. A replica killed behind the owner's back loses
        its name once dead, so a name lookup tells the dead ones apart (and they are forgotten)."""
        live = self._live[role]
        for aid, (n, _) in list(live.items()):
            try:
                ray.get_actor(n)
            except ValueError:
                del live[aid]
        return [h for _, h in live.values()]

    async def spawn(self, role: str, engine_cfg: EngineConfig, cluster: ClusterConfig,
                    builder: EngineBuilder | None = None) -> Any:
        """Create one replica (it may still be starting when this returns)."""
        name = f"{self.name}:{role}:{self._seq}"
        self._seq += 1
        h = make_replica(role, engine_cfg, cluster, builder, name=name, detached=True)
        self._live[role][actor_id(h)] = (name, h)
        return h

    async def retire(self, role: str, replica: Any) -> bool:
        """Kill a replica (a handle or an actor id) for good; False if the owner did not know it."""
        by_id = isinstance(replica, str)
        entry = self._live[role].pop(replica if by_id else actor_id(replica), None)
        if entry is not None:
            _kill(entry[1])
        elif not by_id:
            _kill(replica)  # unknown to this owner, but the caller holds it: kill it all the same
        return entry is not None

    async def close(self) -> int:
        """Kill every replica; returns how many."""
        n = 0
        for live in self._live.values():
            for _, h in live.values():
                _kill(h)
                n += 1
            live.clear()
        return n


def _kill(handle: Any) -> None:
    try:
        ray.kill(handle, no_restart=True)
    except Exception:  # already gone
        pass


# Restarts on failure and recovers its replicas by name. Every method is safe to run twice
# (a `spawn` retried across a crash may leave one extra replica, which the owner then keeps),
# so Ray retries calls caught by a restart instead of failing the pool's call.
ReplicaOwner = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(ReplicaOwnerImpl)


def get_owner(name: str) -> Any:
    """The owner named `name` in the current namespace, created (detached) if there is none."""
    return ReplicaOwner.options(name=name, lifetime="detached", get_if_exists=True).remote(name)
