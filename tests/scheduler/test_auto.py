"""Difficulty probe, allocation table, probe reuse and strategy `auto` (in-process fakes)."""

import pytest

from ponder.config import Budget, ConfigError
from ponder.scheduler.allocation import AllocationTable
from ponder.scheduler.difficulty import difficulty_bin, probe
from ponder.scheduler.replay import ReplayContext
from ponder.search import registry
from ponder.search.types import Node
from tests.search.fakes import FakePolicy, FakePRM, make_ctx, problems


def test_bins_use_absolute_thresholds():
    assert [difficulty_bin(s) for s in (0.9, 0.5, 0.49, 0.1, 0.09, 0.0)] == [
        "easy", "easy", "medium", "medium", "hard", "hard"]
    assert difficulty_bin(0.3, {"easy": 0.25}) == "easy"


async def test_probe_predicts_pass_rate():
    p = problems(1, level=2)[0]
    easy = await probe(make_ctx(p, FakePolicy(p_correct=1.0)), k=4)
    hard = await probe(make_ctx(p, FakePolicy(p_correct=0.2)), k=4)
    assert easy.bin == "easy" and easy.score == pytest.approx(0.9)
    assert easy.consensus == 1.0
    assert hard.score < easy.score
    assert len(easy.samples) == 4 and all(s.rewards for s in easy.samples)


async def test_replay_hands_back_probe_samples_before_sampling():
    p = problems(1)[0]
    policy = FakePolicy(p_correct=0.5)
    ctx = make_ctx(p, policy)
    pr = await probe(ctx, k=3)
    calls, spent = len(policy.requests), ctx.spent.cost
    replay = ReplayContext(ctx, pr.samples, ctx.temperature)
    root = Node()
    [first] = await replay.expand([root], 2, to_end=True)
    assert first == pr.samples[:2] and len(policy.requests) == calls and ctx.spent.cost == spent
    assert all(n.root() is root for n in first)  # re-hung under the search's root
    [mixed] = await replay.expand([root], 3, to_end=True)
    assert mixed[0] is pr.samples[2] and len(mixed) == 3
    assert len(policy.requests) == calls + 1  # only the 2 missing samples were drawn
    # Greedy (another temperature) never gets sampled solutions.
    fresh = ReplayContext(ctx, pr.samples, ctx.temperature)
    [g] = await fresh.expand([Node()], 1, temperature=0.0, to_end=True)
    assert g[0] not in pr.samples


async def test_replay_hands_step_searches_the_probe_chains_step_by_step():
    p = problems(1, level=3)[0]
    policy, prm = FakePolicy(p_correct=0.5), FakePRM()
    ctx = make_ctx(p, policy, prm)
    pr = await probe(ctx, k=2)
    chains = [leaf.path() for leaf in pr.samples]
    assert all(len(c) >= 2 for c in chains)
    # the probe's chains were scored whole, and so their steps (a causal PRM reads prefixes alike)
    assert all(c[0].rewards == c[-1].rewards[:1] for c in chains)
    calls, scored, spent = len(policy.requests), prm.calls, ctx.spent.cost
    replay = ReplayContext(ctx, pr.samples, ctx.temperature)
    root = Node()
    [first] = await replay.expand([root], 3)  # a step search's first expansion: two are the chains' first steps
    assert first[:2] == [c[0] for c in chains] and all(n.parent is root for n in first)
    assert len(policy.requests) == calls + 1 and policy.requests[-1].n == 1 and not policy.requests[-1].to_end
    assert [n.index for n in first] == [0, 1, 2] and root.drawn == 3  # fresh samples come after the replayed
    await replay.score(first)
    assert prm.calls == scored + 1  # only the fresh step is scored
    # a handed-out step's first child is its chain's next step; the others are sampled after it
    [[nxt, other]] = await replay.expand([first[0]], 2)
    assert nxt is chains[0][1] and other not in chains[0] and (nxt.index, other.index) == (0, 1)
    # greedy never gets sampled steps; to_end from a handed-out step gets the rest of its chain
    [[g]] = await replay.expand([first[1]], 1, temperature=0.0)
    assert g is not chains[1][1]
    [[rest]] = await replay.expand([first[1]], 1, to_end=True)
    assert rest is pr.samples[1]
    # what the search never reached joins auto's final vote: chain 0 unless its next step ended it
    assert replay.unused() == ([] if nxt.terminal else [pr.samples[0]])
    assert replay.replayed == 2 and ctx.spent.cost > spent
    # DVTS-like: several roots share the chains, one each
    fresh = ReplayContext(ctx, pr.samples, ctx.temperature)
    roots = [Node(), Node()]
    out = await fresh.expand(roots, 2)
    assert [o[0] for o in out] == [c[0] for c in chains] and all(len(o) == 2 for o in out)


