import asyncio

import pytest

from ponder.search.mcts import MCTSConfig, Tree, search_tree, stats
from tests.search.fakes import FakePolicy, FakePRM, SpyContext, make_ctx, problems


def check_tree(tree):
    for node in tree.nodes():
        st = stats(node)
        children = st.children or []
        assert st.visits == st.own_visits + sum(stats(c).visits for c in children), node
        assert st.in_flight == 0, "virtual loss left on the tree"
        if not node.terminal:
            assert st.own_visits <= 1  # a non-terminal node ends a simulation only when evaluated
        if node.is_root:
            assert st.own_visits == 0


@pytest.mark.parametrize("parallel", [1, 4])
async def test_visit_counts_are_consistent(parallel):
    p = problems(1, level=3)[0]
    ctx = make_ctx(p, FakePolicy(p_correct=0.6), FakePRM(noise=0.05))
    res, tree = await search_tree(p, ctx, MCTSConfig(n=24, expand_width=3, parallel=parallel))
    check_tree(tree)
    assert stats(tree.root).visits == 24 == len(res.trace)
    assert res.answer == p.answer


async def test_concurrent_simulations_with_random_delays():
    p = problems(1, level=4, seed=9)[0]
    policy = FakePolicy(p_correct=0.6, delay=(0.0, 0.004), delay_seed=3)
    ctx = SpyContext(p, policy, FakePRM(noise=0.05, delay=(0.0, 0.004), delay_seed=4))
    res, tree = await search_tree(p, ctx, MCTSConfig(n=40, expand_width=3, parallel=6))
    check_tree(tree)
    assert stats(tree.root).visits == 40
    assert ctx.max_in_flight > 1  # simulations really overlapped (their engine calls did)
    expanded = [id(node) for nodes, _, _ in ctx.calls for node in nodes]
    assert len(expanded) == len(set(expanded)) > 5  # no leaf was expanded twice
    assert res.candidates and all(c.terminal for c in res.candidates)


async def test_virtual_loss_spreads_parallel_simulations():
    # Equal rewards everywhere: only virtual loss tells in-flight simulations apart. With it, the
    # simulations go down different branches and expand at once; without it they pick the same
    # leaf and wait for each other.
    p = problems(1, level=4)[0]
    concurrency = {}
    for vl in (1.0, 0.0):
        policy = FakePolicy(p_correct=0.6, delay=(0.002, 0.002))
        ctx = SpyContext(p, policy, FakePRM(hi=0.5, lo=0.5))
        _, tree = await search_tree(p, ctx, MCTSConfig(n=12, expand_width=3, parallel=3, virtual_loss=vl))
        check_tree(tree)
        concurrency[vl] = ctx.max_in_flight
    assert concurrency[1.0] == 3 > concurrency[0.0]


async def test_prm_priors_are_normalised_rewards():
    p = problems(1, level=3)[0]
    _, tree = await search_tree(p, make_ctx(p, FakePolicy(p_correct=0.5)), MCTSConfig(n=6, prior="prm"))
    kids = stats(tree.root).children
    assert sum(stats(c).prior for c in kids) == pytest.approx(1.0)
    best = max(kids, key=lambda c: c.reward)
    assert stats(best).prior == max(stats(c).prior for c in kids)


async def test_terminal_values_are_final_rewards_and_deterministic():
    p = problems(1, level=2)[0]
    runs = []
    for _ in range(2):
        res, tree = await search_tree(p, make_ctx(p, FakePolicy(p_correct=0.7)), MCTSConfig(n=20, parallel=1))
        for node in tree.nodes():
            st = stats(node)
            if node.terminal and st.visits:
                assert st.value_sum == pytest.approx(st.visits * node.reward)
        runs.append((res.answer, [t["value"] for t in res.trace]))
    assert runs[0] == runs[1]


def test_bad_prior_is_a_clear_error():
    with pytest.raises(ValueError, match="prior must be one of uniform, prm"):
        MCTSConfig(prior="dirichlet").validate()


class FailingPolicy(FakePolicy):
    """Raises on its `fail_at`-th call, after a delay so other simulations are in flight."""

    fail_at: int = 3

    async def generate(self, requests):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == self.fail_at:  # only this call: the others would go on without cancelling
            await asyncio.sleep(0.002)
            raise RuntimeError("replica died")
        return await super().generate(requests)


async def test_a_failing_expansion_stops_the_search_and_releases_virtual_loss():
    p = problems(1, level=4)[0]
    ctx = make_ctx(p, FailingPolicy(delay=(0.001, 0.003)))
    cfg = MCTSConfig(n=30, parallel=4)
    tree = Tree(ctx, cfg)
    with pytest.raises(RuntimeError, match="replica died"):
        await tree.run()
    calls = ctx.policy.calls
    await asyncio.sleep(0.05)
    assert ctx.policy.calls == calls  # nothing keeps running after the failure
    assert all(stats(node).in_flight == 0 for node in tree.nodes())


async def test_parallel_mcts_does_not_depend_on_engine_timing():
    """Only the engines' latency differs: the same answers, tokens and trees (the review found
    6 of 6 problems changed before simulations ran in waves)."""
    import random

    from ponder.actors.factory import build_policy, build_reward
    from ponder.config import PonderConfig
    from ponder.scheduler.runner import Runner
    from ponder.tasks.datasets import load_problems

    problems = load_problems("arith:6:seed=9:levels=3,5")

    async def run(jitter: bool):
        cfg = PonderConfig.load("configs/sim.yaml", ["scheduler.batch_window_ms=0"])
        policy, reward = build_policy(cfg.policy), build_reward(cfg.reward)
        if jitter:
            rng = random.Random(1)
            real_gen, real_score = policy.generate, reward.score

            async def slow_gen(reqs):
                await asyncio.sleep(rng.uniform(0, 0.01))
                return await real_gen(reqs)

            async def slow_score(reqs):
                await asyncio.sleep(rng.uniform(0, 0.01))
                return await real_score(reqs)

            policy.generate, reward.score = slow_gen, slow_score
        r = Runner(policy, reward, cfg)
        results = await asyncio.gather(*(r.solve(p, "mcts", "n=24", {"parallel": 4}) for p in problems))
        return [(x.answer, x.compute.cost, x.compute.generations) for x in results]

    assert await run(False) == await run(True)
