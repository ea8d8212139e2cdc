"""Every strategy under a token cap: it ends cleanly with a result, never raises, and never
generates after its budget is spent."""

import pytest

from ponder.search import registry
from tests.search.fakes import FakePolicy, FakePRM, SpyContext, problems

STRATEGIES = ["greedy", "best_of_n", "beam_search", "dvts", "mcts", "rebase", "particle_filtering", "self_consistency"]


def test_all_strategies_are_registered_with_valid_defaults():
    assert set(STRATEGIES) <= set(registry.names())
    for name in STRATEGIES:
        cfg = registry.get(name).make_config({}, n=8)
        assert cfg.n == 8


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("limit", [0, 25, 120, 600])
async def test_budget_exhaustion_ends_cleanly(name, limit):
    p = problems(1, level=4, seed=5)[0]
    ctx = SpyContext(p, FakePolicy(p_correct=0.6, p_early_answer=0.3), FakePRM(noise=0.05), limit=limit)
    strat = registry.get(name)
    res = await strat.fn(p, ctx, strat.make_config({}, n=8))
    # every expand call that produced steps started while budget was left
    for (nodes, n, children), cost in zip(ctx.calls, ctx.cost_at_call):
        if any(children):
            assert cost < limit
    if limit == 0:
        assert res.compute.generations == 0 and res.answer is None and res.candidates == []
    if res.answer is None:
        assert res.stop_reason == "no_answer" and len(res.candidates) <= 1
        assert all(not c.terminal for c in res.candidates)
    else:
        assert res.stop_reason in ("budget", "done", "early_stop")
        assert all(c.terminal and c.answer is not None for c in res.candidates)
        assert res.trajectory in [c.steps for c in res.candidates]
    assert res.compute.cost == ctx.spent.cost and res.problem_id == p.id and res.strategy == name


def test_every_strategy_is_registered_whatever_was_imported_first():
    import subprocess
    import sys

    code = "from ponder.search import registry; print(registry.get('auto').name, registry.get('probe').name)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["auto", "probe"], done.stderr
