"""Does a PRM check arithmetic? Reference steps against one-digit slips, next to the policy.

    python bench/prm_probe.py [--prm ponder/models/arith-prm] [--policy ponder/models/arith-policy]

For `--pairs` held-out problems (all five levels), a reference solution is cut after a random
step k and scored twice: as is, and with one digit of step k's result changed
(`problems.slip_result`). A PRM that checks arithmetic gives the reference the higher reward at
step k. The same pairs are ranked by the policy's own log-likelihood of step k, the reference
point: the check is within a tiny model's reach when the policy ranks them. Writes
bench/results/prm_probe.json; about a minute on one CPU thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def policy_loglik(model, tok, problem: str, steps: list[str]) -> float:
    """log P(last step | problem, earlier steps) under the policy, as it is prompted."""
    from ponder.actors.hf import plain_prompt

    head = tok(plain_prompt(problem, steps[:-1]), add_special_tokens=False).input_ids
    step = tok(steps[-1], add_special_tokens=False).input_ids
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([head + step])).logits[0].log_softmax(-1)
    return sum(logp[len(head) + j - 1, t].item() for j, t in enumerate(step))


async def probe(prm_dir: str, policy_dir: str, pairs: int, seed: int) -> dict:
    from transformers import AutoTokenizer, LlamaForCausalLM

    from ponder.actors.engine import ScoreRequest
    from ponder.actors.hf import HFReward
    from ponder.config import EngineConfig
    from ponder.tasks.arith.problems import generate, parse, slip_result

    rng = random.Random(seed)
    rows = []
    for p in generate(pairs, seed=seed):
        steps = parse(p.problem).solution_steps()
        k = rng.randrange(len(steps))
        rows.append((p, steps[: k + 1], steps[:k] + [slip_result(steps[k], rng)]))
    prm = HFReward.from_config(EngineConfig(kind="hf", path=prm_dir, max_batch=64))
    scored = await prm.score([ScoreRequest(p.problem, s) for p, good, bad in rows for s in (good, bad)])
    tok = AutoTokenizer.from_pretrained(policy_dir)
    policy = LlamaForCausalLM.from_pretrained(policy_dir).eval()
    out: dict[str, dict[str, list[bool]]] = {}
    for i, (p, good, bad) in enumerate(rows):
        lv = out.setdefault(p.level, {"prm": [], "policy": []})
        lv["prm"].append(scored[2 * i].rewards[-1] > scored[2 * i + 1].rewards[-1])
        lv["policy"].append(policy_loglik(policy, tok, p.problem, good) > policy_loglik(policy, tok, p.problem, bad))
    share = {lv: {who: sum(v) / len(v) for who, v in d.items()} for lv, d in sorted(out.items())}
    every = {who: sum(sum(d[who]) for d in out.values()) / len(rows) for who in ("prm", "policy")}
    return {"prm": _shown(prm_dir), "policy": _shown(policy_dir), "pairs": len(rows), "seed": seed, "by_level": share, "all": every}


def _shown(path: str) -> str:
    """A path as the results file records it: relative to the repository when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prm", default=str(ROOT / "ponder" / "models" / "arith-prm"))
    ap.add_argument("--policy", default=str(ROOT / "ponder" / "models" / "arith-policy"))
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "prm_probe.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = asyncio.run(probe(args.prm, args.policy, args.pairs, args.seed))
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print("level | PRM prefers the reference | policy likelihood prefers it")
    for lv, d in res["by_level"].items():
        print(f"{lv:>5} | {d['prm']:.0%} | {d['policy']:.0%}")
    print(f"  all | {res['all']['prm']:.0%} | {res['all']['policy']:.0%}   ({res['pairs']} pairs)")


if __name__ == "__main__":
    main()
