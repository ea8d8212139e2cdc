import pytest

from ponder.actors.engine import StepRequest
from ponder.search.beam_search import BeamConfig, beam_search, lookahead_scores
from ponder.search.types import Node
from tests.search.fakes import FakePolicy, FakePRM, make_ctx, problems


async def test_keeps_n_over_m_beams_and_gives_each_m_children():
    p = problems(1, level=4)[0]  # five steps
    policy = FakePolicy(p_correct=0.7, p_early_answer=0.3)
    res = await beam_search(p, make_ctx(p, policy, FakePRM(noise=0.05)), BeamConfig(n=8, beam_width=2))
    expansions = [s for s in res.trace if "children" in s]
    assert len(expansions) >= 3
    for step in expansions:
        # N/M kept while enough unfinished beams exist, and each kept beam gets exactly M children
        assert step["kept"] == min(4, step["beams"] - (step["completed"] - _completed_before(res.trace, step)))
        assert step["children"] == [2] * step["kept"]
        if step["dropped_max"] is not None:
            assert step["kept_min"] >= step["dropped_max"]
    # the policy saw N first-step samples, then requests of M samples per kept beam
    assert policy.requests[0].n == 8 and all(r.n == 2 for r in policy.requests[1:])


def _completed_before(trace, step):
    i = trace.index(step)
    return trace[i - 1]["completed"] if i else 0


async def test_pruning_prefers_correct_prefixes():
    p = problems(1, level=4, seed=11)[0]
    policy = FakePolicy(p_correct=0.6)
    res = await beam_search(p, make_ctx(p, policy), BeamConfig(n=8, beam_width=2))
    assert res.answer == p.answer
    assert all(c.terminal for c in res.candidates) and len(res.candidates) >= 8


async def test_lookahead_scores_a_beam_by_its_greedy_rollout():
    p = problems(1, level=4, seed=5)[0]
    policy = FakePolicy(p_correct=0.5)
    ctx = make_ctx(p, policy)
    [beams] = await ctx.expand([Node()], 6)
    scores = await lookahead_scores(ctx, beams, 2)
    prm = FakePRM()
    for beam, score in zip(beams, scores):
        steps = beam.steps()
        for _ in range(2):  # the fake's temperature-0 step is a function of the prefix
            steps.append(policy.step(StepRequest(p.problem, steps, temperature=0.0), 0, steps).text)
        assert score == prm.score_one_steps(p.problem, steps)[-1]
    rollouts = [r for r in policy.requests[1:]]
    assert rollouts and all(r.temperature == 0.0 and r.n == 1 for r in rollouts)


async def test_lookahead_costs_more_and_still_finishes():
    p = problems(1, level=3)[0]
    plain_ctx, ahead_ctx = make_ctx(p), make_ctx(p)
    plain = await beam_search(p, plain_ctx, BeamConfig(n=8, beam_width=4))
    ahead = await beam_search(p, ahead_ctx, BeamConfig(n=8, beam_width=4, lookahead=1))
    # the rollouts are extra single-step generations, not beams: the completed pool is the same size
    assert ahead.compute.generations > plain.compute.generations
    assert len(ahead.candidates) == len(plain.candidates) and ahead.answer is not None


async def test_stops_at_max_depth_with_best_partial():
    p = problems(1, level=4)[0]
    res = await beam_search(p, make_ctx(p), BeamConfig(n=4, beam_width=2, max_depth=2))
    assert res.answer is None and res.stop_reason == "no_answer"
    [partial] = res.candidates
    assert not partial.terminal and len(partial.steps) == 2


def test_width_must_divide():
    with pytest.raises(ValueError, match="multiple of beam_width"):
        BeamConfig(n=6, beam_width=4).validate()
