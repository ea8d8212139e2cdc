import pytest

from ponder.search.dvts import DVTSConfig, dvts
from tests.search.fakes import FakePolicy, FakePRM, SpyContext, make_ctx, problems


def spy(p, **kw):
    return SpyContext(p, FakePolicy(p_correct=0.6), FakePRM(noise=0.05), **kw)


async def test_subtrees_are_independent_greedy_beams():
    p = problems(1, level=4)[0]
    ctx = spy(p)
    res = await dvts(p, ctx, DVTSConfig(n=12, beam_width=3))
    roots = {id(n.root()) for nodes, _, _ in ctx.calls for n in nodes}
    assert len(roots) == 4  # N/M subtrees, each with its own root
    last_of = {}
    for nodes, n, children in ctx.calls:
        assert n == 3
        assert len({id(node.root()) for node in nodes}) == len(nodes)  # one node per subtree per depth
        for node, cs in zip(nodes, children):
            prev = last_of.get(id(node.root()))
            if prev is not None:
                # the node expanded now is the best child of the one expanded before: a greedy chain
                assert node.parent is prev[0]
                assert node.reward == max(c.reward for c in prev[1])
            last_of[id(node.root())] = (node, cs)
            assert all(c.parent is node for c in cs)
    # node sets of different subtrees are disjoint
    seen = {}
    for nodes, _, children in ctx.calls:
        for cs in children:
            for c in cs:
                assert seen.setdefault(id(c), id(c.root())) == id(c.root())
    assert len(res.candidates) == 4 and all(c.terminal and c.answer is not None for c in res.candidates)


async def test_only_finished_subtrees_are_candidates():
    # early wrong answers finish some subtrees sooner; a token cap stops the rest unfinished
    p = problems(1, level=5, seed=2)[0]
    ctx = SpyContext(p, FakePolicy(p_correct=0.5, p_early_answer=0.8), FakePRM(lo=0.3, hi=0.5), limit=700)
    res = await dvts(p, ctx, DVTSConfig(n=16, beam_width=2))
    last = res.trace[-1]
    assert ctx.should_stop() and last["live"] > 0 and last["finished"] > 0  # a mix of both
    assert len(res.candidates) == last["finished"]
    assert all(c.terminal and c.answer is not None for c in res.candidates) and res.answer is not None


async def test_nothing_finished_gives_no_answer_and_the_best_partial():
    p = problems(1, level=5, seed=2)[0]
    res = await dvts(p, make_ctx(p, limit=100), DVTSConfig(n=8, beam_width=2))
    assert res.answer is None and res.stop_reason == "no_answer"
    [partial] = res.candidates
    assert not partial.terminal and partial.steps


async def test_finds_answer_with_informative_prm():
    wins = 0
    for p in problems(5, level=3, seed=4):
        res = await dvts(p, make_ctx(p, FakePolicy(p_correct=0.55)), DVTSConfig(n=8, beam_width=4))
        wins += res.answer == p.answer
    assert wins == 5


def test_width_must_divide():
    with pytest.raises(ValueError, match="multiple of beam_width"):
        DVTSConfig(n=10, beam_width=4).validate()
