"""`ReplayContext`: hands a search the probe's samples before sampling new ones.

The difficulty probe has already drawn (and paid for, and scored) `k` full solutions from the
root. Any strategy whose first move is sampling full solutions from the root (best-of-N,
self-consistency, ...) gets those back as the first results of that call, so the probe is not
wasted; step-wise strategies never ask for full solutions and simply do not see them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ponder.search.context import SearchContext
from ponder.search.types import Node


class ReplayContext(SearchContext):
    def __init__(self, inner: SearchContext, samples: Sequence[Node], temperature: float | None = None):
        self.inner = inner
        self.problem = inner.problem
        self.rng = inner.rng
        self.temperature = inner.temperature
        self._samples = list(samples)
        self._temperature = temperature  # the probe's sampling temperature
        self.replayed = 0

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

    def _replayable(self, nodes: Sequence[Node], temperature: float | None, to_end: bool) -> bool:
        return (
            bool(self._samples)
            and to_end
            and len(nodes) == 1
            and nodes[0].is_root
            and (temperature is None or temperature == self._temperature)
        )

    async def expand(
        self, nodes: Sequence[Node], n: int = 1, *, temperature: float | None = None, to_end: bool = False
    ) -> list[list[Node]]:
        if not self._replayable(nodes, temperature, to_end) or n <= 0:
            return await self.inner.expand(nodes, n, temperature=temperature, to_end=to_end)
        root = nodes[0]
        reuse, self._samples = self._samples[:n], self._samples[n:]
        for leaf in reuse:  # re-hang each chain under the search's own root
            first = leaf.path()[0]
            first.parent = root
        self.replayed += len(reuse)
        out = list(reuse)
        if len(out) < n:
            [more] = await self.inner.expand(nodes, n - len(out), temperature=temperature, to_end=to_end)
            out += more
        return [out]

    async def score(self, nodes: Sequence[Node]) -> list[list[float]]:
        return await self.inner.score(nodes)
