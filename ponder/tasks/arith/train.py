"""Train the shipped arithmetic policy and PRM: `python -m ponder.tasks.arith.train --out models`.

1. policy: a small `LlamaForCausalLM` over a character tokenizer, trained on reference
   solutions (loss on the solution only), prompted exactly as `HFPolicy` prompts it;
2. PRM (Math-Shepherd recipe, exact labels instead of rollouts): initialised from the policy,
   trained on the policy's own samples for fresh problems, with a step tag after every step
   and the label token ("+" good / "-" bad) predicted at the tag (`prefix_labels`);
3. evaluation on a held-out seeded set (greedy accuracy per level, pass@k, PRM step AUROC),
   written into each model card.

Seeded and CPU-friendly; uses CUDA when present. Stages: `--stage policy|prm|eval|all`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from ponder.actors.hf import PRM_CONFIG_FILE, HFPolicy, HFReward, PRMConvention, plain_prompt
from ponder.actors.engine import ScoreRequest, StepRequest
from ponder.config import MODELS_DIR, REPO_ROOT, EngineConfig
from ponder.tasks.forms import FORM_FILE
from ponder.tasks.arith import tokenizer as chartok
from ponder.tasks.arith.problems import LEVELS, STEP_DELIMITER, generate, make_chain, parse, prefix_labels

# Training levels are drawn with these weights: the hard levels are long and most of the work.
LEVEL_WEIGHTS = {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0}
EVAL_SEED = 12345  # the held-out set; training problems come from other seeds


@dataclass
class ModelSize:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    ffn: int = 384


@dataclass
class TrainArgs:
    out: str = "ponder/models"
    seed: int = 0
    size: ModelSize = None  # type: ignore[assignment]
    policy_steps: int = 2800
    policy_batch: int = 32
    policy_lr: float = 2e-3
    unlock: float = 0.05  # fraction of policy steps between level unlocks
    prm_problems: int = 400  # fresh problems sampled by the policy for PRM data
    prm_samples: int = 4  # policy samples per PRM problem
    prm_temperature: float = 1.0
    prm_steps: int = 8000  # the PRM's further next-token training on reference solutions
    prm_batch: int = 32
    prm_lr: float = 1e-3
    eval_per_level: int = 30
    levels: tuple[int, ...] = (1, 2, 3, 4, 5)  # policy training levels
    threads: int = 1  # the CPUs here are shared; one thread does not stall on a busy sibling


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _lr(step: int, total: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def _pad_right(seqs: list[list[int]], pad: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [pad] * (width - len(s)) for s in seqs])


# ---------------------------------------------------------------- policy


def policy_example(tok, rng: random.Random, level: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) for one reference solution; the prompt is masked out of the loss."""
    chain = make_chain(rng, LEVELS[level])
    prompt = tok(plain_prompt(chain.text(), []), add_special_tokens=False).input_ids
    answer = tok(chain.solution(), add_special_tokens=False).input_ids + [tok.eos_token_id]
    return prompt + answer, [-100] * len(prompt) + answer


def train_policy(args: TrainArgs, out_dir: Path) -> None:
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    device = _device()
    tok = chartok.save_tokenizer(out_dir)
    s = args.size
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=s.hidden,
        intermediate_size=s.ffn,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config).to(device)
    print(f"policy: {model.num_parameters():,} parameters on {device}", flush=True)
    levels = [lv for lv in LEVEL_WEIGHTS if lv in args.levels]
    weights = [LEVEL_WEIGHTS[lv] for lv in levels]

    def level_at(step: int) -> int:
        # curriculum: a new level every `unlock` steps (copying is learnt on the short level-1
        # problems first; mixed from the start, the model stalls); one level per batch
        open_levels = levels[: 1 + int(step / max(1, args.policy_steps * args.unlock))]
        return rng.choices(open_levels, weights[: len(open_levels)])[0]

    t0 = time.time()
    train_lm(model, tok, rng, level_at, args.policy_steps, args.policy_batch, args.policy_lr, out_dir, "policy")
    model.eval()
    model.save_pretrained(str(out_dir))
    _write_json(out_dir / "training.json", {"policy": {**asdict(args), "seconds": round(time.time() - t0)}})


