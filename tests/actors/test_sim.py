"""The calibrated simulator: step format, determinism, seeds, calibration, errors, latency."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from ponder.actors.engine import PolicyEngine, RewardEngine, ScoreRequest, StepRequest
from ponder.actors.factory import build_policy, build_reward
from ponder.actors.sim import SimPolicy, SimReward, carry_columns, count_tokens
from ponder.config import ConfigError, EngineConfig
from ponder.search.types import STEP_DELIMITER
from ponder.tasks.arith.problems import apply, check_steps, generate, parse, parse_step, prefix_labels
from ponder.tasks.grading import extract_answer

PROBLEMS = generate(100, seed=21)


def solution_answer(steps) -> str | None:
    return extract_answer(STEP_DELIMITER.join(s.text for s in steps))


def auroc(pos: list[float], neg: list[float]) -> float:
    """P(a random positive scores above a random negative), ties count half (exact, by ranks)."""
    ranked = sorted([(x, 1) for x in pos] + [(x, 0) for x in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2
        rank_sum += mean_rank * sum(label for _, label in ranked[i:j])
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def test_protocols_and_factory() -> None:
    pol = build_policy(EngineConfig(kind="sim", options={"skill": 2.0}))
    rew = build_reward(EngineConfig(kind="sim", options={"auroc": 0.8}))
    assert isinstance(pol, PolicyEngine) and isinstance(rew, RewardEngine)
    assert pol.settings.skill == 2.0 and rew.settings.auroc == 0.8
    assert pol.info().kind == "sim" and pol.info().extra["skill"] == 2.0
    assert rew.info().extra["auroc"] == 0.8


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"skil": 1.0}, "unknown sim policy option 'skil'"),
        ({"skill": 0}, "skill must be positive"),
        ({"early_answer": 2}, "early_answer must be in"),
    ],
)
def test_bad_policy_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SimPolicy.from_config(EngineConfig(kind="sim", options=options))


def test_bad_reward_options() -> None:
    with pytest.raises(ConfigError, match="auroc must be in"):
        SimReward.from_config(EngineConfig(kind="sim", options={"auroc": 1.0}))
    with pytest.raises(ConfigError, match="unknown sim reward option 'noise'"):
        SimReward.from_config(EngineConfig(kind="sim", options={"noise": 0.1}))


async def test_non_arithmetic_problem() -> None:
    with pytest.raises(ValueError, match="only arithmetic problems"):
        await SimPolicy().generate([StepRequest("What is the capital of France?", [])])
    with pytest.raises(ValueError, match="only arithmetic problems"):
        await SimReward().score([ScoreRequest("Prove that 2 is prime.", ["It is."])])


async def test_step_format_and_to_end() -> None:
    pol = SimPolicy(skill=1e9)  # never errs
    for p in PROBLEMS[:20]:
        n_ops = len(parse(p.problem).ops)
        (conts,) = await pol.generate([StepRequest(p.problem, [], n=2, to_end=True, seed=3)])
        for steps in conts:
            texts = [s.text for s in steps]
            assert len(steps) == n_ops
            assert check_steps(p.problem, texts) == [True] * n_ops
            assert [s.finished for s in steps] == [False] * (n_ops - 1) + [True]
            assert texts[-1].endswith(f"\nThe answer is \\boxed{{{p.answer}}}.")
            assert all(s.tokens == count_tokens(s.text) == len(s.text) // 2 + 1 for s in steps)
        # one step at a time, from a partial prefix
        prefix = parse(p.problem).solution_steps()[:1]
        (one,) = await pol.generate([StepRequest(p.problem, prefix, n=1, seed=3)])
        assert len(one[0]) == 1 and check_steps(p.problem, prefix + [one[0][0].text]) == [True, True]
        # to_end from a prefix writes only the remaining steps
        (rest,) = await pol.generate([StepRequest(p.problem, prefix, n=1, to_end=True, seed=3)])
        assert len(rest[0]) == n_ops - 1


async def test_finished_prefix_and_truncation() -> None:
    p = PROBLEMS[0]
    full = parse(p.problem).solution_steps()
    (conts,) = await SimPolicy().generate([StepRequest(p.problem, full, n=1, temperature=0)])
    assert conts[0][0].finished and extract_answer(conts[0][0].text) == p.answer
    (cut,) = await SimPolicy(skill=1e9).generate([StepRequest(p.problem, [], n=1, max_step_tokens=3, seed=0)])
    assert cut[0][0].tokens == 3 and not cut[0][0].finished and len(cut[0][0].text) <= 4


async def test_greedy_is_deterministic() -> None:
    reqs = [StepRequest(p.problem, [], n=3, temperature=0, to_end=True, seed=s) for s, p in enumerate(PROBLEMS[:30])]
    a = await SimPolicy(seed=1).generate(reqs)
    b = await SimPolicy(seed=2).generate(list(reversed(reqs)))
    assert a == list(reversed(b))
    for conts in a:  # greedy: every sample is the same, whatever the seed (only sample 0 prefills)
        texts = [[(st.text, st.tokens, st.finished, st.prompt_tokens) for st in c] for c in conts]
        assert texts[0] == texts[1] == texts[2]


async def test_seeded_sampling_is_reproducible_and_batch_independent() -> None:
    reqs = [StepRequest(p.problem, [], n=4, temperature=0.8, to_end=True, seed=7) for p in PROBLEMS[:30]]
    together = await SimPolicy(skill=0.3).generate(reqs)
    alone = [(await SimPolicy(skill=0.3, seed=99).generate([r]))[0] for r in reqs]
    assert together == alone
    shuffled = reqs[:]
    random.Random(0).shuffle(shuffled)
    again = await SimPolicy(skill=0.3).generate(shuffled)
    assert [again[shuffled.index(r)] for r in reqs] == together
    # sample k does not depend on how many samples were asked for
    wider = await SimPolicy(skill=0.3).generate(
        [StepRequest(r.problem, [], n=8, temperature=0.8, to_end=True, seed=7) for r in reqs]
    )
    assert [w[:4] for w in wider] == together
    # samples differ from each other, and another seed gives other samples
    assert sum(len({tuple(s.text for s in c) for c in conts}) > 1 for conts in together) > 10
    other = await SimPolicy(skill=0.3).generate(
        [StepRequest(r.problem, [], n=4, temperature=0.8, to_end=True, seed=8) for r in reqs]
    )
    assert other != together


async def test_greedy_accuracy_falls_with_level() -> None:
    pol = SimPolicy()
    acc = {}
    for level in (1, 3, 5):
        problems = generate(150, seed=5, levels=(level,))
        out = await pol.generate([StepRequest(p.problem, [], temperature=0, to_end=True) for p in problems])
        acc[level] = sum(solution_answer(c[0]) == p.answer for p, c in zip(problems, out)) / len(problems)
    assert acc[1] > 0.75, acc  # decent on easy problems
    assert acc[5] < 0.4, acc  # poor on hard ones
    assert acc[1] > acc[3] > acc[5], acc


async def test_skill_and_temperature_move_accuracy() -> None:
    problems = generate(60, seed=6, levels=(3,))

    async def accuracy(pol: SimPolicy, temperature: float, top_p: float = 1.0) -> float:
        reqs = [
            StepRequest(p.problem, [], n=8, temperature=temperature, top_p=top_p, to_end=True, seed=1) for p in problems
        ]
        out = await pol.generate(reqs)
        right = sum(solution_answer(c) == p.answer for p, conts in zip(problems, out) for c in conts)
        return right / (8 * len(problems))

    weak, strong = SimPolicy(skill=0.5), SimPolicy(skill=3.0)
    assert await accuracy(strong, 0.8) > await accuracy(weak, 0.8) + 0.2
    assert await accuracy(weak, 0.2) > await accuracy(weak, 1.5) + 0.05
    assert await accuracy(weak, 1.5, top_p=0.2) > await accuracy(weak, 1.5) + 0.05  # a nucleus cools sampling


async def test_errors_look_real_and_continue_from_the_wrong_value() -> None:
    """A wrong step either mis-copies the running value or gets the result wrong, in both cases
    by m * 10^k (one digit, a dropped carry, a misplaced tens); later steps start from the value
    the previous step wrote."""
    pol = SimPolicy(skill=0.2, early_answer=0.0)
    problems = generate(60, seed=8, levels=(2, 3, 4))
    out = await pol.generate([StepRequest(p.problem, [], n=4, temperature=1.0, to_end=True, seed=2) for p in problems])
    wrong = 0
    for p, conts in zip(problems, out):
        chain = parse(p.problem)
        for steps in conts:
            assert len(steps) == len(chain.ops)  # no early answers when early_answer=0
            prev = chain.start
            for (op, b), step in zip(chain.ops, steps):
                (a, step_op, step_b, c), _ = parse_step(step.text)
                assert (step_op, step_b) == (op, b)
                if a == prev and c == apply(op, a, b):
                    prev = c
                    continue
                wrong += 1
                miss = abs(a - prev) if a != prev else abs(c - apply(op, a, b))
                if a != prev:
                    assert c == apply(op, a, b)  # a mis-copied operand, then computed right
                assert is_digit_times_power_of_ten(miss), (a, op, b, c, prev)
                prev = c
    assert wrong > 100


def is_digit_times_power_of_ten(x: int) -> bool:
    while x and x % 10 == 0:
        x //= 10
    return 1 <= x <= 9


def test_carry_columns() -> None:
    assert carry_columns(58, "+", 67) == [0, 1]
    assert carry_columns(12, "+", 34) == []
    assert carry_columns(503, "-", 47) == [0, 1]
    assert carry_columns(12, "*", 3) == []
    assert carry_columns(19, "*", 9) == [0]


async def test_early_answer_ends_a_wrong_solution() -> None:
    pol = SimPolicy(skill=0.1, early_answer=1.0)
    p = generate(1, seed=3, levels=(5,))[0]
    (conts,) = await pol.generate([StepRequest(p.problem, [], n=16, temperature=1.0, to_end=True, seed=0)])
    early = [c for c in conts if len(c) < len(parse(p.problem).ops)]
    assert early
    for c in early:
        assert c[-1].finished and extract_answer(c[-1].text) != p.answer
        assert prefix_labels(p.problem, [s.text for s in c])[-1] is False


async def trajectories(n_problems: int = 150) -> list[tuple[str, list[str]]]:
    problems = generate(n_problems, seed=9)
    out = await SimPolicy(skill=0.5).generate(
        [StepRequest(p.problem, [], n=4, temperature=1.0, to_end=True, seed=4) for p in problems]
    )
    return [(p.problem, [s.text for s in c]) for p, conts in zip(problems, out) for c in conts]


@pytest.mark.parametrize("target", [0.9, 0.75])
async def test_reward_separates_correct_from_wrong(target: float) -> None:
    prm = SimReward(auroc=target)
    trajs = await trajectories()
    results = await prm.score([ScoreRequest(problem, steps) for problem, steps in trajs])
    pos, neg = [], []
    for (problem, steps), res in zip(trajs, results):
        assert len(res.rewards) == len(steps)
        assert all(0.0 <= r <= 1.0 for r in res.rewards)
        assert res.tokens == count_tokens(problem) + sum(count_tokens(s) for s in steps)
        for label, r in zip(prefix_labels(problem, steps), res.rewards):
            (pos if label else neg).append(r)
    assert len(pos) > 200 and len(neg) > 200
    assert abs(auroc(pos, neg) - target) < 0.04
    assert sum(pos) / len(pos) > sum(neg) / len(neg) + 0.2


async def test_reward_is_deterministic_and_prefix_stable() -> None:
    trajs = (await trajectories(10))[:20]
    reqs = [ScoreRequest(problem, steps) for problem, steps in trajs]
    a = await SimReward().score(reqs)
    b = await SimReward().score(list(reversed(reqs)))
    assert a == list(reversed(b))
    for (problem, steps), res in zip(trajs, a):  # a step's reward does not change as the trajectory grows
        (short,) = await SimReward().score([ScoreRequest(problem, steps[:1])])
        assert short.rewards == res.rewards[:1]
        assert short.tokens == res.prefix_tokens[0] and res.prefix_tokens[-1] == res.tokens
    other = await SimReward(seed=1).score(reqs)
    assert other != a


async def test_latency_model() -> None:
    opts = {"call_overhead_s": 0.05, "per_request_s": 0.01, "per_token_s": 0.001}
    pol, prm = SimPolicy(**opts), SimReward(**opts)
    reqs = [StepRequest(p.problem, [], n=2, temperature=0, to_end=True) for p in PROBLEMS[:5]]
    t0 = time.perf_counter()
    out = await pol.generate(reqs)
    took = time.perf_counter() - t0
    tokens = sum(s.tokens for conts in out for c in conts for s in c)
    want = 0.05 + 0.01 * 5 + 0.001 * tokens
    assert want <= took < want + 0.25, (took, want)

    sreqs = [ScoreRequest(p.problem, [s.text for s in c[0]]) for p, c in zip(PROBLEMS[:5], out)]
    t0 = time.perf_counter()
    scored = await prm.score(sreqs)
    took = time.perf_counter() - t0
    want = 0.05 + 0.01 * 5 + 0.001 * sum(r.tokens for r in scored)
    assert want <= took < want + 0.25, (took, want)

    t0 = time.perf_counter()
    await SimPolicy().generate(reqs)  # default: instant
    assert time.perf_counter() - t0 < 0.1


async def test_device_runs_one_batch_at_a_time_and_merges_waiting_calls() -> None:
    pol = SimPolicy(call_overhead_s=0.1, per_step_s=0.001)
    reqs = [StepRequest(p.problem, [], n=2, temperature=0) for p in PROBLEMS[:3]]
    t0 = time.perf_counter()
    outs = await asyncio.gather(*(pol.generate([r]) for r in reqs))  # arrive together: one batch
    took = time.perf_counter() - t0
    longest = max(s.tokens for out in outs for conts in out for c in conts for s in c)
    assert pol.device.batches == 1 and pol.device.requests == 3
    assert pol.device.busy_s == pytest.approx(0.1 + 0.001 * longest)
    assert took < 0.1 + 0.001 * longest + 0.08, took

    async def late(delay: float) -> float:
        await asyncio.sleep(delay)
        await pol.generate(reqs[:1])
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    first, second = await asyncio.gather(late(0.0), late(0.03))  # the second waits for the first batch
    assert pol.device.batches == 3
    assert second >= 0.2 and second - first >= 0.1, (first, second)


async def test_prefix_cache_prefills_only_new_steps() -> None:
    p = PROBLEMS[0].problem
    [first] = (await SimPolicy().generate([StepRequest(p, [], n=1, temperature=0, to_end=True)]))[0]
    steps = [s.text for s in first]
    assert len(steps) >= 2
    cached, plain = SimReward(per_token_s=1e-4, prefix_cache=100), SimReward(per_token_s=1e-4)
    for prm in (cached, plain):
        for k in range(1, len(steps) + 1):  # the same tree, one step deeper each time
            await prm.score([ScoreRequest(p, steps[:k])])
    assert cached.device.busy_s == pytest.approx(1e-4 * (count_tokens(p) + sum(map(count_tokens, steps))))
    full = sum(count_tokens(p) + sum(map(count_tokens, steps[:k])) for k in range(1, len(steps) + 1))
    assert plain.device.busy_s == pytest.approx(1e-4 * full)
    a = await cached.score([ScoreRequest(p, steps)])
    b = await plain.score([ScoreRequest(p, steps)])
    assert (a[0].rewards, a[0].tokens) == (b[0].rewards, b[0].tokens)  # the cache changes latency only
    assert a[0].cached_tokens == a[0].tokens and b[0].cached_tokens == 0  # ... and what it reports


async def test_device_batch_holds_at_most_max_batch_seqs() -> None:
    pol = SimPolicy(call_overhead_s=0.01, max_batch_seqs=4)
    req = StepRequest(PROBLEMS[0].problem, [], n=10, temperature=0)
    small = StepRequest(PROBLEMS[1].problem, [], n=1, temperature=0)
    out, _ = await asyncio.gather(pol.generate([req]), pol.generate([small]))
    assert len(out[0]) == 10
    assert pol.device.batches == 3  # 10 samples in parts of 4, 4, 2 + the small call's 1 in the last
    assert pol.device.busy_s == pytest.approx(0.03)


async def test_policy_reports_prompt_and_cached_tokens() -> None:
    p = PROBLEMS[0].problem
    prompt0 = count_tokens(p)
    for cache in (0, 100):
        pol = SimPolicy(prefix_cache=cache)
        (first,) = await pol.generate([StepRequest(p, [], n=3, temperature=0.8, seed=1)])
        assert [c[0].prompt_tokens for c in first] == [prompt0] * 3
        # n samples share one prefill: only the first computes the prompt
        assert [c[0].cached_tokens for c in first] == [0, prompt0, prompt0]
        step = first[0][0].text
        (second,) = await pol.generate([StepRequest(p, [step], n=2, temperature=0.8, seed=2)])
        prompt1 = prompt0 + count_tokens(step)
        assert [c[0].prompt_tokens for c in second] == [prompt1] * 2
        # with a cache the generated step is cached on this replica: nothing to prefill
        assert second[0][0].cached_tokens == (prompt1 if cache else 0)
        assert second[1][0].cached_tokens == prompt1
    # a to_end rollout: later steps continue the same sequence (their context is reused)
    (roll,) = await SimPolicy().generate([StepRequest(p, [], n=1, temperature=0, to_end=True)])
    steps = roll[0]
    assert len(steps) >= 2 and steps[0].cached_tokens == 0
    assert steps[1].prompt_tokens == prompt0 + count_tokens(steps[0].text) == steps[1].cached_tokens


async def test_policy_prefix_cache_changes_only_prefill_time_and_counts() -> None:
    p = PROBLEMS[1].problem
    req = StepRequest(p, [], n=2, temperature=0.8, seed=3)
    cached, plain = SimPolicy(per_prefill_token_s=1e-4, prefix_cache=100), SimPolicy(per_prefill_token_s=1e-4)
    a = [await e.generate([req]) for e in (cached, plain)]
    step = a[0][0][0][0].text
    b = [await e.generate([StepRequest(p, [step], n=2, temperature=0.8, seed=4)]) for e in (cached, plain)]
    texts = lambda out: [[(s.text, s.tokens, s.finished) for s in c] for c in out[0]]
    assert texts(a[0]) == texts(a[1]) and texts(b[0]) == texts(b[1])
    assert cached.device.prefill_tokens == count_tokens(p)  # the problem once; the step was generated here
    assert plain.device.prefill_tokens == 2 * count_tokens(p) + count_tokens(step)
    assert cached.device.busy_s == pytest.approx(1e-4 * count_tokens(p))


async def test_reward_reports_cached_tokens() -> None:
    p = PROBLEMS[2].problem
    [first] = (await SimPolicy().generate([StepRequest(p, [], n=1, temperature=0, to_end=True)]))[0]
    steps = [s.text for s in first]
    prm = SimReward(prefix_cache=100)
    [r1] = await prm.score([ScoreRequest(p, steps[:1])])
    [r2] = await prm.score([ScoreRequest(p, steps[:2])])
    assert r1.cached_tokens == 0
    assert r2.cached_tokens == r1.tokens and r2.tokens == r1.tokens + count_tokens(steps[1])
    [r3] = await SimReward().score([ScoreRequest(p, steps[:2])])
    assert r3.cached_tokens == 0 and r3.rewards == r2.rewards


async def test_continuous_device_joins_at_the_next_step() -> None:
    from ponder.actors.sim import ContinuousDevice, Device, Latency

    async def two(device: Device) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def call(delay: float, n: int) -> float:
            await asyncio.sleep(delay)
            await device.run(1, n, n, 1, lengths=[[n]], prefills=[0])
            return loop.time() - t0

        return tuple(await asyncio.gather(call(0.0, 40), call(0.02, 2)))

    lat = Latency(per_step_s=0.005)
    long_c, short_c = await two(ContinuousDevice(lat, max_seqs=8))
    # the short call joins the running batch at its next step and leaves when its 2 tokens are done
    assert short_c < 0.08 < long_c, (short_c, long_c)
    long_s, short_s = await two(Device(lat, max_seqs=8))
    assert short_s >= long_s  # static: it waits for the whole running batch


async def test_continuous_device_keeps_call_overhead_off_the_device() -> None:
    pol = SimPolicy(device="continuous", call_overhead_s=0.05, per_step_s=0.001)
    (out,) = await pol.generate([StepRequest(PROBLEMS[0].problem, [], n=3, temperature=0)])
    longest = max(c[0].tokens for c in out)
    assert pol.device.busy_s == pytest.approx(0.001 * longest)  # one step per token of the longest sample
    assert pol.device.batches == longest
    with pytest.raises(ConfigError, match="device must be"):
        SimPolicy.from_config(EngineConfig(kind="sim", options={"device": "paged"}))


async def test_continuous_device_caps_running_sequences() -> None:
    pol = SimPolicy(device="continuous", per_step_s=0.001, max_batch_seqs=4)
    reqs = [StepRequest(p.problem, [], n=2, temperature=0) for p in PROBLEMS[:4]]
    out = await pol.generate(reqs)
    assert len(out) == 4
    assert pol.device.seqs / pol.device.batches <= 4  # never more than 4 sequences a step


async def test_shared_gpu_runs_both_roles_one_at_a_time() -> None:
    from ponder.actors.sim import share_gpu

    pol, prm = SimPolicy(call_overhead_s=0.03), SimReward(call_overhead_s=0.03)
    share_gpu(pol, prm)
    p = PROBLEMS[0].problem
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.gather(pol.generate([StepRequest(p, [], n=1, temperature=0)]), prm.score([ScoreRequest(p, ["1 + 1 = 2"])]))
    assert loop.time() - t0 >= 0.06  # one after the other, not side by side
