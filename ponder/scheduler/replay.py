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
        self.replayed = 0  # chains handed out (whole, or from their first step)
        self.replayed_steps = 0  # steps handed out

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
        for turn in range(len(roots) * n):
            if not self._samples:
                break
            i = roots[turn % len(roots)]
            path = self._samples.pop(0).path()
            self.replayed += 1
            handed[i].append(self._take(path[0], nodes[i], path[1:], to_end))
        for i, node in enumerate(nodes):
            nxt = None if node.is_root else self._next.pop(node.id, None)
            if nxt is not None:
                handed[i].append(self._take(nxt, node, self._chain_below(nxt), to_end))
        return handed

    def _chain_below(self, step: Node) -> list[Node]:
        out, node = [], step
        while (nxt := self._next.get(node.id)) is not None:
            out.append(nxt)
            node = nxt
        return out

    def _take(self, step: Node, parent: Node, below: list[Node], to_end: bool) -> Node:
        """Hand out `step` as `parent`'s next sample (a chain's first step is hung under the
        search's own root); `below` is the rest of its chain. Returns the step, or with to_end
        the chain's last step (the whole rest is then handed out)."""
        step.parent = parent
        if not (to_end and parent.is_root):
            # Below a handed-out step it is the parent's sample 0, so the parent's own samples
            # take the next indices and no two children share a key. Whole solutions from a root
            # keep the probe's indices (as before this step-level replay, so best-of-N's samples
            # are unchanged): a finished solution is never expanded, and the root's samples are
            # seeded by its own key, not the probe root's.
            step.index = parent.drawn
            parent.drawn += 1
        chain = [step, *below]
        for a, b in zip(chain, chain[1:]):
            if to_end:
                self._next.pop(a.id, None)
            else:
                self._next[a.id] = b
        self.replayed_steps += len(chain) if to_end else 1
        got = chain[-1] if to_end else step
        if got is chain[-1]:
            self._reached.add(got.id)
        return got

    async def score(self, nodes: Sequence[Node]) -> list[list[float]]:
        return await self.inner.score(nodes)
