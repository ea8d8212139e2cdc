import pytest

from ponder.search.particle_filtering import ParticleConfig, logit, particle_filtering
from ponder.tasks.arith.problems import prefix_labels
from tests.search.fakes import FakePolicy, FakePRM, SpyContext, make_ctx, problems


async def test_population_keeps_its_size_and_finished_particles_are_not_extended():
    p = problems(1, level=5, seed=1)[0]
    ctx = SpyContext(p, FakePolicy(p_correct=0.6, p_early_answer=0.5), FakePRM(noise=0.05))
    res = await particle_filtering(p, ctx, ParticleConfig(n=12))
    assert ctx.calls[0][1] == 1 and len(ctx.calls[0][0]) == 12  # 12 particles, one step each
    assert any(0 < t["finished"] < 12 for t in res.trace)  # some finished while others went on
    # after the first resampling, only the unfinished particles of the population are extended
    for (nodes, _, _), before in zip(ctx.calls[1:], res.trace):
        assert all(not n.terminal for n in nodes)
        assert len(nodes) == 12 - before["finished"]
    assert res.trace[-1]["finished"] == 12  # the filter ends when every particle has finished
    assert all(c.terminal for c in res.candidates)


async def test_resampling_follows_the_prm():
    # a sharp temperature: after each resampling only correct prefixes survive (one exists each time)
    p = problems(1, level=4, seed=2)[0]
    ctx = SpyContext(p, FakePolicy(p_correct=0.5), FakePRM())
    res = await particle_filtering(p, ctx, ParticleConfig(n=16, temperature=0.02))
    for nodes, _, _ in ctx.calls[1:]:
        assert all(prefix_labels(p.problem, node.steps())[-1] for node in nodes)
    assert res.answer == p.answer
    assert res.trace[0]["distinct_after_resample"] < 16  # resampling duplicated the good ones


def test_weights_are_the_prm_odds_at_temperature_one():
    from ponder.search.aggregate import softmax

    w = softmax([logit(0.8), logit(0.5)], 1.0)
    assert w[0] / w[1] == pytest.approx((0.8 / 0.2) / (0.5 / 0.5))


async def test_resampling_draws_from_the_context_rng():
    p = problems(1, level=4, seed=2)[0]
    cfg = ParticleConfig(n=8, temperature=1.0)
    a = await particle_filtering(p, make_ctx(p, seed=1), cfg)
    b = await particle_filtering(p, make_ctx(p, seed=1), cfg)
    c = await particle_filtering(p, make_ctx(p, seed=2), cfg)
    assert a.trace == b.trace and [x.steps for x in a.candidates] == [x.steps for x in b.candidates]
    assert [x.steps for x in a.candidates] != [x.steps for x in c.candidates]


def test_bad_weight_is_a_clear_error():
    with pytest.raises(ValueError, match="aggregation must be one of"):
        ParticleConfig(weight="median").validate()
