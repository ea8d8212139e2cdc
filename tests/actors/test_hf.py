"""The HF engines on a tiny Llama fitted to one solution (see hf_fixtures)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from ponder.actors.engine import PolicyEngine, RewardEngine, ScoreRequest, StepRequest
from ponder.actors.hf import (
    DEFAULT_PRM_SYSTEM,
    PRM_CONFIG_FILE,
    HFPolicy,
    HFReward,
    PRMConvention,
    load_prm_convention,
    plain_prompt,
    render_prompt,
)
from ponder.config import ConfigError, EngineConfig
from ponder.tasks.arith import tokenizer as chartok
from tests.actors.hf_fixtures import PROBLEM, SOLUTION, build_tiny_model

STEPS = SOLUTION.split("\n\n")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def policy(model_dir):
    return HFPolicy.from_config(EngineConfig(kind="hf", path=str(model_dir), device="cpu", max_batch=4))


@pytest.fixture(scope="module")
def reward(model_dir):
    return HFReward.from_config(EngineConfig(kind="hf", path=str(model_dir), device="cpu"))


def texts(samples):
    return [[s.text for s in steps] for steps in samples]


async def test_protocols_and_info(policy, reward):
    assert isinstance(policy, PolicyEngine) and isinstance(reward, RewardEngine)
    assert policy.info().kind == "hf" and policy.info().extra["parameters"] > 0
    assert reward.info().extra["style"] == "math-shepherd"


def test_plain_prompt_without_chat_template(policy):
    assert render_prompt(policy.tokenizer, "Q", ["a", "b"]) == plain_prompt("Q", ["a", "b"]) == "Q\n\na\n\nb\n\n"


async def test_greedy_stops_at_delimiter(policy):
    [[first]], [[last]] = await policy.generate(
        [StepRequest(PROBLEM, [], temperature=0.0), StepRequest(PROBLEM, STEPS[:1], temperature=0.0)]
    )
    assert first.text == STEPS[0] and not first.finished
    assert first.tokens == len(STEPS[0]) + 2  # characters plus the two-newline delimiter
    assert last.text == STEPS[1] and last.finished
    assert last.tokens == len(STEPS[1]) + 1  # characters plus end of sequence


async def test_n_samples_and_shapes(policy):
    out = await policy.generate([StepRequest(PROBLEM, [], n=3, temperature=2.0, seed=1), StepRequest(PROBLEM, [], n=2, seed=2)])
    assert [len(r) for r in out] == [3, 2]
    for samples in out:
        for steps in samples:
            assert len(steps) == 1 and "\n\n" not in steps[0].text and steps[0].tokens > 0


async def test_seeded_sampling_is_deterministic_and_diverse(policy):
    req = StepRequest(PROBLEM, [], n=6, temperature=3.0, seed=7, max_step_tokens=12)
    a, b = await policy.generate([req]), await policy.generate([req])
    assert texts(a[0]) == texts(b[0])
    assert len({t[0] for t in texts(a[0])}) > 1  # hot sampling: the samples differ
    other = await policy.generate([StepRequest(PROBLEM, [], n=6, temperature=3.0, seed=8, max_step_tokens=12)])
    assert texts(other[0]) != texts(a[0])


@pytest.mark.parametrize("temperature", [0.0, 3.0])
async def test_batch_composition_independence(policy, temperature):
    req = StepRequest(PROBLEM, STEPS[:1], n=2, temperature=temperature, seed=3, max_step_tokens=20)
    alone = await policy.generate([req])
    # in a larger batch (chunked at max_batch=4), behind prompts of other lengths
    others = [StepRequest("Compute 1 + 2.", [], n=3, temperature=1.5, seed=9), StepRequest(PROBLEM, [], n=2, seed=4)]
    mixed = await policy.generate([others[0], req, others[1]])
    assert texts(mixed[1]) == texts(alone[0])
    assert [s.tokens for steps in mixed[1] for s in steps] == [s.tokens for steps in alone[0] for s in steps]


async def test_max_step_tokens(policy):
    [[[step]]] = await policy.generate([StepRequest(PROBLEM, [], temperature=0.0, max_step_tokens=5)])
    assert step.tokens == 5 and step.text == STEPS[0][:5] and not step.finished


async def test_to_end_splits_steps(policy):
    [[steps]] = await policy.generate([StepRequest(PROBLEM, [], temperature=0.0, to_end=True)])
    assert [s.text for s in steps] == STEPS
    assert [s.finished for s in steps] == [False, True]
    [[capped]] = await policy.generate([StepRequest(PROBLEM, [], temperature=0.0, to_end=True, max_steps=1)])
    assert [s.text for s in capped] == STEPS[:1]


def test_bad_model_dir(tmp_path):
    with pytest.raises(ConfigError, match="missing or has no config.json"):
        HFPolicy.from_config(EngineConfig(kind="hf", path=str(tmp_path / "nope")))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load model"):
        HFPolicy.from_config(EngineConfig(kind="hf", path=str(tmp_path)))
    with pytest.raises(ConfigError, match="needs a model directory"):
        HFReward.from_config(EngineConfig(kind="hf", path=None))


def test_reward_needs_prm_config(model_dir, tmp_path):
    import shutil

    copy = tmp_path / "prm"
    shutil.copytree(model_dir, copy)
    (copy / "prm_config.json").unlink()
    with pytest.raises(ConfigError, match="prm_config.json"):
        HFReward.from_config(EngineConfig(kind="hf", path=str(copy)))
    (copy / "prm_config.json").write_text(json.dumps({"step_tag": "+", "step_tag_id": 4, "good_token_id": 1, "bad_token_id": 2}))
    with pytest.raises(ConfigError, match="is not token"):
        HFReward.from_config(EngineConfig(kind="hf", path=str(copy)))


async def test_reward_one_per_step(reward):
    reqs = [ScoreRequest(PROBLEM, STEPS), ScoreRequest(PROBLEM, STEPS[:1]), ScoreRequest(PROBLEM, ["1 + 1 = 3"] * 3), ScoreRequest(PROBLEM, [])]
    out = await reward.score(reqs)
    assert [len(r.rewards) for r in out] == [2, 1, 3, 0]
    assert all(0.0 <= x <= 1.0 for r in out for x in r.rewards)
    assert out[0].tokens > out[1].tokens > out[3].tokens > 0
    # causal: a step's reward depends only on the prefix, so padding and later steps do not move it
    assert out[0].rewards[0] == pytest.approx(out[1].rewards[0], abs=1e-5)
    [alone] = await reward.score([ScoreRequest(PROBLEM, ["1 + 1 = 3"] * 3)])
    assert alone.rewards == pytest.approx(out[2].rewards, abs=1e-5)


# ------------------------------------------------------------------ the PRM convention file


def test_prm_style_errors(tmp_path):
    tok = chartok.save_tokenizer(tmp_path)
    (tmp_path / PRM_CONFIG_FILE).write_text(json.dumps({"style": "ranker", "step_tag": "<step>", "step_tag_id": 1}))
    with pytest.raises(ConfigError, match="unsupported PRM style 'ranker'"):
        load_prm_convention(tmp_path, tok)
    (tmp_path / PRM_CONFIG_FILE).write_text(json.dumps({"style": "math-shepherd", "step_tag": "<step>",
                                                          "step_tag_id": tok.convert_tokens_to_ids("<step>")}))
    with pytest.raises(ConfigError, match="good_token_id"):
        load_prm_convention(tmp_path, tok)


def test_classifier_prm_input_is_chat_formatted(tmp_path):
    tok = chartok.save_tokenizer(tmp_path)
    tok.chat_template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}"
    conv = PRMConvention(step_tag="<step>", step_tag_id=tok.convert_tokens_to_ids("<step>"), style="classifier")
    text = tok.decode(conv.input_ids(tok, "Compute 1 + 2.", ["1 + 2 = 3<step>", "The answer is 3."]))
    assert text == f"[system]{DEFAULT_PRM_SYSTEM}\n[user]Compute 1 + 2.\n[assistant]1 + 2 = 3<step>The answer is 3.<step>\n"


def test_the_hf_engine_names_a_classifier_prm_it_does_not_serve(model_dir, tmp_path):
    d = Path(shutil.copytree(model_dir, tmp_path / "cls"))
    tag = json.loads((d / PRM_CONFIG_FILE).read_text())["step_tag_id"]
    (d / PRM_CONFIG_FILE).write_text(json.dumps({"style": "classifier", "step_tag": chartok.STEP_TAG, "step_tag_id": tag}))
    with pytest.raises(ConfigError, match="'classifier' PRM.*vllm engine"):
        HFReward.from_config(EngineConfig(kind="hf", path=str(d), device="cpu"))


# ------------------------------------------------------------------ implicit PRMs


def _implicit_dir(tmp_path: Path, prm: Path, reference: Path, beta: float = 1.0) -> Path:
    d = Path(shutil.copytree(prm, tmp_path / "implicit"))
    shutil.copytree(reference, d / "reference")
    (d / PRM_CONFIG_FILE).write_text(json.dumps({"style": "implicit", "reference": "reference", "beta": beta}))
    return d


def test_implicit_step_spans_cover_each_step_and_its_delimiter(tmp_path):
    tok = chartok.save_tokenizer(tmp_path)
    conv = PRMConvention(style="implicit", reference="unused")
    ids, first, ends = conv.step_spans(tok, PROBLEM, STEPS)
    assert tok.decode(ids[:first]) == plain_prompt(PROBLEM, [])
    assert [tok.decode(ids[a:b]) for a, b in zip([first, *ends], ends)] == [s + "\n\n" for s in STEPS]
    assert ends[-1] == len(ids)
    tok.chat_template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}{{ '[assistant]' }}"
    ids, first, ends = conv.step_spans(tok, PROBLEM, STEPS[:1])
    assert tok.decode(ids[:first]).endswith("[assistant]") and tok.decode(ids[first:ends[0]]) == STEPS[0] + "\n\n"


async def test_implicit_prm_read_against_itself_gives_one_half(model_dir, tmp_path):
    reward = HFReward.from_config(EngineConfig(kind="hf", path=str(_implicit_dir(tmp_path, model_dir, model_dir)), device="cpu"))
    assert reward.info().extra["style"] == "implicit"
    [out] = await reward.score([ScoreRequest(PROBLEM, STEPS)])
    assert out.rewards == [0.5, 0.5]  # log pi - log pi_ref = 0 on every token
    ids, _, _ = reward.conv.step_spans(reward.tokenizer, PROBLEM, STEPS)
    assert out.tokens == 2 * len(ids)  # both models read the text


async def test_implicit_reward_is_the_sigmoid_of_the_summed_log_ratio(model_dir, tmp_path):
    import torch
    from transformers import LlamaForCausalLM

    weak = build_tiny_model(tmp_path / "weak", fit_steps=5)
    d = _implicit_dir(tmp_path, model_dir, weak, beta=0.5)
    reward = HFReward.from_config(EngineConfig(kind="hf", path=str(d), device="cpu"))
    wrong = ["37 + 48 = 95", "95 * 6 = 570\nThe answer is \\boxed{570}."]
    out = await reward.score([ScoreRequest(PROBLEM, STEPS), ScoreRequest(PROBLEM, wrong[:1])])
    ids, first, ends = reward.conv.step_spans(reward.tokenizer, PROBLEM, STEPS)

    def logp(path):
        with torch.no_grad():
            lp = LlamaForCausalLM.from_pretrained(str(path))(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
        return [lp[j - 1, ids[j]].item() for j in range(len(ids))]

    ratio = [a - b for a, b in zip(logp(d), logp(weak))]
    expected = [1 / (1 + math.exp(-0.5 * sum(ratio[first:e]))) for e in ends]
    assert out[0].rewards == pytest.approx(expected, abs=1e-4)
    # the PRM was fitted to the right solution: it rates that first step above a wrong one
    assert out[0].rewards[0] > out[1].rewards[0]
    [alone] = await reward.score([ScoreRequest(PROBLEM, wrong[:1])])  # padding does not move a score
    assert alone.rewards == pytest.approx(out[1].rewards, abs=1e-5)


def test_implicit_prm_config_errors(model_dir, tmp_path):
    tok = chartok.save_tokenizer(tmp_path)
    (tmp_path / PRM_CONFIG_FILE).write_text(json.dumps({"style": "implicit"}))
    with pytest.raises(ConfigError, match="lacks reference"):
        load_prm_convention(tmp_path, tok)
    (tmp_path / PRM_CONFIG_FILE).write_text(json.dumps({"style": "implicit", "reference": "nowhere"}))
    with pytest.raises(ConfigError, match="reference model .*nowhere is missing"):
        load_prm_convention(tmp_path, tok)
    (tmp_path / PRM_CONFIG_FILE).write_text(json.dumps({"style": "implicit", "reference": str(model_dir), "beta": -1}))
    with pytest.raises(ConfigError, match="beta must be a positive number"):
        load_prm_convention(tmp_path, tok)
    (tmp_path / PRM_CONFIG_FILE).write_text(json.dumps({"style": "implicit", "reference": str(model_dir), "beta": 2}))
    conv = load_prm_convention(tmp_path, tok)
    assert (conv.style, conv.reference, conv.beta) == ("implicit", str(model_dir), 2.0)


def test_generation_uses_no_deprecated_transformers_api():
    """transformers 5.x deprecates `past_key_values` (removed in 5.40): the engine must not warn."""
    import asyncio
    import warnings

    from ponder.actors.engine import StepRequest
    from ponder.actors.hf import HFPolicy
    from ponder.config import MODELS_DIR, EngineConfig

    policy = HFPolicy.from_config(EngineConfig(kind="hf", path=str(MODELS_DIR / "arith-policy"), device="cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        out = asyncio.run(policy.generate([StepRequest(problem="Compute (3 + 4) * 2.", steps=[], n=2, temperature=0.8,
                                                       max_step_tokens=16, seed=1)]))
    assert len(out[0]) == 2 and all(steps for steps in out[0])
