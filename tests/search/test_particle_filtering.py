import pytest

from ponder.search.particle_filtering import ParticleConfig, particle_filtering
from ponder.tasks.arith.problems import prefix_labels
from tests.search.fakes import FakePolicy, FakePRM, SpyContext, make_ctx, problems


async def test_population_and_finished_particles():
    p = problems(1, level=5, seed=1)[0]
    ctx = SpyContext(p, FakePolicy(p_correct=0.6, p_early_answer=0.5), FakePRM(noise=0.05))
    res = await particle_filtering(p, ctx, ParticleConfig(n=12))
    assert ctx.calls[0][1] == 1 and len(ctx.calls[0][0]) == 12  # 12 particles, one step each
    finished_before = 0
    for prev, step in zip(res.trace, res.trace[1:]):
        # only the particles still unfinished after a step are resampled and extended
        assert step["particles"] == prev["particles"] - (prev["finished"] - finished_before)
        finished_before = prev["finished"]
    assert any(t["finished"] for t in res.trace[:-1])  # some particles finished early
    finished_total = res.trace[-1]["finished"]
    assert finished_total == 12  # every particle ends, finished ones are kept
    assert len(res.candidates) == sum(1 for c in res.candidates if c.terminal) == 12


async def test_resampling_follows_the_prm():
    # a sharp temperature: after each resampling only correct prefixes survive (one exists each time)
    p = problems(1, level=4, seed=2)[0]
    ctx = SpyContext(p, FakePolicy(p_correct=0.5), FakePRM())
    res = await particle_filtering(p, ctx, ParticleConfig(n=16, temperature=0.02))
    for nodes, _, _ in ctx.calls[1:]:
        assert all(prefix_labels(p.problem, node.steps())[-1] for node in nodes)
    assert res.answer == p.answer
    assert res.trace[0]["distinct_after_resample"] < 16  # resampling duplicated the good ones


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
