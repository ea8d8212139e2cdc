"""Grading's time limit holds against answers whose sympy computation holds the GIL (a thread
cannot be stopped then, nor a signal delivered), and grading never blocks an event loop.

The runaway cases run in a child process that the test kills at a deadline of its own: on
code without a hard limit they would hang the test process itself.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import pytest

from ponder.tasks import grading

LIMIT_S = 0.5
START_S = 5.0  # slack for starting a fresh worker (python + sympy + math-verify) on a busy box
BIG = "1" * 5000
RUNAWAYS = ["3^{3^{3^{3}}}", "9999999!", "2^{3^{4^{5}}}"]


def run_child(script: str, deadline_s: float, stdin: str = "") -> object:
    """What `script` prints last (JSON), run in a fresh interpreter killed after `deadline_s`."""
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], input=stdin, capture_output=True,
                              text=True, timeout=deadline_s)
    except subprocess.TimeoutExpired:
        done = None
    if done is None:
        pytest.fail(f"still grading after {deadline_s:.0f} s", pytrace=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_gil_holding_answers_are_cut_off_at_the_limit() -> None:
    cases = [(r, "2", False) for r in RUNAWAYS]
    cases += [(BIG, "2", False), (BIG, BIG, True), (BIG, BIG[:-1] + "2", False), ("x^2+2x+1", "(x+1)^2", True)]
    script = f"""
        import json, sys, time
        from ponder.tasks.grading import grade
        out = []
        for pred, ref, _ in json.load(sys.stdin):
            t0 = time.perf_counter()
            out.append([grade(pred, ref, timeout_s={LIMIT_S}), time.perf_counter() - t0])
        print(json.dumps(out))
    """
    got = run_child(script, deadline_s=len(cases) * (LIMIT_S + START_S), stdin=json.dumps(cases))
    for (pred, _, want), (ok, took) in zip(cases, got):  # type: ignore[arg-type]
        assert ok is want, pred[:20]
        assert took < LIMIT_S + START_S, f"{pred[:20]} took {took:.1f} s"


def test_a_runaway_answer_does_not_stall_the_runner() -> None:
    """A job whose one reference sends math-verify into a runaway computation: every problem
    gets its result, and the event loop never stops for long."""
    script = f"""
        import asyncio, dataclasses, functools, json, time
        from ponder.config import PonderConfig
        from ponder.scheduler import runner as runner_mod
        from ponder.tasks import grading
        from tests.search.fakes import FakePolicy, FakePRM, problems

        runner_mod.verdict = functools.partial(grading.verdict, timeout_s={LIMIT_S})

        async def main():
            ps = problems(12, level=1)
            ps[3] = dataclasses.replace(ps[3], answer="3^{{3^{{3^{{3}}}}}}")
            cfg = PonderConfig.from_dict({{"scheduler": {{"max_concurrent_searches": 4}}}})
            r = runner_mod.Runner(FakePolicy(p_correct=1.0), FakePRM(), cfg)
            gaps, last = [0.0], time.perf_counter()

            async def tick():
                nonlocal last
                while True:
                    await asyncio.sleep(0.02)
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last = now

            ticker = asyncio.create_task(tick())
            res = {{p.id: res async for p, res in r.run(ps, "best_of_n", "n=2")}}
            out = {{k: v.correct for k, v in res.items()}}
            ticker.cancel()
            print(json.dumps([len(out), sum(bool(c) for c in out.values()), max(gaps),
                              out[ps[3].id], res[ps[3].id].meta.get("grading")]))

        asyncio.run(main())
    """
    results, correct, worst_gap, runaway, note = run_child(script, deadline_s=60)  # type: ignore[misc]
    assert results == 12 and correct == 11
    assert runaway is None and "not graded" in note  # ungraded and said so, not counted wrong
    assert worst_gap < 0.5, f"the event loop stalled for {worst_gap:.2f} s"


async def test_grade_async_keeps_the_event_loop_running() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    ticker = asyncio.create_task(tick())
    t0 = time.perf_counter()
    ok = await grading.grade_async(RUNAWAYS[0], "2", timeout_s=LIMIT_S)
    took = time.perf_counter() - t0
    ticker.cancel()
    assert ok is False and took < LIMIT_S + START_S
    assert ticks >= 0.5 * took / 0.02  # the loop kept running while the worker computed
    assert await grading.grade_async("\\frac12", "0.5") and not await grading.grade_async(None, "1")
    assert await grading.grade_async("x^2+2x+1", "(x+1)^2")


def test_workers_are_reused_and_a_runaway_one_is_replaced() -> None:
    pool = grading._pool()
    assert grading.grade("x^2+2x+1", "(x+1)^2")
    first = {w.proc.pid for w in pool.workers}
    assert grading.grade("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}")
    assert {w.proc.pid for w in pool.workers} == first  # the same process served both
    killed = [w.proc for w in pool.workers]
    for _ in range(pool.size + 1):  # more runaways than workers: each is killed, none piles up
        assert not grading.grade(RUNAWAYS[1], "2", timeout_s=LIMIT_S)
        assert len(pool.workers) <= pool.size
    assert all(p.poll() is not None for p in killed)  # killed and reaped: no process left behind
    assert grading.grade("x^2+2x+1", "(x+1)^2")  # a fresh worker serves the next call
    assert 1 <= len(pool.workers) <= pool.size and all(w.proc.poll() is None for w in pool.workers)
