import math

import pytest

from ponder.search import registry
from ponder.search.aggregate import aggregate
from ponder.search.best_of_n import DEFAULT_N, BestOfNConfig, GreedyConfig, best_of_n, greedy
from ponder.tasks.arith.problems import prefix_labels
from tests.search.fakes import FakePolicy, make_ctx, problems


async def test_greedy_is_one_temperature_zero_sample_and_deterministic():
    p = problems(1, level=3)[0]
    policy = FakePolicy(p_correct=0.6)
    first = await greedy(p, make_ctx(p, policy, seed=1), GreedyConfig())
    again = await greedy(p, make_ctx(p, FakePolicy(p_correct=0.6), seed=2), GreedyConfig())
    assert [(r.temperature, r.n, r.to_end) for r in policy.requests] == [(0.0, 1, True)]
    assert first.compute.generations == 1 and len(first.candidates) == 1
    assert first.trajectory == again.trajectory  # temperature 0: the seed does not matter
    assert first.candidates[0].rewards and len(first.trajectory) == 4


async def test_best_of_n_draws_n_scored_samples():
    p = problems(1, level=3)[0]
    ctx = make_ctx(p, FakePolicy(p_correct=0.6))
    res = await best_of_n(p, ctx, BestOfNConfig(n=8, selection="prm_max", aggregation="min"))
    assert res.compute.generations == 8 and len(res.candidates) == 8
    assert all(c.terminal and c.answer is not None and len(c.rewards) == len(c.steps) for c in res.candidates)
    best = max(c.score for c in res.candidates)
    assert res.candidates and max(res.candidates, key=lambda c: c.score).score == best
    chosen = next(c for c in res.candidates if c.steps == res.trajectory)
    assert chosen.score == best == aggregate(chosen.rewards, "min")


async def test_best_of_n_with_informative_prm_finds_the_answer_majority_may_miss():
    # A weak policy: few samples are right, wrong answers scatter; the PRM knows which is right.
    won = 0
    for p in problems(6, level=3, seed=3):
        res = await best_of_n(p, make_ctx(p, FakePolicy(p_correct=0.55)), BestOfNConfig(n=16))
        if res.answer == p.answer:
            won += 1
            assert all(prefix_labels(p.problem, res.trajectory))
    assert won >= 5


async def test_token_budget_without_width_samples_in_rounds_until_spent():
    p = problems(1, level=2)[0]
    ctx = make_ctx(p, limit=400)
    res = await best_of_n(p, ctx, BestOfNConfig(round_size=2))
    rounds = len(res.trace)
    assert rounds > 2 and res.compute.generations == 2 * rounds
    assert ctx.should_stop() and res.stop_reason == "budget" and res.answer is not None
    one_round = res.compute.cost / rounds  # every round costs about the same here
    # It stops at the round it cannot pay for (EngineContext refuses it), so it stays within the
    # budget and leaves less than about one round unspent.
    assert 400 - 1.5 * one_round <= res.compute.cost <= 400
    assert ctx.unaffordable


async def test_width_under_a_token_cap_samples_in_rounds():
    p = problems(1, level=2)[0]
    capped = await best_of_n(p, make_ctx(p, limit=150), BestOfNConfig(n=16, round_size=2))
    free = await best_of_n(p, make_ctx(p), BestOfNConfig(n=16, round_size=2))
    assert len(free.trace) == 1 and free.compute.generations == 16  # no cap: one round of n
    assert capped.stop_reason == "budget" and capped.compute.generations < 16
    assert capped.compute.cost <= 150 + free.compute.cost / 8  # overspend: at most one round of 2


async def test_no_width_and_no_budget_falls_back_to_default_n():
    p = problems(1, level=1)[0]
    res = await best_of_n(p, make_ctx(p), BestOfNConfig())
    assert res.compute.generations == DEFAULT_N and math.isinf(make_ctx(p).budget)


@pytest.mark.parametrize(
    "name, params, msg",
    [("best_of_n", {"n": 0}, "n must be a positive"), ("best_of_n", {"selection": "vote"}, "selection must be one of"),
     ("best_of_n", {"aggregation": "max"}, "aggregation must be one of"), ("greedy", {"n": -1}, "n must be"),
     ("best_of_n", {"width": 3}, "has no parameter 'width'")],
)
def test_bad_config_is_a_clear_error(name, params, msg):
    with pytest.raises(ValueError, match=msg):
        registry.get(name).make_config(params)


async def test_adaptive_best_of_n_stops_when_the_leader_is_settled_and_spends_more_where_votes_split():
    """confidence: rounds of round_size, stopping once the vote's leader is that likely to stay
    ahead; an easy problem (every sample agrees) stops after one round, a hard one goes on, and
    the cap n still holds. Stopping never changes what the drawn samples would have selected."""
    easy, hard = problems(1, level=1, seed=2)[0], problems(1, level=5, seed=2)[0]
    cfg = BestOfNConfig(n=32, round_size=4, confidence=0.9)
    sure = await best_of_n(easy, make_ctx(easy, FakePolicy(p_correct=1.0), seed=1), cfg)
    assert sure.compute.generations == 4 and sure.answer == easy.answer
    assert sure.trace[-1]["lead"] >= 0.9
    split = await best_of_n(hard, make_ctx(hard, FakePolicy(p_correct=0.3), seed=1), cfg)
    assert split.compute.generations > 4 and split.compute.generations <= 32
    assert all(r["samples"] % 4 == 0 for r in split.trace)
    assert split.trace[-1]["lead"] >= 0.9 or split.compute.generations == 32
    assert all(r["lead"] < 0.9 for r in split.trace[:-1])
    # a stricter stop draws the same rounds, then goes on
    full = await best_of_n(hard, make_ctx(hard, FakePolicy(p_correct=0.3), seed=1),
                           BestOfNConfig(n=32, round_size=4, confidence=0.999))
    assert full.compute.generations >= split.compute.generations
    head = [c.steps for c in full.candidates[: len(split.candidates)]]
    assert head == [c.steps for c in split.candidates]
    with pytest.raises(ValueError, match="confidence"):
        BestOfNConfig(n=4, confidence=1.0).validate()
