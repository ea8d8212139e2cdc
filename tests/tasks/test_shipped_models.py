"""The shipped arithmetic policy and PRM, loaded the way users load them (`from_config`)."""

from __future__ import annotations

import random

import pytest

from ponder.actors.engine import ScoreRequest, StepRequest
from ponder.actors.hf import PRM_CONFIG_FILE, HFPolicy, HFReward
from ponder.config import MODELS_DIR, EngineConfig
from ponder.tasks.arith.problems import check_steps, generate, parse, prefix_labels, slip_result

POLICY_DIR, PRM_DIR = MODELS_DIR / "arith-policy", MODELS_DIR / "arith-prm"
pytestmark = pytest.mark.skipif(
    not ((POLICY_DIR / "config.json").is_file() and (PRM_DIR / PRM_CONFIG_FILE).is_file()),
    reason="shipped models not trained yet (python -m ponder.tasks.arith.train --out models)",
)


@pytest.fixture(scope="module")
def policy():
    return HFPolicy.from_config(EngineConfig(kind="hf", path=str(POLICY_DIR), device="cpu"))


@pytest.fixture(scope="module")
def reward():
    return HFReward.from_config(EngineConfig(kind="hf", path=str(PRM_DIR), device="cpu"))


def test_small_and_standard(policy, reward):
    assert policy.model.config.model_type == "llama" and reward.model.config.model_type == "llama"
    size = sum(f.stat().st_size for d in (POLICY_DIR, PRM_DIR) for f in d.rglob("*") if f.is_file())
    assert size <= 20 * 2**20
    for d in (POLICY_DIR, PRM_DIR):
        assert (d / "README.md").is_file() and (d / "model.safetensors").is_file()


async def test_greedy_solves_an_easy_problem(policy):
    problem = "Compute (40 + 54) + 14."
    [[steps]] = await policy.generate([StepRequest(problem, [], temperature=0.0, to_end=True, max_steps=8)])
    texts = [s.text for s in steps]
    assert texts == ["40 + 54 = 94", "94 + 14 = 108\nThe answer is \\boxed{108}."]
    assert steps[-1].finished and not steps[0].finished


async def test_prm_ranks_correct_steps_above_corrupted(reward):
    """Reference steps against the same step with one digit of its result changed."""
    rng = random.Random(0)
    problems = generate(10, seed=77, levels=(2, 3))
    pairs = []
    for p in problems:
        steps = parse(p.problem).solution_steps()
        k = rng.randrange(len(steps))
        bad = steps[:k] + [slip_result(steps[k], rng)]
        assert prefix_labels(p.problem, bad)[-1] is False and all(prefix_labels(p.problem, steps[: k + 1]))
        pairs.append((ScoreRequest(p.problem, steps[: k + 1]), ScoreRequest(p.problem, bad)))
    out = await reward.score([r for pair in pairs for r in pair])
    good, bad = [r.rewards[-1] for r in out[0::2]], [r.rewards[-1] for r in out[1::2]]
    wins = sum(g > b for g, b in zip(good, bad))
    assert wins >= 9, list(zip(good, bad))
    assert sum(good) / len(good) > 0.5 > sum(bad) / len(bad)


async def test_prm_separates_the_policys_own_steps(policy, reward):
    """What the PRM was trained for: the policy's sampled steps, right vs wrong (exact labels)."""
    from ponder.tasks.arith.train import auroc

    problems = generate(10, seed=99, levels=(1, 2))
    reqs = [StepRequest(p.problem, [], n=4, temperature=0.8, seed=i, to_end=True, max_steps=6, max_step_tokens=40) for i, p in enumerate(problems)]
    samples = await policy.generate(reqs)
    trajs = [(p.problem, [s.text for s in steps]) for p, out in zip(problems, samples) for steps in out if steps]
    scored = await reward.score([ScoreRequest(prob, steps) for prob, steps in trajs])
    labels = [lab for prob, steps in trajs for lab in prefix_labels(prob, steps)]
    scores = [x for r in scored for x in r.rewards]
    assert 0 < sum(labels) < len(labels)
    assert auroc(scores, labels) >= 0.8


async def test_prm_picks_the_right_next_step_among_the_policys_samples(policy, reward):
    """What PRM-guided search relies on: at a hard problem's step, the top-rewarded of the
    policy's sampled candidates is right far more often than a sampled candidate is."""
    problems = generate(4, seed=777, levels=(5,))
    cases = [(p.problem, parse(p.problem).solution_steps()[:k]) for p in problems for k in (0, 3, 6)]
    samples = await policy.generate([StepRequest(prob, pre, n=8, temperature=0.8, seed=k) for k, (prob, pre) in enumerate(cases)])
    picked, sampled = [], []
    for (prob, pre), out in zip(cases, samples):
        cands = [s[0].text for s in out]
        right = [check_steps(prob, pre + [c])[-1] for c in cands]
        scores = [r.rewards[-1] for r in await reward.score([ScoreRequest(prob, pre + [c]) for c in cands])]
        picked.append(right[scores.index(max(scores))])
        sampled.append(sum(right) / len(right))
    assert sum(picked) / len(picked) >= sum(sampled) / len(sampled) + 0.2, (picked, sampled)