def test_table_load_and_choose(tmp_path):
    t = AllocationTable.load()
    assert set(t.bins) == {"easy", "medium", "hard"}
    for b in t.bins.values():
        registry.get(b.default.strategy)  # every default strategy exists
    f = tmp_path / "t.yaml"
    f.write_text(
        "bins:\n"
        "  easy: {share: 0.5, strategy: best_of_n}\n"
        "  medium: {strategy: best_of_n}\n"
        "  hard:\n"
        "    strategy: beam_search\n"
        "    by_budget:\n"
        "      - {budget: n=4, strategy: best_of_n}\n"
        "      - {budget: n=64, strategy: dvts, params: {beam_width: 4}}\n"
        "      - {budget: '2000', strategy: rebase}\n"
    )
    t = AllocationTable.load(f)
    assert t.choose("hard", Budget(n=8))[0].strategy == "best_of_n"
    assert t.choose("hard", Budget(n=32))[0].strategy == "dvts"
    assert t.choose("hard", Budget(tokens=5000))[0].strategy == "rebase"
    assert t.choose("hard", None)[0].strategy == "beam_search"
    assert t.choose("easy")[1] == 0.5
    t.save(tmp_path / "again.yaml")
    assert AllocationTable.load(tmp_path / "again.yaml").to_dict() == t.to_dict()


@pytest.mark.parametrize(
    "text, msg",
    [("bins: {}", "bin 'easy' is missing"),
     ("bins: {easy: {strategy: a}, medium: {strategy: b}, hard: {share: 1}}", "'hard' needs a 'strategy'"),
     ("bins: {easy: {strategy: a, share: -1}, medium: {strategy: b}, hard: {strategy: c}}", "share must be positive"),
     ("[1, 2", "not valid YAML")],
)
def test_table_bad_input(tmp_path, text, msg):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=msg):
        AllocationTable.load(f)
    with pytest.raises(ConfigError, match="not found"):
        AllocationTable.load(tmp_path / "missing.yaml")


async def test_auto_picks_by_bin_and_reuses_the_probe():
    strat = registry.get("auto")
    p = problems(1, level=2)[0]
    # Easy: the probe's 4 samples agree, so self-consistency stops on its first window
    # without sampling anything more.
    policy = FakePolicy(p_correct=1.0)
    ctx = make_ctx(p, policy)
    res = await strat.fn(p, ctx, strat.make_config({"probe_samples": 4}, n=16))
    assert res.meta["difficulty"] == "easy" and res.meta["auto_strategy"] == "self_consistency"
    assert res.meta["probe_reused"] == 4 and len(policy.requests) == 1
    assert res.stop_reason == "early_stop" and res.answer == p.answer and res.strategy == "auto"
    # Hard: a weak policy and a PRM that sees it; beam search runs after the probe.
    ctx = make_ctx(p, FakePolicy(p_correct=0.1), FakePRM(lo=0.02))
    res = await strat.fn(p, ctx, strat.make_config({}, n=8))
    assert res.meta["difficulty"] == "hard" and res.meta["auto_strategy"] == "beam_search"
    assert res.compute.generations > 4


def test_auto_rejects_bad_params():
    with pytest.raises(ValueError, match="probe_samples"):
        registry.get("auto").make_config({"probe_samples": 0})
    with pytest.raises(ValueError, match="no parameter"):
        registry.get("auto").make_config({"bogus": 1})


