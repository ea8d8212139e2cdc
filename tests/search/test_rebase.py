import random

import pytest

from ponder.search.rebase import RebaseConfig, balanced_widths, rebase
from tests.search.fakes import FakePolicy, FakePRM, SpyContext, problems


def test_balanced_widths_sum_exactly_and_follow_rewards():
    rng = random.Random(0)
    for _ in range(200):
        scores = [rng.random() for _ in range(rng.randint(1, 9))]
        width = rng.randint(0, 40)
        widths = balanced_widths(scores, width, rng.choice([0.05, 0.1, 1.0]))
        assert sum(widths) == width and all(w >= 0 for w in widths)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        # a better node never gets fewer children than a worse one (up to the one rounding unit)
        assert all(widths[a] + 1 >= widths[b] for a, b in zip(order, order[1:]))


def test_temperature_sets_greediness():
    scores = [0.9, 0.5, 0.1]
    assert balanced_widths(scores, 10, 0.001) == [10, 0, 0]
    assert balanced_widths(scores, 9, 1000.0) == [3, 3, 3]
    assert balanced_widths(scores, 10, 0.2) == [9, 1, 0]  # shares 8.67, 1.17, 0.16
    assert balanced_widths([], 5, 0.1) == []


async def test_widths_sum_to_remaining_width_at_every_depth():
    # early wrong answers finish some nodes before the end, so the remaining width shrinks
    p = problems(1, level=5, seed=1)[0]
    ctx = SpyContext(p, FakePolicy(p_correct=0.6, p_early_answer=0.5), FakePRM(noise=0.05))
    res = await rebase(p, ctx, RebaseConfig(n=12, temperature=0.2))
    expanding = [t for t in res.trace if "widths" in t]
    assert len(expanding) >= 3
    assert any(t["finished"] > 0 for t in expanding)  # the remaining width did shrink
    for t in expanding:
        assert t["remaining"] == 12 - t["finished"] and sum(t["widths"]) == t["remaining"]
    # what the policy was asked for matches: per depth, the requested samples sum to the width
    for depth, t in enumerate(expanding, start=1):
        asked = sum(n * len(nodes) for nodes, n, _ in ctx.calls if nodes[0].depth == depth)
        assert asked == t["remaining"]
    assert res.candidates and all(c.terminal for c in res.candidates)


async def test_finds_the_answer_with_informative_prm():
    wins = 0
    for p in problems(5, level=3, seed=4):
        ctx = SpyContext(p, FakePolicy(p_correct=0.55), FakePRM())
        wins += (await rebase(p, ctx, RebaseConfig(n=8))).answer == p.answer
    assert wins == 5


def test_bad_temperature_is_a_clear_error():
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        RebaseConfig(temperature=0).validate()
