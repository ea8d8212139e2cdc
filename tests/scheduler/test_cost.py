"""Compute counted as a prefix cache spends it (issue 13): a second expansion of a prefix the
search already computed costs less, by the configured rule, on the real in-process engines."""

import pytest

from ponder.actors.factory import build_policy, build_reward
from ponder.config import EngineConfig
from ponder.scheduler.context import EngineContext
from ponder.search.types import Node
from ponder.tasks.datasets import load_problems

PROBLEM = load_problems("arith:1:seed=3:levels=3")[0]


@pytest.fixture(scope="module", params=["sim", "hf"])
def engines(request):
    if request.param == "sim":
        return build_policy(EngineConfig(kind="sim")), build_reward(EngineConfig(kind="sim"))
    return (build_policy(EngineConfig(kind="hf", path="ponder/models/arith-policy")),
            build_reward(EngineConfig(kind="hf", path="ponder/models/arith-prm")))


def context(engines, discount: float) -> EngineContext:
    policy, reward = engines
    return EngineContext(PROBLEM, policy, reward, cache_discount=discount, seed=1)


async def test_a_computed_prefix_is_charged_at_the_discount(engines):
    ctx = context(engines, 0.0)
    root = Node()
    [first] = await ctx.expand([root], 2)
    after_first = ctx.spent.cost
    prompt = ctx.spent.policy_prompt_tokens
    assert prompt > 0, "the engine reports its prompt tokens"
    # the problem is computed once: the second sample shares its prefill
    assert ctx.spent.policy_cached_tokens == prompt // 2
    assert after_first == ctx.spent.policy_tokens + prompt // 2
    [again] = await ctx.expand([root], 2)  # the same prefix once more: nothing to prefill
    gen = ctx.spent.policy_tokens - sum(c.tokens for c in first)
    assert ctx.spent.cost - after_first == gen == sum(c.tokens for c in again)
    assert ctx.spent.raw_cost > ctx.spent.cost


async def test_scoring_a_child_pays_only_its_new_step(engines):
    ctx = context(engines, 0.0)
    [children] = await ctx.expand([Node()], 1)
    await ctx.score(children)
    parent = children[0]
    if parent.terminal:
        pytest.skip("the first step already finished")
    before = ctx.spent.cost
    [grand] = await ctx.expand([parent], 1)
    policy_cost = ctx.spent.cost - before
    await ctx.score(grand)
    prm_cost = ctx.spent.cost - before - policy_cost
    assert 0 < prm_cost == grand[0].prm_tokens - parent.prm_tokens
    assert ctx.spent.prm_cached_tokens == parent.prm_tokens


async def test_discount_one_charges_everything(engines):
    ctx = context(engines, 1.0)
    [children] = await ctx.expand([Node()], 2)
    await ctx.score(children)
    [grand] = await ctx.expand(children[:1], 1)
    await ctx.score(grand)
    assert ctx.spent.cost == pytest.approx(ctx.spent.raw_cost)
