"""Interactive searches: batcher priority over job work, cancelled requests never sent, and
`Runner.stream` (events, early close, admission, deadlines) on in-process sim engines."""

import asyncio
import dataclasses
import itertools
import time

import pytest

from ponder.actors.factory import build_policy, build_reward
from ponder.config import PonderConfig
from ponder.scheduler.admission import AdmissionLimits
from ponder.scheduler.batcher import JOB_WORK, Batcher, SearchCancelled
from ponder.scheduler.runner import Runner
from ponder.tasks.datasets import load_problems

# A level-5 problem: mcts n=256 on it makes ~170 policy requests in ~40 rounds, so with 50 ms
# per engine call it runs for seconds (what the early-close and deadline tests cut short).
HARD = load_problems("arith:1:seed=1:levels=5")[0]
EASY = load_problems("arith:1:seed=1:levels=3")[0]
SLOW = {"call_overhead_s": 0.05}
FULL_MCTS_REQUESTS = 100  # far below what the whole mcts n=256 search on HARD sends


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def sim_runner(latency: dict | None = None, **api) -> Runner:
    lat = dict(latency or {})
    cfg = PonderConfig.from_dict({
        "policy": {"kind": "sim", "options": lat},
        "reward": {"kind": "sim", "options": {k: v for k, v in lat.items() if k != "per_step_s"}},
        "cluster": {"address": "inprocess"},
        "api": api,
    })
    return Runner(build_policy(cfg.policy), build_reward(cfg.reward), cfg)


