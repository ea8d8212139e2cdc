"""Every strategy gives the same result whatever the engines' latency and the batching: seeds
come from a sample's place in the tree, not from the order of calls (issue 13)."""

import asyncio
import random

import pytest

from ponder.actors.factory import build_policy, build_reward
from ponder.config import PonderConfig
from ponder.scheduler.runner import Runner
from ponder.search import registry
from ponder.tasks.datasets import load_problems

PROBLEMS = load_problems("arith:4:seed=21:levels=3,5")
STRATEGIES = [s for s in registry.names() if s != "probe"]


def jittered(engine, method: str, rng: random.Random):
    real = getattr(engine, method)

    async def slow(reqs):
        await asyncio.sleep(rng.uniform(0, 0.004))
        return await real(reqs)

    setattr(engine, method, slow)


async def run(strategy: str, budget: str, *, jitter: bool, window_ms: float, max_batch: int, searches: int,
              params: dict | None = None, extra: list[str] | None = None, problems: list | None = None):
    cfg = PonderConfig.load("configs/sim.yaml", [f"scheduler.batch_window_ms={window_ms}",
                                                  f"scheduler.max_batch={max_batch}",
                                                  f"scheduler.max_concurrent_searches={searches}", *(extra or [])])
    policy, reward = build_policy(cfg.policy), build_reward(cfg.reward)
    if jitter:
        rng = random.Random(strategy)
        jittered(policy, "generate", rng)
        jittered(reward, "score", rng)
    runner = Runner(policy, reward, cfg)
    results = {p.id: r async for p, r in runner.run(problems or PROBLEMS, strategy, budget, params)}
    return {k: (r.answer, r.trajectory, r.stop_reason, r.compute, [c.score for c in r.candidates])
            for k, r in sorted(results.items())}


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_same_results_under_any_latency_and_batching(strategy):
    for budget in ("n=8", "1500"):  # a width, and a token budget (the cost decides when to stop)
        base = await run(strategy, budget, jitter=False, window_ms=0, max_batch=64, searches=32)
        other = await run(strategy, budget, jitter=True, window_ms=3, max_batch=3, searches=2)
        assert base == other, f"{strategy} at {budget}"
        assert any(r[0] is not None for r in base.values())


async def test_adaptive_best_of_n_stops_at_the_same_round_under_any_latency_and_batching():
    params = {"confidence": 0.9, "round_size": 2}
    base = await run("best_of_n", "n=16", jitter=False, window_ms=0, max_batch=64, searches=32, params=params)
    other = await run("best_of_n", "n=16", jitter=True, window_ms=3, max_batch=3, searches=2, params=params)
    assert base == other
    assert len({r[3].generations for r in base.values()}) > 1  # it did stop at different rounds


STEP_STRATEGIES = ["beam_search", "dvts", "rebase", "mcts", "particle_filtering"]


@pytest.mark.parametrize("strategy", STEP_STRATEGIES)
async def test_auto_replaying_the_probe_step_by_step_is_the_same_under_any_latency_and_batching(strategy):
    params = {"strategy": strategy, "probe_samples": 4}
    base = await run("auto", "n=8", jitter=False, window_ms=0, max_batch=64, searches=32, params=params)
    other = await run("auto", "n=8", jitter=True, window_ms=3, max_batch=3, searches=2, params=params)
    assert base == other
    assert any(r[0] is not None for r in base.values())


async def test_step_searches_reuse_the_probe_instead_of_paying_it_again():
    """On the simulator (a causal PRM), a step search after the probe is handed the probe's steps:
    auto forced to it saves at least a quarter of the probe's cost on the search alone plus the
    probe (beam search keeps only the chains that stay in its top N/M; REBASE nearly all)."""
    def total(rs):
        return sum(r[3].cost for r in rs.values())

    probe = total(await run("probe", "n=4", jitter=False, window_ms=0, max_batch=64, searches=32))
    for strategy in ("beam_search", "rebase"):
        alone = await run(strategy, "n=8", jitter=False, window_ms=0, max_batch=64, searches=32)
        auto = await run("auto", "n=8", jitter=False, window_ms=0, max_batch=64, searches=32,
                         params={"strategy": strategy, "probe_samples": 4})
        assert total(auto) < total(alone) + 0.75 * probe, strategy
