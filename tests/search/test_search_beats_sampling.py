"""With an informative PRM, every PRM-guided search beats a single (greedy) sample."""

import pytest

from ponder.search import registry
from tests.search.fakes import FakePolicy, FakePRM, make_ctx, problems

PROBLEMS = problems(30, level=3, seed=21)  # four steps each


async def accuracy(name: str, n: int, noise: float = 0.05) -> float:
    strat = registry.get(name)
    right = 0
    for p in PROBLEMS:
        ctx = make_ctx(p, FakePolicy(p_correct=0.6), FakePRM(noise=noise))
        res = await strat.fn(p, ctx, strat.make_config({}, n=n))
        right += res.answer == p.answer
    return right / len(PROBLEMS)


@pytest.mark.parametrize("name", ["best_of_n", "beam_search", "dvts", "mcts", "rebase", "particle_filtering"])
async def test_prm_guided_search_beats_a_single_sample(name):
    greedy = await accuracy("greedy", 1)
    searched = await accuracy(name, 16)
    assert greedy <= 0.4  # 0.6 ** 4 per problem
    assert searched >= 0.8 and searched >= greedy + 0.4


async def test_an_uninformative_prm_gives_no_such_edge():
    # the same search with a PRM that is pure noise does much worse: the gain comes from the PRM
    guided = await accuracy("beam_search", 16)
    blind = await accuracy("beam_search", 16, noise=10.0)
    assert blind < guided
