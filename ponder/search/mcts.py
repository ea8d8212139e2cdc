"""Monte Carlo tree search over reasoning steps, with PUCT selection and a PRM as value.

One simulation: descend from the root by PUCT to a leaf; if the leaf is a finished solution,
its value is its final PRM reward; otherwise expand it (sample `expand_width` next steps), score
the children with the PRM, evaluate the best of them (its step reward is the value) and back
the value up the path. Priors are uniform or the children's normalised PRM rewards; an unvisited
child's Q is its own PRM reward.

Simulations run in waves of `parallel`, so the scheduler can batch their expansions: the
wave's simulations descend one after another, each putting a virtual loss on its path (pending
visits of value 0) that steers the next ones elsewhere; their leaves are expanded together; then
they back up in order and the virtual losses come off. A wave ends early when a descent reaches
a leaf the wave already holds. The tree after each wave depends only on the engines' answers,
never on which answer came back first, so a search's result does not depend on timing.

At the end the search commits to the most-visited path, as AlphaZero picks its move, and unless
it already ends in a finished solution completes it greedily; that completion is an answer
candidate beside the finished leaves (with few simulations for a long problem, the leaves are
often early, wrong finishes), but not part of the tree's statistics.

Bookkeeping: `visits` of a node = its `own_visits` (simulations that ended at it: its
evaluation when created and, for a finished solution, every later visit) + its children's visits.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from ponder.search.aggregate import aggregate, check_choice, check_positive, check_scoring, conclude
from ponder.search.context import SearchContext
from ponder.search.registry import register
from ponder.search.types import Node, Problem, SearchResult


@dataclass
class MCTSConfig:
    n: int = 32  # simulations; each expansion samples `expand_width` steps
    expand_width: int = 4
    c_puct: float = 1.0
    prior: str = "uniform"  # uniform | prm
    parallel: int = 4  # simulations in flight at once
    virtual_loss: float = 1.0  # pending visits (of value 0) an in-flight simulation adds per node
    aggregation: str = "last"
    selection: str = "prm_vote"

    def validate(self) -> None:
        check_positive("n", self.n)
        check_positive("expand_width", self.expand_width)
        check_positive("parallel", self.parallel)
        if self.c_puct < 0 or self.virtual_loss < 0:
            raise ValueError("c_puct and virtual_loss must be >= 0")
        check_choice("prior", self.prior, ("uniform", "prm"))
        check_scoring(self.aggregation, self.selection)


@dataclass
class Stats:
    """Per-node MCTS statistics, kept in `node.meta["mcts"]`."""

    prior: float = 1.0
    visits: int = 0
    own_visits: int = 0
    value_sum: float = 0.0
    in_flight: int = 0  # simulations whose path goes through here (virtual loss)
    children: list[Node] | None = None  # None until expanded
    dead: bool = False  # expansion gave nothing and nothing below can be visited


def stats(node: Node) -> Stats:
    if "mcts" not in node.meta:
        node.meta["mcts"] = Stats()
    return node.meta["mcts"]


class Tree:
    def __init__(self, ctx: SearchContext, cfg: MCTSConfig):
        self.ctx, self.cfg = ctx, cfg
        self.root = Node()
        self.trace: list[dict] = []
        self.completions: list[Node] = []  # greedy completions of the most-visited path

    def nodes(self) -> list[Node]:
        out, todo = [], [self.root]
        while todo:
            node = todo.pop()
            out.append(node)
            todo += stats(node).children or []
        return out

    def q(self, node: Node) -> float:
        st = stats(node)
        pending = st.visits + self.cfg.virtual_loss * st.in_flight
        if pending == 0:
            return aggregate(node.rewards, "last")  # first visit: trust the PRM
        return st.value_sum / pending

    def puct(self, parent: Node, child: Node) -> float:
        p, c = stats(parent), stats(child)
        n_parent = p.visits + self.cfg.virtual_loss * p.in_flight
        n_child = c.visits + self.cfg.virtual_loss * c.in_flight
        return self.q(child) + self.cfg.c_puct * c.prior * math.sqrt(n_parent) / (1 + n_child)

    def descend(self) -> list[Node] | None:
        """Root..leaf by PUCT (first of equal scores); None when nothing can be visited."""
        path = [self.root]
        while True:
            st = stats(path[-1])
            if st.dead:
                return None
            if path[-1].terminal or not st.children:
                return path
            parent = path[-1]
            live = [c for c in st.children if not stats(c).dead]
            path.append(max(live, key=lambda c: self.puct(parent, c)))

    def mark_dead(self, path: list[Node]) -> None:
        stats(path[-1]).dead = True
        for node in reversed(path[:-1]):
            if all(stats(c).dead for c in stats(node).children or []):
                stats(node).dead = True

    def claim(self, k: int) -> list[list[Node]]:
        """Up to `k` paths to distinct leaves, each descent under the virtual loss of the ones
        before it (the caller takes the losses off)."""
        wave: list[list[Node]] = []
        held: set[int] = set()
        while len(wave) < k:
            path = self.descend()
            if path is None or path[-1].id in held:
                break
            for node in path:
                stats(node).in_flight += 1
            held.add(path[-1].id)
            wave.append(path)
        return wave

    async def expand_leaf(self, path: list[Node]) -> list[Node] | None:
        """The leaf's scored children (None for a finished solution, [] when nothing came)."""
        leaf = path[-1]
        if leaf.terminal:
            return None
        [children] = await self.ctx.expand([leaf], self.cfg.expand_width)
        await self.ctx.score(children)
        self.set_priors(children)
        stats(leaf).children = children
        return children

    def backup(self, index: int, path: list[Node], children: list[Node] | None) -> None:
        if children is not None and not children:  # budget spent (or the policy gave nothing)
            self.mark_dead(path)
            return
        visited = list(path)
        if children:
            visited.append(max(children, key=lambda c: aggregate(c.rewards, "last")))
        end = visited[-1]
        value = aggregate(end.rewards, "last")
        stats(end).own_visits += 1
        for node in visited:
            stats(node).visits += 1
            stats(node).value_sum += value
        self.trace.append({"sim": index, "depth": end.depth, "value": value, "terminal": end.terminal,
                           "in_flight": stats(self.root).in_flight})

    def set_priors(self, children: list[Node]) -> None:
        rewards = [aggregate(c.rewards, "last") for c in children]
        total = sum(rewards)
        for c, r in zip(children, rewards):
            stats(c).prior = r / total if self.cfg.prior == "prm" and total > 0 else 1.0 / len(children)

    async def run(self) -> None:
        started = 0
        while started < self.cfg.n and not self.ctx.should_stop():
            wave = self.claim(min(self.cfg.parallel, self.cfg.n - started))
            if not wave:
                break
            try:
                outcomes = await asyncio.gather(*(self.expand_leaf(path) for path in wave))
                for path, children in zip(wave, outcomes):  # in claim order, not arrival order
                    self.backup(started, path, children)
                    started += 1
            finally:  # also when an expansion failed: the virtual losses come off
                for path in wave:
                    for node in path:
                        stats(node).in_flight -= 1
        await self.complete_most_visited()

    async def complete_most_visited(self) -> None:
        node = self.root
        while stats(node).children:
            node = max(stats(node).children, key=lambda c: (stats(c).visits, aggregate(c.rewards, "last")))
        if node.terminal:
            return
        [done] = await self.ctx.expand([node], 1, temperature=0.0, to_end=True)
        await self.ctx.score(done)
        self.completions += done
        self.trace.append({"completed_from_depth": node.depth, "finished": bool(done)})


async def search_tree(problem: Problem, ctx: SearchContext, cfg: MCTSConfig) -> tuple[SearchResult, Tree]:
    """MCTS, also returning the tree (tests check its statistics)."""
    tree = Tree(ctx, cfg)
    await tree.run()
    nodes = tree.nodes() + tree.completions
    result = await conclude(ctx, "mcts", nodes, aggregation=cfg.aggregation, selection=cfg.selection, trace=tree.trace)
    return result, tree


@register("mcts", MCTSConfig)
async def mcts(problem: Problem, ctx: SearchContext, cfg: MCTSConfig) -> SearchResult:
    result, _ = await search_tree(problem, ctx, cfg)
    return result
