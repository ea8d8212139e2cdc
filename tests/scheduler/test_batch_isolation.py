"""A request that breaks the engine fails alone: its batch-mates get their results."""

import asyncio

import pytest

from ponder.actors.engine import EngineUnavailable
from ponder.config import PonderConfig
from ponder.scheduler.batcher import Batcher
from ponder.scheduler.runner import Runner
from ponder.search.types import Problem
from ponder.tasks.datasets import load_problems


def sim_runner() -> Runner:
    from ponder.actors.factory import build_policy, build_reward

    cfg = PonderConfig.from_dict({"policy": {"kind": "sim"}, "reward": {"kind": "sim"},
                                  "cluster": {"address": "inprocess"},
                                  "scheduler": {"max_concurrent_searches": 64, "batch_window_ms": 20}})
    return Runner(build_policy(cfg.policy), build_reward(cfg.reward), cfg)


async def test_one_bad_problem_among_forty_fails_alone():
    r = sim_runner()
    good = load_problems("arith:40:seed=3")
    bad = Problem(id="bad", problem="What is the capital of France?", answer="Paris")
    results = await asyncio.gather(*(r.solve(p, "best_of_n", "n=4") for p in [*good[:20], bad, *good[20:]]))
    by_id = {p.id: res for p, res in zip([*good[:20], bad, *good[20:]], results)}
    assert by_id["bad"].stop_reason == "error" and "arithmetic" in by_id["bad"].meta["error"]
    assert all(by_id[p.id].stop_reason != "error" for p in good)
    assert r.policy.batcher.stats.splits >= 1  # the bad request really shared a batch and was split out
    stats = r.stats_now()  # what an operator sees: the count, and the latest failure's one line
    assert stats["searches"]["errors"] == 1 and "arithmetic" in stats["last_error"]


async def test_engine_unavailable_is_not_split():
    calls = []

    async def down(reqs):
        calls.append(len(reqs))
        raise EngineUnavailable("no replica")

    b = Batcher(down, max_batch=8, window_s=0.01)
    outs = await asyncio.gather(*(b.submit([i]) for i in range(8)), return_exceptions=True)
    assert all(isinstance(o, EngineUnavailable) for o in outs) and calls == [8]


async def test_split_finds_each_bad_request():
    async def picky(reqs):
        if any(r % 5 == 0 for r in reqs):
            raise ValueError(f"cannot read {[r for r in reqs if r % 5 == 0]}")
        return [r * 2 for r in reqs]

    b = Batcher(picky, max_batch=16, window_s=0.01)
    outs = await asyncio.gather(*(b.submit([i]) for i in range(16)), return_exceptions=True)
    for i, o in enumerate(outs):
        if i % 5 == 0:
            assert isinstance(o, ValueError) and str(o) == f"cannot read [{i}]"
        else:
            assert o == [2 * i]
    with pytest.raises(ValueError):
        await b.submit([5])


async def test_a_problem_longer_than_the_shipped_models_context_fails_alone():
    """The shipped hf models read 512 positions: a longer problem is refused before any tensor
    is built (a 1 MB problem once asked for a 1.1 TB attention mask), as its own error record,
    and the problems batched with it neither fail nor get padded to its length."""
    import time

    from ponder.actors.factory import build_policy, build_reward

    cfg = PonderConfig.from_dict({"cluster": {"address": "inprocess"}, "scheduler": {"batch_window_ms": 50}})
    r = Runner(build_policy(cfg.policy), build_reward(cfg.reward), cfg)
    good = load_problems("arith:3:seed=1")
    huge = Problem(id="huge", problem="Compute " + " + ".join(["1"] * 250_000) + ".", answer="250000")
    t0 = time.perf_counter()
    results = await asyncio.gather(*(r.solve(p, "greedy", "n=1") for p in [good[0], huge, *good[1:]]))
    wall = time.perf_counter() - t0
    by_id = {res.problem_id: res for res in results}
    assert by_id["huge"].stop_reason == "error"
    assert "reads at most 512" in by_id["huge"].meta["error"] and "\n" not in by_id["huge"].meta["error"]
    assert all(by_id[p.id].stop_reason != "error" and by_id[p.id].answer is not None for p in good)
    assert wall < 60  # measured ~2 s; padding to the huge prompt would not finish at all
