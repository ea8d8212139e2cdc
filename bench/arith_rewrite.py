"""The shipped arithmetic models on held-out arithmetic in other wording, as given and rewritten.

    python bench/arith_rewrite.py            # writes bench/results/arith_rewrite.json

Generates seeded arithmetic in the style of reasoning-gym's basic_arithmetic, chain_sum and
products tasks (usual operator precedence, minimal parentheses, negatives and exact division in
a few, varied phrasings and symbols; sizes like the task's levels: up to 6 operations, operands
up to 3 digits), runs the shipped policy + PRM in-process (one CPU thread) on (a) each problem
as worded and (b) its `ponder.tasks.arith.rewrite.to_trained_form` rewrite where one exists,
greedy and weighted best-of-4, and reports how many convert and the accuracy of each. Answers
come from the generator's own expression trees (exact rationals), not from the rewriter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the CPUs are shared; one thread

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEMPLATES = [
    "What is {e}?", "Calculate {e}.", "Compute {e}.", "Evaluate {e}.", "Find the value of {e}.",
    "{e} =", "What is the value of {e}?", "Work out {e}.", "Solve {e}.", "Evaluate the expression: {e}",
    "{e} = ?", "Calculate {e}",
]  # fmt: skip
FAMILY_TEMPLATES = {
    "chain_sum": ["State the final answer to the following arithmetic problem: {e} ="],
    "products": ["Solve the following multiplication: {e} ="],
}
PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
ROWS = [("greedy", "greedy", "n=1"), ("weighted BoN@4", "best_of_n", "n=4")]
KINDS = ("original", "rewritten")


def value(node) -> Fraction:
    if isinstance(node, int):
        return Fraction(node)
    op, a, b = node
    x, y = value(a), value(b)
    return {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else Fraction(10**9)}[op]


def show(node, parent: int = 0, right: bool = False) -> str:
    """Minimal parentheses under the usual precedence, left associative."""
    if isinstance(node, int):
        return str(node)
    op, a, b = node
    s = f"{show(a, PREC[op])} {op} {show(b, PREC[op], True)}"
    need = PREC[op] < parent or (right and PREC[op] == parent)
    return f"({s})" if need else s


def number(rng: random.Random, max_digits: int, negative: float = 0.0) -> int:
    n = rng.randint(1, 10 ** rng.randint(1, max_digits) - 1)
    return -n if rng.random() < negative else n


def tree(rng: random.Random, n_ops: int, ops: str, max_digits: int, negative: float):
    """A random expression tree with `n_ops` operations (random shape)."""
    if n_ops == 0:
        return number(rng, max_digits, negative)
    left = rng.randint(0, n_ops - 1)
    op = rng.choice(ops)
    return (op, tree(rng, left, ops, max_digits, negative), tree(rng, n_ops - 1 - left, ops, max_digits, negative))


def flat(rng: random.Random, n_ops: int, ops: str, max_digits: int, mul_digits: int | None = None):
    """A left-to-right chain as written without parentheses (chain sums, products)."""
    node = number(rng, max_digits)
    for _ in range(n_ops):
        node = (rng.choice(ops), node, number(rng, mul_digits or max_digits))
    return node


def make(rng: random.Random, family: str):
    for _ in range(1000):
        if family == "precedence":  # basic_arithmetic: + - * (/ now and then), any shape
            ops = "+-*/" if rng.random() < 0.25 else "+-*"
            node = tree(rng, rng.randint(2, 4), ops, 2, negative=0.1)
        elif family == "chain_sum":
            node = flat(rng, rng.randint(2, 6), "+-", rng.randint(2, 3))
        else:  # products: a chain of products, now and then a sum around it
            node = flat(rng, rng.randint(1, 3), "*", 2, mul_digits=1)
            if rng.random() < 0.5:
                node = ("+", number(rng, 2), node) if rng.random() < 0.5 else ("-", node, number(rng, 2))
        v = value(node)
        if v.denominator == 1 and abs(v) < 10**5:
            return node, int(v)
    raise RuntimeError("no integer problem found")


def wording(rng: random.Random, family: str, node) -> str:
    e = show(node)
    if rng.random() < 0.25:
        e = e.replace("*", "×").replace("/", "÷").replace(" - ", " − ")
    if rng.random() < 0.2:
        e = e.replace(" ", "")
    return rng.choice(TEMPLATES + FAMILY_TEMPLATES.get(family, []) * 4).format(e=e)


def held_out(n_per_family: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for family in ("precedence", "chain_sum", "products"):
        for i in range(n_per_family):
            node, answer = make(rng, family)
            text = wording(rng, family, node)
            out.append({"id": f"{family}-{i}", "family": family, "problem": text, "answer": str(answer)})
    return out


async def run_all(runner, items: list[dict], field: str, strategy: str, budget: str) -> list[bool]:
    from ponder.search.types import Problem
    from ponder.tasks.grading import grade

    async def one(item):
        r = await runner.solve(Problem(item["id"], item[field], item["answer"]), strategy, budget)
        return r.answer is not None and grade(r.answer, item["answer"])

    return list(await asyncio.gather(*(one(it) for it in items)))


async def run_rows(runner, items: list[dict], conv: list[dict]) -> dict:
    results = {}
    for label, strategy, budget in ROWS:
        t = time.time()
        original = await run_all(runner, items, "problem", strategy, budget)
        rewritten = await run_all(runner, conv, "rewrite", strategy, budget)
        results[label] = {
            "original": dict(zip((it["id"] for it in items), original)),
            "rewritten": dict(zip((it["id"] for it in conv), rewritten)),
            "seconds": round(time.time() - t, 1),
        }
        print(f"{label}: {results[label]['seconds']}s", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-family", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "arith_rewrite.json"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from ponder.actors.factory import build_policy, build_reward
    from ponder.config import PonderConfig
    from ponder.scheduler.runner import Runner
    from ponder.tasks.arith.rewrite import assess

    t0 = time.time()
    items = held_out(args.per_family, args.seed)
    for item in items:
        a = assess(item["problem"])
        item.update(rewrite=a.text if a.in_form else None, reason=a.reason, notes=list(a.notes))
    cfg = PonderConfig.from_dict({"cluster": {"address": "inprocess"}})
    runner = Runner(build_policy(cfg.policy), build_reward(cfg.reward), cfg)
    conv = [it for it in items if it["rewrite"] is not None]
    results = asyncio.run(run_rows(runner, items, conv))
    def acc(label, kind, subset):
        hits = [results[label][kind][it["id"]] for it in subset]
        return {"right": sum(hits), "of": len(hits)}

    groups = {fam: [it for it in items if it["family"] == fam] for fam in ("precedence", "chain_sum", "products")}
    groups["all"] = items
    table = []
    for name, group in groups.items():
        c = [it for it in group if it["rewrite"] is not None]
        in_range = [it for it in c if not it["notes"]]
        row = {"group": name, "problems": len(group), "convertible": len(c), "convertible_in_range": len(in_range)}
        for label, _, _ in ROWS:
            row[label] = {
                "original_all": acc(label, "original", group),
                "original_convertible": acc(label, "original", c),
                "rewritten_convertible": acc(label, "rewritten", c),
                "rewritten_in_range": acc(label, "rewritten", in_range),
            }
        table.append(row)
    by_note = {}  # rewritten problems outside the training range, by what is outside it
    for note in sorted({n for it in conv for n in it["notes"]}):
        with_note = [it for it in conv if note in it["notes"]]
        by_note[note] = {label: acc(label, "rewritten", with_note) for label, _, _ in ROWS}
    refused: dict[str, int] = {}
    for it in items:
        if it["reason"]:
            refused[it["reason"]] = refused.get(it["reason"], 0) + 1
    out = {
        "command": "python bench/arith_rewrite.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
        "seed": args.seed,
        "per_family": args.per_family,
        "threads": 1,
        "seconds_total": round(time.time() - t0, 1),
        "table": table,
        "rewritten_by_training_note": by_note,
        "refused": dict(sorted(refused.items(), key=lambda kv: -kv[1])),
        "problems": [
            {**it, **{f"{label} {kind}": results[label][kind].get(it["id"]) for label, _, _ in ROWS for kind in KINDS}}
            for it in items
        ],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(format_table(out))
    return 0


def format_table(out: dict) -> str:
    def f(d):
        return f"{d['right']}/{d['of']}"

    head = ["group", "problems", "convertible (in range)", "row", "as worded, all", "as worded, convertible",
            "rewritten", "rewritten, in range"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in out["table"]:
        for label, _, _ in ROWS:
            r = row[label]
            lines.append(
                f"| {row['group']} | {row['problems']} | {row['convertible']} ({row['convertible_in_range']}) "
                f"| {label} | "
                f"{f(r['original_all'])} | {f(r['original_convertible'])} | {f(r['rewritten_convertible'])} | "
                f"{f(r['rewritten_in_range'])} |"
            )
    lines.append("\n| rewritten, outside the range by | " + " | ".join(label for label, _, _ in ROWS) + " |")
    lines.append("|---|" + "---|" * len(ROWS))
    for note, accs in out["rewritten_by_training_note"].items():
        lines.append(f"| {note} | " + " | ".join(f(accs[label]) for label, _, _ in ROWS) + " |")
    lines.append(f"\nrefused: {out['refused']}")
    lines.append(f"total {out['seconds_total']} s on 1 thread")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
