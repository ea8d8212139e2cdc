import pytest

from ponder.search.self_consistency import SelfConsistencyConfig, self_consistency, window_agrees
from ponder.search.types import Node
from tests.search.fakes import FakePolicy, FakePRM, make_ctx, problems


def leaf(answer):
    return Node(text="x", terminal=True, answer=answer)


def test_window_agreement():
    assert window_agrees([leaf("4"), leaf("4.0"), leaf("$4$")])
    assert not window_agrees([leaf("4"), leaf("5")])
    assert not window_agrees([leaf(None), leaf(None)])
    assert not window_agrees([])


async def test_stops_early_on_agreement_and_spends_less():
    p = problems(1, level=2)[0]
    sure = await self_consistency(p, make_ctx(p, FakePolicy(p_correct=1.0)), SelfConsistencyConfig(n=16, window=4))
    unsure = await self_consistency(p, make_ctx(p, FakePolicy(p_correct=0.6)), SelfConsistencyConfig(n=16, window=4))
    assert sure.stop_reason == "early_stop" and sure.compute.generations == 4 and sure.answer == p.answer
    assert unsure.compute.generations > sure.compute.generations
    assert unsure.stop_reason in ("done", "early_stop")


async def test_threshold_stops_on_a_clear_majority():
    p = problems(1, level=2)[0]
    cfg = SelfConsistencyConfig(n=32, window=4, stop_threshold=0.5)
    res = await self_consistency(p, make_ctx(p, FakePolicy(p_correct=0.85)), cfg)
    full = await self_consistency(p, make_ctx(p, FakePolicy(p_correct=0.85)), SelfConsistencyConfig(n=32, window=32))
    assert res.stop_reason == "early_stop" and res.trace[-1]["top_share"] >= 0.5
    assert res.compute.generations < full.compute.generations == 32
    assert res.answer == full.answer == p.answer


async def test_majority_never_calls_the_prm_other_selections_do():
    p = problems(1, level=2)[0]
    prm = FakePRM()
    await self_consistency(p, make_ctx(p, FakePolicy(p_correct=0.5), prm), SelfConsistencyConfig(n=8))
    assert prm.calls == 0
    cfg = SelfConsistencyConfig(n=8, selection="prm_vote")
    res = await self_consistency(p, make_ctx(p, FakePolicy(p_correct=0.5), prm), cfg)
    assert prm.calls == res.compute.generations and res.compute.prm_tokens > 0


def test_bad_threshold_is_a_clear_error():
    with pytest.raises(ValueError, match=r"stop_threshold must be in \(0, 1\]"):
        SelfConsistencyConfig(stop_threshold=1.5).validate()