def train_lm(model, tok, rng: random.Random, level_at, steps: int, batch: int, lr: float, out_dir: Path, name: str) -> None:
    """Next-token training on fresh reference solutions, one level (`level_at(step)`) per batch."""
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    t0, avg = time.time(), None
    model.train()
    for step in range(steps):
        level = level_at(step)
        pairs = [policy_example(tok, rng, level) for _ in range(batch)]
        ids = _pad_right([p[0] for p in pairs], tok.pad_token_id).to(device)
        labels = _pad_right([p[1] for p in pairs], -100).to(device)
        mask = (labels != -100) | (ids != tok.pad_token_id)
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr)
        loss = model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        avg = loss.item() if avg is None else 0.95 * avg + 0.05 * loss.item()
        if step % 50 == 0 or step == steps - 1:
            print(f"{name} step {step} level {level} loss {loss.item():.3f} avg {avg:.4f} ({time.time() - t0:.0f}s)", flush=True)
        if step % 250 == 249:  # a checkpoint to look at while training goes on
            model.save_pretrained(str(out_dir))
    model.eval()


# ---------------------------------------------------------------- PRM


async def _sample_trajectories(policy: HFPolicy, problems, n: int, temperature: float, seed: int):
    reqs = [
        StepRequest(p.problem, [], n=n, temperature=temperature, to_end=True, max_steps=8, max_step_tokens=48, seed=seed + i)
        for i, p in enumerate(problems)
    ]
    outs = await policy.generate(reqs)
    data = []
    for p, samples in zip(problems, outs):
        for sample in samples:
            steps = [st.text for st in sample]
            if steps:
                data.append((p.problem, steps, prefix_labels(p.problem, steps)))
    return data


REFERENCE_DIR = "reference"  # the implicit PRM's reference model, inside the PRM dir
REFERENCE_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def fit_beta(qs: list[float], labels: list[bool]) -> float:
    """The beta of sigmoid(beta * q) with the least class-balanced cross-entropy against the
    exact step labels (a grid over 0.01..10, log-spaced): calibration, so rewards read as
    probabilities that the solution is still correct."""
    q = torch.tensor(qs, dtype=torch.float64)
    y = torch.tensor([float(v) for v in labels], dtype=torch.float64)
    w = y * 0.5 / y.mean().clamp(min=1e-6) + (1 - y) * 0.5 / (1 - y.mean()).clamp(min=1e-6)
    grid = torch.logspace(-2, 1, 61, dtype=torch.float64)
    losses = [(w * torch.nn.functional.binary_cross_entropy_with_logits(b * q, y, reduction="none")).sum() for b in grid]
    return float(grid[int(torch.stack(losses).argmin())])


def train_prm(args: TrainArgs, policy_dir: Path, out_dir: Path) -> None:
    """An implicit PRM (Yuan et al. 2412.01981): a copy of the policy trained further on reference
    solutions, read against the policy; the reward after step k is sigmoid(beta * sum of
    log pi_prm / pi_policy over the solution so far). The PRM sees every digit the policy wrote
    and scores each with its own next-token distribution, so a step is checked where it is
    written; beta is fitted to the exact step labels of the policy's own samples."""
    torch.manual_seed(args.seed + 1)
    rng = random.Random(args.seed + 1)
    device = _device()
    tok = AutoTokenizer.from_pretrained(str(policy_dir))
    tok.save_pretrained(str(out_dir))
    ref_dir = out_dir / REFERENCE_DIR
    ref_dir.mkdir(parents=True, exist_ok=True)
    for name in REFERENCE_FILES:
        shutil.copyfile(policy_dir / name, ref_dir / name)
    model = LlamaForCausalLM.from_pretrained(str(policy_dir)).to(device)
    levels = list(args.levels)
    t0 = time.time()
    train_lm(model, tok, rng, lambda step: rng.choice(levels), args.prm_steps, args.prm_batch, args.prm_lr, out_dir, "prm")
    model.save_pretrained(str(out_dir))
    trained = time.time() - t0

    # beta, on the policy's own samples for fresh problems (not the eval set)
    policy = HFPolicy.from_config(EngineConfig(kind="hf", path=str(policy_dir), max_batch=128))
    problems = generate(args.prm_problems, seed=args.seed + 1000, levels=(1, 2, 3, 4, 5, 3, 4, 5))
    data = asyncio.run(_sample_trajectories(policy, problems, args.prm_samples, args.prm_temperature, args.seed))
    reference = LlamaForCausalLM.from_pretrained(str(ref_dir)).to(device).eval()
    prm = HFReward(tok, model.eval(), device, PRMConvention(style="implicit", reference=str(ref_dir)), reference=reference)
    with torch.inference_mode():
        qs = [x for start in range(0, len(data), 64)
              for q, _ in prm.q_values([ScoreRequest(p, s) for p, s, _ in data[start : start + 64]]) for x in q.tolist()]
    labels = [lab for _, _, labs in data for lab in labs]
    beta = fit_beta(qs, labels)
    print(f"PRM beta {beta:.3g} on {len(labels)} sampled steps ({sum(labels) / len(labels):.0%} good), "
          f"step AUROC {auroc(qs, labels):.3f}", flush=True)
    _write_json(out_dir / PRM_CONFIG_FILE, {"style": "implicit", "reference": REFERENCE_DIR, "beta": beta, "step_separator": STEP_DELIMITER})
    _write_json(
        out_dir / "training.json",
        {"prm": {**asdict(args), "trajectories": len(data), "steps": len(labels), "good_fraction": sum(labels) / len(labels),
                 "beta": beta, "seconds": round(trained)}},
    )


