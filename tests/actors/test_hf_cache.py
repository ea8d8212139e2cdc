"""The hf engines' prefix cache: the same rewards and samples as without it, less computed."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import torch

from ponder.actors.engine import ScoreRequest, StepRequest
from ponder.actors.hf import CacheEntry, HFPolicy, HFReward, PrefixCache, PRMConvention
from ponder.config import MODELS_DIR, ConfigError, EngineConfig
from ponder.tasks.arith import tokenizer as chartok
from tests.actors.hf_fixtures import PROBLEM, SOLUTION, build_tiny_model

STEPS = SOLUTION.split("\n\n")
OFF = {"prefix_cache": False}
# A small tree: a root's children, then their children, so later calls meet cached parents.
TREE = [
    [STEPS[:1], ["37 + 48 = 95"], ["37 + 48 = 85", "Now 85 * 6."]],
    [STEPS, ["37 + 48 = 95", "95 * 6 = 570\nThe answer is \\boxed{570}."], STEPS[:1] + ["85 * 6 = 500"],
     ["37 + 48 = 85", "Now 85 * 6.", "85 * 6 = 510"]],
]


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def shipped(kind, options=None, max_batch=64):
    path = MODELS_DIR / ("arith-policy" if kind == "policy" else "arith-prm")
    cfg = EngineConfig(kind="hf", path=str(path), device="cpu", max_batch=max_batch, options=dict(options or {}))
    return HFPolicy.from_config(cfg) if kind == "policy" else HFReward.from_config(cfg)


def score_tree(reward):
    return [run(reward.score([ScoreRequest(PROBLEM, s) for s in level])) for level in TREE]


def assert_same_rewards(cached, plain):
    for a_level, b_level in zip(cached, plain):
        for a, b in zip(a_level, b_level):
            assert a.rewards == pytest.approx(b.rewards, abs=1e-4)
            assert a.tokens == b.tokens and b.cached_tokens == 0


def assert_children_reuse(levels, per_model):
    first, second = levels
    # nothing cached yet, but the first steps share the problem: computed once, for the first of them
    assert first[0].cached_tokens == 0 and all(r.cached_tokens > 0 for r in first[1:])
    # every path of the second level extends one scored in the first: its prefix is reused
    for r in second:
        assert 0 < r.cached_tokens < r.tokens
    # the child's computed tokens: its new step (plus the last cached token for the implicit PRM)
    parent, child = first[0], second[0]
    assert child.cached_tokens == parent.tokens - per_model * (1 if per_model == 2 else 0)


# ------------------------------------------------------------------ the PRM, each convention


def test_implicit_prm_cache_gives_the_same_rewards_and_reuses_parents():
    cached, plain = shipped("reward"), shipped("reward", OFF)
    assert cached.conv.style == "implicit" and cached.cache is not None and plain.cache is None
    a, b = score_tree(cached), score_tree(plain)
    assert_same_rewards(a, b)
    assert_children_reuse(a, per_model=2)
    # a path scored again recomputes one token per model (its last, for the next ratio's logits)
    [again] = run(cached.score([ScoreRequest(PROBLEM, STEPS)]))
    assert again.rewards == pytest.approx(b[1][0].rewards, abs=1e-4) and again.tokens - again.cached_tokens == 2
    # q_values (what training calibrates beta on) read the cache alike
    [(q, n)] = cached.q_values([ScoreRequest(PROBLEM, STEPS)])
    [(q0, n0)] = plain.q_values([ScoreRequest(PROBLEM, STEPS)])
    assert n == n0 and q.tolist() == pytest.approx(q0.tolist(), abs=1e-4)
    stats = cached.info().extra["prefix_cache"]
    assert stats["hit_tokens"] > 0 and stats["entries"] == len(cached.cache)


def test_math_shepherd_prm_cache_gives_the_same_rewards(tiny_dir):
    cfg = EngineConfig(kind="hf", path=str(tiny_dir), device="cpu")
    cached, plain = HFReward.from_config(cfg), HFReward.from_config(EngineConfig(**{**vars(cfg), "options": OFF}))
    assert cached.conv.style == "math-shepherd"
    a, b = score_tree(cached), score_tree(plain)
    assert_same_rewards(a, b)
    assert_children_reuse(a, per_model=1)
    # the first level computed the problem once and each path's own steps
    head = len(cached.conv.input_ids(cached.tokenizer, PROBLEM, []))
    assert sum(r.tokens - r.cached_tokens for r in a[0]) == head + sum(r.tokens - head for r in a[0])


def _classifier(tmp_path):
    """A tiny two-class token head (the classifier convention), random weights."""
    from transformers import LlamaConfig, LlamaForTokenClassification

    torch.manual_seed(0)
    tok = chartok.save_tokenizer(tmp_path)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256, num_labels=2,
                         pad_token_id=tok.pad_token_id)
    model = LlamaForTokenClassification(config).eval()
    conv = PRMConvention(step_tag=chartok.STEP_TAG, step_tag_id=tok.convert_tokens_to_ids(chartok.STEP_TAG),
                         style="classifier", good_label=1)
    return tok, model, conv


def test_classifier_prm_cache_gives_the_same_rewards(tmp_path):
    tok, model, conv = _classifier(tmp_path)
    cached = HFReward(tok, model, "cpu", conv)
    plain = HFReward(tok, model, "cpu", conv, prefix_cache=None)
    a, b = score_tree(cached), score_tree(plain)
    assert_same_rewards(a, b)
    assert_children_reuse(a, per_model=1)
    # and what the head says on the whole sequence at once
    ids = conv.input_ids(tok, PROBLEM, STEPS)
    with torch.no_grad():
        probs = model(input_ids=torch.tensor([ids])).logits[0].softmax(-1)[:, 1]
    expected = probs[torch.tensor(ids) == conv.step_tag_id].tolist()
    assert a[1][0].rewards == pytest.approx(expected, abs=1e-4)


def test_prm_batch_mixes_cached_lengths():
    """One batch holding a miss, a short and a long cached prefix: each as scored alone."""
    reward = shipped("reward")
    run(reward.score([ScoreRequest(PROBLEM, STEPS[:1]), ScoreRequest(PROBLEM, ["37 + 48 = 85", "Now 85 * 6."])]))
    mixed = [ScoreRequest("Compute 2 + 3.", ["2 + 3 = 5"]), ScoreRequest(PROBLEM, STEPS),
             ScoreRequest(PROBLEM, ["37 + 48 = 85", "Now 85 * 6.", "85 * 6 = 510"])]
    out = run(reward.score(mixed))
    assert [r.cached_tokens > 0 for r in out] == [False, True, True]
    plain = shipped("reward", OFF)
    for req, got in zip(mixed, out):
        [alone] = run(plain.score([req]))
        assert got.rewards == pytest.approx(alone.rewards, abs=1e-4)


# ------------------------------------------------------------------ the policy


def expand(policy, depth=3, n=4, temperature=1.0):
    """A few levels of a tree, each level one batch of seeded requests (children of the last)."""
    frontier, levels = [[]], []
    for d in range(depth):
        reqs = [StepRequest(PROBLEM, s, n=n, temperature=temperature, seed=100 * d + i, max_step_tokens=40)
                for i, s in enumerate(frontier)]
        out = run(policy.generate(reqs))
        levels.append(out)
        frontier = [s + [steps[0].text] for s, samples in zip(frontier, out) for steps in samples
                    if not steps[0].finished][:3]
        if not frontier:
            break
    return levels


def flat(levels, field):
    return [[getattr(st, field) for samples in level for steps in samples for st in steps] for level in levels]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_policy_cache_samples_the_same_text(temperature):
    cached, plain = shipped("policy", max_batch=8), shipped("policy", OFF, max_batch=8)
    a, b = expand(cached, temperature=temperature), expand(plain, temperature=temperature)
    assert flat(a, "text") == flat(b, "text") and flat(a, "tokens") == flat(b, "tokens")
    assert flat(a, "prompt_tokens") == flat(b, "prompt_tokens")
    computed = [sum(p) - sum(c) for p, c in zip(flat(a, "prompt_tokens"), flat(a, "cached_tokens"))]
    computed_plain = [sum(p) - sum(c) for p, c in zip(flat(b, "prompt_tokens"), flat(b, "cached_tokens"))]
    assert computed[0] == computed_plain[0]  # the first prompt is computed either way
    assert all(x < y for x, y in zip(computed[1:], computed_plain[1:]))  # then the parents' KV is reused
    assert cached.info().extra["prefix_cache"]["hit_tokens"] > 0


def test_policy_prompt_accounting():
    policy = shipped("policy")
    [samples] = run(policy.generate([StepRequest(PROBLEM, [], n=3, temperature=1.0, seed=5, max_step_tokens=30)]))
    prompt = len(policy.tokenizer(PROBLEM + "\n\n").input_ids)
    assert [s[0].prompt_tokens for s in samples] == [prompt] * 3
    # one prefill for the three samples: the first computes the prompt, the others reuse it
    assert [s[0].cached_tokens for s in samples] == [0, prompt, prompt]
    child = samples[0][0]
    [[[step]]] = run(policy.generate([StepRequest(PROBLEM, [child.text], n=1, temperature=1.0, seed=6)]))
    # the sample's own KV (prompt + its step) is the child's prompt but for its last token
    assert step.prompt_tokens - step.cached_tokens == 1
    # a to_end rollout's later steps are generated from the KV of the steps before them
    [[steps]] = run(policy.generate([StepRequest(PROBLEM, [], n=1, temperature=0.0, to_end=True)]))
    assert len(steps) > 1
    for before, after in itertools.pairwise(steps):
        assert after.prompt_tokens == after.cached_tokens == before.prompt_tokens + before.tokens


def test_policy_batch_composition_with_a_warm_cache():
    """The same seeded request alone on a cold engine and behind others on a warm one."""
    req = StepRequest(PROBLEM, STEPS[:1], n=3, temperature=1.5, seed=11, max_step_tokens=30)
    alone = run(shipped("policy", OFF).generate([req]))
    warm = shipped("policy", max_batch=4)
    run(warm.generate([StepRequest(PROBLEM, [], n=2, seed=1), StepRequest(PROBLEM, STEPS[:1], n=1, seed=2)]))
    mixed = run(warm.generate([StepRequest("Compute 1 + 2.", [], n=2, seed=9), req, StepRequest(PROBLEM, [], n=1, seed=4)]))
    assert [[s.text for s in steps] for steps in mixed[1]] == [[s.text for s in steps] for steps in alone[0]]


# ------------------------------------------------------------------ bounds and options


def _entry(ids):
    return CacheEntry(tuple(ids), [[(torch.zeros(1, len(ids), 1), torch.zeros(1, len(ids), 1))]])


def test_prefix_cache_is_a_bounded_lru():
    cache = PrefixCache(max_entries=3, max_tokens=10)
    for ids in ([1, 2], [1, 2, 3], [7, 8, 9]):
        cache.insert(_entry(ids))
    assert cache.lookup([1, 2, 3, 4]).ids == (1, 2, 3)  # the longest prefix; now the most recent
    assert cache.lookup([1, 2, 5]).ids == (1, 2)
    assert cache.lookup([4]) is None and cache.lookup([1]) is None
    cache.insert(_entry([5, 5]))  # a fourth entry: the least recently used ([7, 8, 9]) goes
    assert len(cache) == 3 and cache.lookup([7, 8, 9]) is None
    cache.insert(_entry([6] * 6))  # 2 + 3 + 2 + 6 > 10 tokens: old ones go until it fits
    assert cache.tokens <= 10 and cache.lookup([6] * 6) is not None
    cache.insert(_entry([4] * 11))  # longer than the whole cache: not kept
    assert cache.lookup([4] * 11) is None and cache.tokens <= 10


def test_engine_caches_stay_within_their_options():
    reward = shipped("reward", {"cache_tokens": 200, "cache_entries": 3})
    policy = shipped("policy", {"cache_entries": 2})
    score_tree(reward)
    assert 0 < reward.cache.tokens <= 200 and len(reward.cache) <= 3
    expand(policy, depth=2)
    assert len(policy.cache) <= 2


def test_cache_options_are_checked(tiny_dir):
    with pytest.raises(ConfigError, match="unknown hf policy option 'cache_size'"):
        HFPolicy.from_config(EngineConfig(kind="hf", path=str(tiny_dir), options={"cache_size": 3}))
    with pytest.raises(ConfigError, match="cache_tokens must be a positive integer"):
        HFReward.from_config(EngineConfig(kind="hf", path=str(tiny_dir), options={"cache_tokens": 0}))
    with pytest.raises(ConfigError, match="prefix_cache must be true or false"):
        HFReward.from_config(EngineConfig(kind="hf", path=str(tiny_dir), options={"prefix_cache": "no"}))
    policy = HFPolicy.from_config(EngineConfig(kind="hf", path=str(tiny_dir), options={"prefix_cache": False}))
    assert policy.cache is None and policy.info().extra["prefix_cache"] is None


def test_prm_batch_split_by_uncached_length():
    """Short cached children and long misses go to separate forwards; the rewards do not move."""
    reward, plain = shipped("reward"), shipped("reward", OFF)
    parents = [ScoreRequest(PROBLEM, [f"37 + 48 = {80 + i}"]) for i in range(6)]
    run(reward.score(parents))
    batch = [ScoreRequest(PROBLEM, p.steps + ["Then 6."]) for p in parents]
    batch += [ScoreRequest(f"Compute ({i} + 48) * 6 - 12 + 1000 * 3.", ["1 + 1 = 2"]) for i in range(2)]
    seqs = [reward.conv.step_spans(reward.tokenizer, r.problem, r.steps)[0] for r in batch]
    assert len(reward._groups([len(s) - reward._hit(s, 1)[1] for s in seqs])) == 2
    out = run(reward.score(batch))
    for req, got in zip(batch, out):
        [alone] = run(plain.score([req]))
        assert got.rewards == pytest.approx(alone.rewards, abs=1e-4) and got.tokens == alone.tokens
    assert [r.cached_tokens > 0 for r in out] == [True] * 6 + [False, False]


# ------------------------------------------------------------------ a path's read of its prefixes


def assert_prefixes_read_alike(reward, steps, abs_tol=1e-4):
    """Each convention is causal: a scored path's rewards and prefix lengths through step k are
    what scoring the path cut after step k gives (the context scores a chain's prefixes with it)."""
    [whole] = run(reward.score([ScoreRequest(PROBLEM, steps)]))
    assert whole.prefix_tokens is not None and len(whole.prefix_tokens) == len(steps)
    assert whole.prefix_tokens[-1] == whole.tokens
    for k in range(1, len(steps) + 1):
        [cut] = run(reward.score([ScoreRequest(PROBLEM, steps[:k])]))
        assert whole.prefix_tokens[k - 1] == cut.tokens
        assert whole.rewards[:k] == pytest.approx(cut.rewards, abs=abs_tol)


@pytest.mark.parametrize("steps", [STEPS, ["37 + 48 = 85", "Now 85 * 6.", "85 * 6 = 510"]])
def test_implicit_prm_reads_prefixes_as_the_path_does(steps):
    assert_prefixes_read_alike(shipped("reward", OFF), steps)


def test_math_shepherd_prm_reads_prefixes_as_the_path_does(tiny_dir):
    reward = HFReward.from_config(EngineConfig(kind="hf", path=str(tiny_dir), device="cpu", options=OFF))
    assert_prefixes_read_alike(reward, TREE[1][3])


def test_classifier_prm_reads_prefixes_as_the_path_does(tmp_path):
    tok, model, conv = _classifier(tmp_path)
    assert_prefixes_read_alike(HFReward(tok, model, "cpu", conv, prefix_cache=None), TREE[1][3])
    tok.chat_template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}"  # a turn end after the tags
    assert_prefixes_read_alike(HFReward(tok, model, "cpu", conv, prefix_cache=None), TREE[1][3])