async def test_auto_grant_goes_through_the_door_and_follows_the_plan(tmp_path):
    """An optimised table: auto asks ctx.regrant for headroom x the chosen point's cost over its
    budget, and runs the point's strategy at the point's width."""
    t = AllocationTable.load().to_dict()
    t.update({"mix": {"easy": 0.5, "hard": 0.5}, "headroom": 2.0, "thresholds": {"easy": 0.5, "medium": 0.1},
              "difficulty_map": {"bias": -4.0, "weights": {"score": 0.0, "consensus": 8.0},
                                 "knots": [[0.02, 0.0], [0.98, 1.0]]},
              "curves": {"easy": [{"strategy": "best_of_n", "n": 4, "accuracy": 0.9, "cost": 400}],
                         "hard": [{"strategy": "best_of_n", "n": 4, "accuracy": 0.1, "cost": 400},
                                  {"strategy": "beam_search", "n": 8, "accuracy": 0.5, "cost": 1600}]}})
    path = tmp_path / "t.yaml"
    AllocationTable.from_dict(t).save(path)
    strat = registry.get("auto")
    p = problems(1, level=2)[0]
    asked = []

    async def door(w, cap=None, value=None):  # the door: record, grant the cap
        asked.append((w, cap))
        return 1000 * cap

    ctx = make_ctx(p, FakePolicy(p_correct=0.1), FakePRM(lo=0.02), limit=1000)
    ctx.regrant = door
    res = await strat.fn(p, ctx, strat.make_config({"table": str(path)}))
    assert res.meta["difficulty"] in ("hard", "medium", "easy") and asked
    if res.meta["difficulty"] == "hard":
        assert res.meta["auto_strategy"] in ("best_of_n", "beam_search")
    ctx = make_ctx(p, FakePolicy(p_correct=1.0), limit=1000)
    asked.clear()
    ctx.regrant = door
    res = await strat.fn(p, ctx, strat.make_config({"table": str(path)}))
    assert res.meta["difficulty"] == "easy" and res.meta["auto_strategy"] == "best_of_n" and res.meta["auto_n"] == 4
    # expected spend: the point's cost; limit: headroom x it (the table has no peak)
    assert asked == [(pytest.approx(400 / 1000), pytest.approx(2.0 * 400 / 1000))]
    assert res.meta["grant"] == pytest.approx(800)
    assert res.meta["estimate"] == pytest.approx(1.0) and res.meta["probe_consensus"] == 1.0


def test_auto_forced_strategy_for_calibration():
    with pytest.raises(ValueError, match="itself"):
        registry.get("auto").make_config({"strategy": "auto"})
    cfg = registry.get("auto").make_config({"strategy": "beam_search", "strategy_params": {"beam_width": 2}}, n=8)
    assert cfg.strategy == "beam_search" and cfg.n == 8


async def test_the_value_told_through_the_door_orders_job_work_waiting_for_the_engine():
    """`ctx.regrant(..., value=v)` ranks the search's requests among job work: with the engine's
    only slot taken, the waiting searches go out highest value first (no value counts as 0),
    and interactive work still goes ahead of all of them."""
    import asyncio

    from ponder.scheduler.batcher import BatchedPolicy
    from ponder.scheduler.context import EngineContext

    gate, calls = asyncio.Event(), []

    class Gated(FakePolicy):
        async def generate(self, requests):
            calls.append([r.problem for r in requests])
            if len(calls) == 1:
                await gate.wait()
            return await super().generate(requests)

    policy = BatchedPolicy(Gated(), max_batch=1, window_s=0, max_inflight=1)
    ps = problems(5)
    ctx = {name: EngineContext(p, policy, FakePRM()) for name, p in zip(("busy", "low", "plain", "high", "live"), ps)}
    ctx["live"].priority = (0, 0)  # an interactive search
    assert await ctx["low"].regrant(1.0, value=0.0005) is None  # no job ledger: no grant, but the order holds
    assert await ctx["high"].regrant(1.0, 2.0, value=0.002) is None
    busy = asyncio.ensure_future(ctx["busy"].expand([Node()], 1))
    for _ in range(5):
        await asyncio.sleep(0)
    rest = [asyncio.ensure_future(ctx[k].expand([Node()], 1)) for k in ("low", "plain", "high", "live")]
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    await asyncio.wait_for(asyncio.gather(busy, *rest), 5)
    order = {p.problem: k for k, p in zip(ctx, ps)}
    assert [order[c[0]] for c in calls] == ["busy", "live", "high", "low", "plain"]