# ---------------------------------------------------------------- evaluation


def auroc(scores: list[float], labels: list[bool]) -> float:
    """P(a random good step scores above a random bad one), ties counting half."""
    pos = [s for s, lab in zip(scores, labels) if lab]
    neg = [s for s, lab in zip(scores, labels) if not lab]
    if not pos or not neg:
        return float("nan")
    ranked = sorted((s, i) for i, s in enumerate(pos + neg))
    ranks = [0.0] * len(ranked)
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[ranked[k][1]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(ranks[: len(pos)])
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


async def _evaluate(policy_dir: Path, prm_dir: Path | None, per_level: int, k: int) -> dict:
    policy = HFPolicy.from_config(EngineConfig(kind="hf", path=str(policy_dir), max_batch=128))
    problems = generate(per_level * 5, seed=EVAL_SEED)
    greedy = await policy.generate([StepRequest(p.problem, [], n=1, temperature=0.0, to_end=True, max_steps=8, max_step_tokens=48) for p in problems])
    sampled = await policy.generate(
        [StepRequest(p.problem, [], n=k, temperature=0.8, to_end=True, max_steps=8, max_step_tokens=48, seed=i) for i, p in enumerate(problems)]
    )
    per_level_stats: dict[str, dict] = {}
    step_ok: dict[str, list[bool]] = {}
    scores, labels = [], []
    reward = HFReward.from_config(EngineConfig(kind="hf", path=str(prm_dir), max_batch=128)) if prm_dir else None
    for p, g, samples in zip(problems, greedy, sampled):
        st = per_level_stats.setdefault(p.level, {"greedy": 0, f"pass@{k}": 0, "sample@1": 0.0, "n": 0})
        st["n"] += 1
        st["greedy"] += _correct(p, g[0])
        oks = [_correct(p, s) for s in samples]
        st[f"pass@{k}"] += any(oks)
        st["sample@1"] += sum(oks) / len(oks)
        for s in samples:
            step_ok.setdefault(p.level, []).extend(prefix_labels(p.problem, [x.text for x in s]))
    if reward is not None:
        trajs = [(p.problem, [x.text for x in s]) for p, samples in zip(problems, sampled) for s in samples if s]
        results = await reward.score([ScoreRequest(prob, steps) for prob, steps in trajs])
        for (prob, steps), r in zip(trajs, results):
            scores.extend(r.rewards)
            labels.extend(prefix_labels(prob, steps))
    out = {
        "eval_seed": EVAL_SEED,
        "per_level": per_level,
        "levels": {
            lv: {
                "greedy_accuracy": st["greedy"] / st["n"],
                f"pass@{k}": st[f"pass@{k}"] / st["n"],
                "sample_accuracy_T0.8": st["sample@1"] / st["n"],
                "step_prefix_accuracy_T0.8": sum(step_ok[lv]) / max(1, len(step_ok[lv])),
            }
            for lv, st in sorted(per_level_stats.items())
        },
    }
    if reward is not None:
        out["prm_step_auroc"] = auroc(scores, labels)
        out["prm_steps_scored"] = len(scores)
        out["prm_good_fraction"] = sum(labels) / max(1, len(labels))
    return out


def _correct(problem, steps) -> bool:
    texts = [s.text for s in steps]
    return len(texts) == len(parse(problem.problem).ops) and all(prefix_labels(problem.problem, texts))


def evaluate(args: TrainArgs, policy_dir: Path, prm_dir: Path | None, k: int = 16) -> dict:
    t0 = time.time()
    out = asyncio.run(_evaluate(policy_dir, prm_dir, args.eval_per_level, k))
    out["seconds"] = round(time.time() - t0)
    print(json.dumps(out, indent=1), flush=True)
    return out


def _write_json(path: Path, data: dict) -> None:
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(data)
    path.write_text(json.dumps(old, indent=1, default=str) + "\n")


REPRODUCE = "python -m ponder.tasks.arith.train --out models"
REPRODUCED = {
    "policy": "Seeded and single-threaded: rerun from scratch on a 2-core x86 CPU with torch 2.13.0, the command gave "
              "these weights bit for bit (checked 2026-11-28).",
    "prm": "Seeded. The shipped PRM was trained with `--stage prm --threads 2` on the shipped policy (not yet rerun "
           "from scratch; a run with another thread count sums in another order, so its weights differ in the last bits).",
}


def _table(ev: dict) -> str:
    k = next((key for key in next(iter(ev["levels"].values())) if key.startswith("pass@")), "pass@16")
    rows = ["| level | greedy accuracy | sample accuracy (T=0.8) | step accuracy (T=0.8) | " + k + " (T=0.8) |", "|---|---|---|---|---|"]
    for lv, st in ev["levels"].items():
        rows.append(
            f"| {lv} | {st['greedy_accuracy']:.0%} | {st['sample_accuracy_T0.8']:.0%} | {st['step_prefix_accuracy_T0.8']:.0%} | {st[k]:.0%} |"
        )
    return "\n".join(rows)


def write_cards(policy_dir: Path, prm_dir: Path) -> None:
    """Model cards from the recorded training settings and evaluation."""
    from transformers import AutoConfig

    for d, role in ((policy_dir, "policy"), (prm_dir, "prm")):
        if not (d / "config.json").exists():
            continue
        cfg = AutoConfig.from_pretrained(str(d))
        info = json.loads((d / "training.json").read_text())
        ev = json.loads((policy_dir / "eval.json").read_text()) if (policy_dir / "eval.json").exists() else None
        params = sum(f.stat().st_size for f in d.glob("*.safetensors")) // 4  # float32 weights
        arch = (
            f"`LlamaForCausalLM`, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, {cfg.num_attention_heads} heads, "
            f"MLP {cfg.intermediate_size}, tied embeddings, {params:,} parameters (float32, ~{params * 4 / 2**20:.1f} MB); "
            f"character-level tokenizer (`tokenizer.json`, {cfg.vocab_size} tokens: printable ASCII, `<pad>`, `</s>`, `<unk>`, `<step>`)."
        )
        pol = info.get("policy") or json.loads((policy_dir / "training.json").read_text())["policy"]
        lines = [f"# arith-{role}", ""]
        if role == "policy":
            lines += [
                "The embedded default policy of ponder: a tiny model that solves the built-in arithmetic task",
                "(`ponder.tasks.arith.problems`) one step per operation, so that search has something to do:",
                "good on easy levels, often wrong on hard ones (long chains, 3- and 4-digit carries and products),",
                "and diverse when sampled. Served by `ponder.actors.hf.HFPolicy` (`EngineConfig(kind=\"hf\", path=...)`).",
                "",
                "## Architecture",
                "",
                arch,
                "",
                "## Prompt format",
                "",
                "No chat template. The prompt is `ponder.actors.hf.plain_prompt`: the problem, then each step so far,",
                "each followed by the step delimiter `\"\\n\\n\"`; the model writes the next step and stops at the",
                "delimiter, and writes `</s>` after the final step (which ends with `The answer is \\boxed{N}.`).",
                "",
                "## Training",
                "",
                f"Reference solutions of freshly generated problems (levels 1-5, weights {LEVEL_WEIGHTS}), one level per",
                f"batch, a new level unlocked every {pol['unlock']:.0%} of the steps (curriculum),",
                f"loss on the solution and `</s>` only (not the prompt). {pol['policy_steps']} steps of batch",
                f"{pol['policy_batch']} (~{pol['policy_steps'] * pol['policy_batch']:,} problems), AdamW, peak lr {pol['policy_lr']},",
                f"cosine schedule, seed {pol['seed']}, {pol.get('seconds', '?')} s on {pol.get('device', 'CPU (2 shared cores)')}.",
            ]
        else:
            prm = info["prm"]
            lines += [
                "The embedded default process reward model of ponder, for the built-in arithmetic task.",
                "Served by `ponder.actors.hf.HFReward` (`EngineConfig(kind=\"hf\", path=...)`).",
                "",
                "## Convention: implicit PRM",
                "",
                "An implicit process reward model (Yuan et al. 2024, arXiv 2412.01981; the EurusPRM / PRIME form): a plain",
                "causal LM read against a reference LM, the policy, shipped as a copy in `reference/`. The input is the",
                "policy's own prompt (`ponder.actors.hf.plain_prompt`: the problem, then each step followed by `\"\\n\\n\"`);",
                "the reward after step k is sigmoid(beta * q_k), q_k = the sum of log pi_prm(token) - log pi_policy(token)",
                "over the solution's tokens through step k's delimiter. `prm_config.json` holds `style: implicit`,",
                "`reference` (relative to this dir) and `beta`. Why this one: the PRM scores every digit where it is",
                "written, with its own next-token distribution, so a slipped digit or carry costs reward at that",
                "token. A Math-Shepherd head (label tokens at a step tag) initialised from the policy, trained on the",
                "same data, did not learn to compare digits: it ranked a right step above a one-digit slip 55% of the",
                "time (`bench/prm_probe.py`). Served by the `hf` engine (the `vllm` and `openai` engines serve",
                "tag-reading PRMs and refuse this one with that message).",
                "",
                "## Architecture",
                "",
                arch + " The reference model in `reference/` has the same architecture (it is `arith-policy`).",
                "",
                "## Training",
                "",
                f"Initialised from `arith-policy`, then {prm['prm_steps']} more next-token steps of batch {prm['prm_batch']} on",
                "reference solutions of fresh problems (levels 1-5, one level per batch, uniform), AdamW, peak lr",
                f"{prm['prm_lr']}, cosine schedule, seed {prm['seed']} + 1, {prm.get('seconds', '?')} s with {prm.get('threads', 1)} threads: the PRM is the",
                "policy trained further, a better calculator, and its rewards mark where the policy's digits disagree",
                f"with it. beta = {prm['beta']:.3g} is fitted (least class-balanced cross-entropy, log grid 0.01-10) to the",
                f"exact step labels of the policy's own samples (T={prm['prm_temperature']}, {prm['prm_samples']} per problem) for",
                f"{prm['prm_problems']} fresh problems (seed {prm['seed']} + 1000, levels 1-5 with 3-5 twice as often): {prm['trajectories']} trajectories,",
                f"{prm['steps']} steps, {prm['good_fraction']:.0%} labelled good by `ponder.tasks.arith.problems.prefix_labels` (a step is good",
                "while every step so far is exactly right). Fine-tuning the PRM itself on those labels (cross-entropy on",
                "sigmoid(beta * q_k)) was tried and left out: it raised AUROC on held-out samples but taught the model",
                "confident wrong digits (after `173 + 758 = 9` it put probability 1.00 on `2`).",
            ]
        lines += ["", "## Reproduce", "", "```", REPRODUCE, "```", "", REPRODUCED[role], "", "## Evaluation", ""]
        if ev:
            lines += [
                f"Held-out problems: `ponder.tasks.arith.problems.generate({ev['per_level'] * 5}, seed={ev['eval_seed']})`,",
                f"{ev['per_level']} per level; a solution counts when every step is exactly right. Step accuracy is the",
                "fraction of sampled steps still correct (prefix labels).",
                "",
                _table(ev),
                "",
            ]
            if "prm_step_auroc" in ev:
                lines += [
                    "PRM step AUROC against exact prefix labels on the policy's T=0.8 samples of the same set:",
                    f"**{ev['prm_step_auroc']:.3f}** ({ev['prm_steps_scored']} steps, {ev['prm_good_fraction']:.0%} good).",
                    "",
                ]
        if policy_dir.resolve() == (MODELS_DIR / "arith-policy").resolve():  # what `ponder eval` runs by default
            lines += _search_section(REPO_ROOT / "bench" / "results" / "arith_eval.json")
        card = d / "README.md"
        old = card.read_text() if card.exists() else ""
        kept = [k for k in (_kept_section(old, h) for h in ("## What it reads", "## Limitations")) if k]
        card.write_text("\n".join(lines) + "\n" + "".join(f"{k}\n\n" for k in kept).rstrip("\n") + ("\n" if kept else ""))
        (d / FORM_FILE).write_text(json.dumps({"problem_form": "arith"}) + "\n")


def _kept_section(text: str, heading: str) -> str:
    """A hand-written section of an existing card (to its end or the next heading of its
    level): regenerating the card from measurements keeps what was learnt about the model."""
    start = text.find("\n" + heading + "\n")
    if start < 0:
        return ""
    body = text[start + 1 :]
    end = body.find("\n## ", len(heading))
    return (body if end < 0 else body[:end]).strip()


def _search_section(path: Path) -> list[str]:
    """The search table bench/arith_eval.py measured with the shipped models, when it is there
    (only their cards get it: the bench runs the default models, not a fresh training run)."""
    if not path.exists():
        return []
    res = json.loads(path.read_text())
    rows = ["| row | budget | problems | easy (L1) | medium (L3) | hard (L5) | all | mean tokens |", "|---|---|---|---|---|---|---|---|"]
    for r in res["search_subset"]:
        bins = " | ".join("-" if v is None else f"{100 * v:.0f}%" for v in r["by_bin"].values())
        rows.append(f"| {r['row']} | {r['budget']} | {r['problems']} | {bins} | {100 * r['accuracy']:.0f}% | {r['mean_tokens']:.0f} |")
    return [
        "## Search with the PRM",
        "",
        f"`python bench/arith_eval.py` on `{res['dataset']}` (every row on the first {res['search_problems']} problems;",
        "the full table, with cheap rows on every problem, is in `bench/results/arith_eval.md`):",
        "",
        *rows,
        "",
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="ponder/models")
    ap.add_argument("--stage", choices=["policy", "prm", "eval", "all"], default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=ModelSize.hidden)
    ap.add_argument("--layers", type=int, default=ModelSize.layers)
    ap.add_argument("--heads", type=int, default=ModelSize.heads)
    ap.add_argument("--ffn", type=int, default=ModelSize.ffn)
    for name in ("policy_steps", "policy_batch", "prm_problems", "prm_samples", "prm_steps", "prm_batch", "eval_per_level", "threads"):
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(TrainArgs, name))
    for name in ("policy_lr", "prm_lr", "prm_temperature", "unlock"):
        ap.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(TrainArgs, name))
    ap.add_argument("--levels", type=lambda v: tuple(int(x) for x in v.split(",")), default=TrainArgs.levels)
    ns = ap.parse_args(argv)
    size = ModelSize(ns.hidden, ns.layers, ns.heads, ns.ffn)
    args = TrainArgs(**{k: v for k, v in vars(ns).items() if k in TrainArgs.__dataclass_fields__ and k != "size"}, size=size)
    torch.set_num_threads(args.threads)
    stage = ns.stage
    out = Path(args.out)
    policy_dir, prm_dir = out / "arith-policy", out / "arith-prm"
    policy_dir.mkdir(parents=True, exist_ok=True)
    prm_dir.mkdir(parents=True, exist_ok=True)
    if stage in ("policy", "all"):
        train_policy(args, policy_dir)
    if stage in ("prm", "all"):
        train_prm(args, policy_dir, prm_dir)
    if stage in ("eval", "all"):
        res = evaluate(args, policy_dir, prm_dir if (prm_dir / "config.json").exists() else None)
        _write_json(policy_dir / "eval.json", res)
    write_cards(policy_dir, prm_dir)


if __name__ == "__main__":
    main()