class GatedEngine:
    """Records each call's requests in order; the first call waits until `open` is set."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.open = asyncio.Event()

    async def __call__(self, requests: list[str]) -> list[str]:
        self.calls.append(list(requests))
        if len(self.calls) == 1:
            await self.open.wait()
        return [r.upper() for r in requests]


# ----- the batcher


async def test_interactive_requests_go_ahead_of_job_work_waiting_for_the_engine():
    eng = GatedEngine()
    b = Batcher(eng, max_batch=2, window_s=0, max_inflight=1)
    first = asyncio.ensure_future(b.submit(["j0"]))
    await settle()
    assert eng.calls == [["j0"]]  # in flight, holding the only slot
    jobs = asyncio.ensure_future(b.submit(["j1", "j2"], JOB_WORK))
    late = asyncio.ensure_future(b.submit(["i5"], (0, 5)))
    urgent_a = asyncio.ensure_future(b.submit(["i1a"], (0, 1)))
    urgent_b = asyncio.ensure_future(b.submit(["i1b"], (0, 1)))
    await settle()
    assert len(eng.calls) == 1 and b.queued == 5  # nothing else went out while the slot was taken
    eng.open.set()
    assert await asyncio.wait_for(asyncio.gather(first, jobs, late, urgent_a, urgent_b), 2) == [
        ["J0"], ["J1", "J2"], ["I5"], ["I1A"], ["I1B"]]
    # the interactive ones first (lower priority value first, ties by arrival), then job work
    assert eng.calls == [["j0"], ["i1a", "i1b"], ["i5", "j1"], ["j2"]]
    assert b.stats.calls == 4 and b.stats.requests == 6


async def test_max_inflight_callable_is_followed():
    gate = asyncio.Event()
    started: list[int] = []

    async def engine(reqs):
        started.append(reqs[0])
        await gate.wait()
        return reqs

    cap = [2]
    b = Batcher(engine, max_batch=1, window_s=0, max_inflight=lambda: cap[0])
    subs = [asyncio.ensure_future(b.submit([i])) for i in range(4)]
    await settle()
    assert started == [0, 1] and b.queued == 2
    cap[0] = 3  # the pool grew: the next flush may send one more
    subs.append(asyncio.ensure_future(b.submit([4])))
    await settle()
    assert started == [0, 1, 2] and b.queued == 2
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*subs), 2) == [[0], [1], [2], [3], [4]]


async def test_a_cancelled_searchs_waiting_requests_are_never_sent():
    eng = GatedEngine()
    b = Batcher(eng, max_batch=8, window_s=0, max_inflight=1)
    first = asyncio.ensure_future(b.submit(["j0"]))
    await settle()
    alive = {"dead": True}
    dead = asyncio.ensure_future(b.submit(["c1", "c2"], (0, 0), alive=lambda: alive["dead"]))
    live = asyncio.ensure_future(b.submit(["j1"], JOB_WORK, alive=lambda: True))
    await settle()
    assert b.queued == 3
    alive["dead"] = False  # its search is cancelled while its requests wait
    eng.open.set()
    with pytest.raises(SearchCancelled):
        await asyncio.wait_for(dead, 2)
    assert await asyncio.wait_for(live, 2) == ["J1"]
    assert await first == ["J0"]
    assert eng.calls == [["j0"], ["j1"]]  # c1 and c2 never reached the engine
    assert b.stats.requests == 2 and b.queued == 0


# ----- Runner.stream


@pytest.mark.parametrize("strategy,budget", [("beam_search", "n=8"), ("best_of_n", "n=8")])
async def test_stream_events_are_ordered_and_the_result_is_solves(strategy, budget):
    events = [e async for e in sim_runner().stream(EASY, strategy, budget, search_id="s1", tenant="t")]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "result" and kinds.count("result") == 1
    progress = events[1:-1]
    assert progress and all(k == "progress" for k in kinds[1:-1])
    assert [e["seq"] for e in progress] == list(range(1, len(progress) + 1))  # in order, none lost
    costs = [e["tokens"]["cost"] for e in progress]
    assert all(a <= b for a, b in itertools.pairwise(costs)) and costs[-1] > 0
    res = events[-1]["result"]
    ref = await sim_runner().solve(EASY, strategy, budget)
    assert res["answer"] == ref.answer and res["answer"] is not None
    assert res["compute"] == dataclasses.asdict(ref.compute)
    assert res["stop_reason"] == ref.stop_reason and res["correct"] == ref.correct
    assert progress[-1]["tokens"]["cost"] == res["compute"]["cost"]  # the last event saw all spending
    assert res["meta"]["search_id"] == "s1" and res["meta"]["tenant"] == "t"


async def test_closing_the_stream_cancels_the_search():
    r = sim_runner(SLOW)
    agen = r.stream(HARD, "mcts", "n=256")
    assert (await agen.__anext__())["event"] == "started"
    ev = await asyncio.wait_for(agen.__anext__(), 2)
    assert ev["event"] == "progress"
    await agen.aclose()
    assert r.searches["cancelled"] == 1 and r.searches["finished"] == 1
    assert r._live == {} and r.admission.stats()["running"] == 0
    sent = (r.policy.batcher.stats.requests, r.reward.batcher.stats.requests)
    await asyncio.sleep(0.3)  # several engine calls' worth
    assert (r.policy.batcher.stats.requests, r.reward.batcher.stats.requests) == sent
    assert sent[0] < FULL_MCTS_REQUESTS and r.policy.batcher.queued == 0


async def test_closing_the_stream_right_after_started_stops_the_search():
    """Closed before the search task has run at all: it must not run to the end regardless."""
    r = sim_runner(SLOW)
    agen = r.stream(HARD, "mcts", "n=256")
    assert (await agen.__anext__())["event"] == "started"
    await agen.aclose()  # directly: wait_for would run it in a new task, letting the search start first
    assert r._live == {} and r.admission.stats()["running"] == 0
    sent = r.policy.batcher.stats.requests
    await asyncio.sleep(0.3)
    assert r.policy.batcher.stats.requests == sent < FULL_MCTS_REQUESTS


async def test_stream_beyond_the_waiting_room_yields_only_rejected():
    r = sim_runner(SLOW)
    r.set_admission(AdmissionLimits(max_running=1, max_queued=0, tenant_max_running=1, tenant_max_queued=0))
    first = r.stream(HARD, "mcts", "n=256", tenant="a")
    assert (await first.__anext__())["event"] == "started"
    second = [e async for e in r.stream(EASY, "beam_search", "n=4", tenant="b")]
    assert [e["event"] for e in second] == ["rejected"]
    assert second[0]["retry_after_s"] >= 1 and second[0]["reason"]
    await first.aclose()
    st = r.admission.stats()
    assert st["running"] == 0 and st["rejected"] == 1 and st["admitted"] == 1


async def test_stream_waits_in_line_then_runs():
    r = sim_runner(SLOW)
    r.set_admission(AdmissionLimits(max_running=1, max_queued=1))
    first = r.stream(HARD, "mcts", "n=256", tenant="a")
    assert (await first.__anext__())["event"] == "started"
    second = r.stream(EASY, "best_of_n", "n=2", tenant="b")
    ev = await second.__anext__()
    assert ev["event"] == "queued" and r.admission.total_queued == 1  # in line as the event is seen
    nxt = asyncio.ensure_future(second.__anext__())
    await asyncio.sleep(0.1)
    assert not nxt.done()
    await first.aclose()  # its slot goes to the one waiting
    ev = await asyncio.wait_for(nxt, 2)
    assert ev["event"] == "started" and ev["queued_s"] >= 0.1
    rest = [e async for e in second]
    assert rest[-1]["event"] == "result" and rest[-1]["result"]["stop_reason"] != "cancelled"
    assert r.admission.stats()["running"] == 0 and r.admission.admitted == 2


async def test_closing_a_queued_stream_gives_up_its_place():
    r = sim_runner(SLOW)
    r.set_admission(AdmissionLimits(max_running=1, max_queued=1))
    first = r.stream(HARD, "mcts", "n=256")
    assert (await first.__anext__())["event"] == "started"
    second = r.stream(EASY, "best_of_n", "n=2")
    assert (await second.__anext__())["event"] == "queued"
    await second.aclose()
    assert r.admission.total_queued == 0
    third = r.stream(EASY, "best_of_n", "n=2")
    assert (await third.__anext__())["event"] == "queued"  # the place was free again
    await third.aclose()
    await first.aclose()
    assert r.admission.stats()["running"] == 0 and r.admission.rejected == 0


async def test_a_deadline_stops_a_slow_search_with_its_best():
    r = sim_runner(SLOW, deadline_grace_s=0.5)
    t0 = time.perf_counter()
    res = await asyncio.wait_for(r.solve(HARD, "mcts", "n=256", priority=0, deadline_s=0.3), 4)
    wall = time.perf_counter() - t0
    assert res.stop_reason == "deadline"
    assert 0.3 <= wall < 0.3 + r.config.api.deadline_grace_s + 1.0  # the whole search takes seconds
    assert r.policy.batcher.stats.requests < FULL_MCTS_REQUESTS
    assert r.searches["cancelled"] == 0 and r._live == {}


async def test_a_deadline_through_stream():
    r = sim_runner(SLOW, deadline_grace_s=0.5)
    t0 = time.perf_counter()
    events = [e async for e in r.stream(HARD, "mcts", "n=256", deadline_s=0.3)]
    wall = time.perf_counter() - t0
    assert events[-1]["event"] == "result" and events[-1]["result"]["stop_reason"] == "deadline"
    assert wall < 0.3 + r.config.api.deadline_grace_s + 1.0
    assert r.admission.stats()["running"] == 0


async def test_a_search_stuck_past_its_grace_is_cut_off_with_the_best_seen():
    """Every engine call takes 3 s: the search cannot come back to see its deadline, so at
    deadline + grace it is cancelled and the result is built from its progress."""
    r = sim_runner({"call_overhead_s": 3.0}, deadline_grace_s=0.2)
    t0 = time.perf_counter()
    res = await asyncio.wait_for(r.solve(EASY, "beam_search", "n=4", deadline_s=0.1), 2.5)
    wall = time.perf_counter() - t0
    assert res.stop_reason == "deadline" and res.answer is None  # nothing had finished
    assert 0.3 <= wall < 2.5
    assert r.searches["cancelled"] == 0 and r._live == {}
