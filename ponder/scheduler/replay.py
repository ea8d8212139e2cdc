"""`ReplayContext`: hands a search the probe's samples before sampling new ones.

The difficulty probe has already drawn (and paid for, and scored) `k` full solutions from the
root, each a chain of steps. A search gets them back wherever it asks for what they are:

- full solutions from a root (best-of-N, self-consistency): the chains themselves;
- next steps from a root (beam search, DVTS, REBASE, ...): the chains' first steps;
- next steps from a step it was handed: that chain's next step, as the node's first child.

A replayed step is a sample of the same policy at the same temperature from the same prefix, so
the search is the same search; it is only cheaper. Its PRM rewards are already known when the
PRM is causal (`EngineContext` scores a chain's prefixes with it), otherwise it is scored as
usual. Greedy calls (another temperature) never get sampled steps. A step's own samples take
their indices after the one replayed below it, so no two children share a seed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ponder.search.context import SearchContext
from ponder.search.types import Node


class ReplayContext(SearchContext):
    def __init__(self, inner: SearchContext, samples: Sequence[Node], temperature: float | None = None):
        self.inner = inner
        self.problem = inner.problem
        self.rng = inner.rng
        self.temperature = inner.temperature
        self._samples = list(samples)  # chains (their last nodes) no root has been handed yet
        self._leaves = list(samples)
        self._next: dict[int, Node] = {}  # id of a handed-out step -> its chain's next step
        self._reached: set[int] = set()  # ids of the chains' last steps handed out
        self._temperature = temperature  # the probe's sampling temperature
        self.replayed_steps = 0  # steps handed out

    @property
    def replayed(self) -> int:
        """Chains handed out (whole, or from their first step)."""
        return len(self._leaves) - len(self._samples)

    @property
    def spent(self):  # type: ignore[override]
        return self.inner.spent

    @property
    def budget(self) -> float:
        return self.inner.budget

    def should_stop(self) -> bool:
        return self.inner.should_stop()

    async def regrant(self, weight: float, cap: float | None = None, value: float | None = None) -> float | None:
        return await self.inner.regrant(weight, cap, value)

    def unused(self) -> list[Node]:
        """The probe's solutions the search never reached (not handed whole, nor step by step)."""
        return [leaf for leaf in self._leaves if leaf.id not in self._reached]

    async def expand(
        self, nodes: Sequence[Node], n: int = 1, *, temperature: float | None = None, to_end: bool = False
    ) -> list[list[Node]]:
        if (n <= 0 or self.inner.should_stop() or (not self._samples and not self._next)
                or (temperature is not None and temperature != self._temperature)):
            return await self.inner.expand(nodes, n, temperature=temperature, to_end=to_end)
        handed = self._hand(nodes, n, to_end)
        # The rest is sampled: one call per count still wanted, sent together (one batch).
        want: dict[int, list[int]] = {}
        for i, (node, got) in enumerate(zip(nodes, handed)):
            if len(got) < n and not node.terminal:
                want.setdefault(n - len(got), []).append(i)
        drawn = await asyncio.gather(*(self.inner.expand([nodes[i] for i in idx], k, temperature=temperature,
                                                         to_end=to_end) for k, idx in want.items()))
        for idx, per_node in zip(want.values(), drawn):
            for i, children in zip(idx, per_node):
                handed[i] += children
        return handed

    def _hand(self, nodes: Sequence[Node], n: int, to_end: bool) -> list[list[Node]]:
        """Per node, what the probe already drew of what it asks for: the roots share the unused
        chains in turn (at most n each, so each of DVTS's subtrees gets one), a handed-out step
        its chain's next step (to_end: the rest of its chain)."""
        handed: list[list[Node]] = [[] for _ in nodes]
        roots = [i for i, node in enumerate(nodes) if node.is_root]
        for turn in range(min(len(roots) * n, len(self._samples))):
            i = roots[turn % len(roots)]
            path = self._samples.pop(0).path()
            self._next.update((a.id, b) for a, b in zip(path, path[1:]))
            handed[i].append(self._take(path[0], nodes[i], to_end))
        for i, node in enumerate(nodes):
            nxt = None if node.is_root else self._next.pop(node.id, None)
            if nxt is not None:
                handed[i].append(self._take(nxt, node, to_end))
        return handed

    def _take(self, step: Node, parent: Node, to_end: bool) -> Node:
        """Hand out `step` as `parent`'s next sample (a chain's first step is hung under the
        search's own root). Returns the step, or with to_end its chain's last step."""
        step.parent = parent
        if not (to_end and parent.is_root):
            # Below a handed-out step it is the parent's sample 0, so the parent's own samples
            # take the next indices and no two children share a key. Whole solutions from a root
            # keep the probe's indices (as before this step-level replay, so best-of-N's samples
            # are unchanged): a finished solution is never expanded, and the root's samples are
            # seeded by its own key, not the probe root's.
            step.index = parent.drawn
            parent.drawn += 1
        got = step
        self.replayed_steps += 1
        while to_end and (nxt := self._next.pop(got.id, None)) is not None:
            got = nxt
            self.replayed_steps += 1
        if got.id not in self._next:  # the chain's last step
            self._reached.add(got.id)
        return got

    async def score(self, nodes: Sequence[Node]) -> list[list[float]]:
        return await self.inner.score(nodes)
