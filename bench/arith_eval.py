"""The shipped arithmetic policy + PRM under every search strategy: accuracy versus compute.

    python bench/arith_eval.py            # writes bench/results/arith_eval.{json,md,png}

Runs `ponder eval` (in-process engines, the shipped `hf` models, one CPU thread) on a held-out
seeded set in three difficulty bins (levels 1, 3, 5). Cheap rows run on every problem; the wide
searches (n=64, beam, DVTS, MCTS, REBASE) on the first `--search-problems` of them, which cycle
through the bins, so table B compares every row on the same problems. majority@16 is the vote over
weighted BoN@16's samples (see `majority_of`). MCTS and REBASE get a
per-problem token cap matched to beam search @64's mean tokens on the hard bin (a cap binds only
where it is reached; best-of-64's or the all-bin mean would not let them finish a level-5 solution
with a PRM that rereads the prefix at every call). Per-row results files under
bench/results/arith_eval/ make a rerun resume instead of starting over (delete that folder after
retraining the models: the results are keyed by config, not by weights).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the CPUs are shared; one thread per job

ROOT = Path(__file__).resolve().parents[1]
BINS = {"1": "easy (L1)", "3": "medium (L3)", "5": "hard (L5)"}

# (label, strategy, budget, params, on every problem?)
ROWS = [
    ("greedy", "greedy", "n=1", {}, True),
    ("weighted BoN@4", "best_of_n", "n=4", {}, True),
    ("weighted BoN@16", "best_of_n", "n=16", {}, True),
    ("weighted BoN@64", "best_of_n", "n=64", {}, False),
    ("beam@16", "beam_search", "n=16", {}, False),
    ("beam@64", "beam_search", "n=64", {}, False),
    ("DVTS@64", "dvts", "n=64", {}, False),
    ("MCTS (matched)", "mcts", "matched", {}, False),
    ("REBASE (matched)", "rebase", "matched", {}, False),
]


def row_file(folder: Path, label: str) -> Path:
    """The results file of one row (a rerun resumes it)."""
    return folder / (label.replace(" ", "_").replace("@", "_at_").replace("(", "").replace(")", "") + ".jsonl")


def run_row(label, strategy, budget, params, dataset, limit, out_dir: Path, quiet: bool) -> list[dict]:
    from ponder.api import cli

    path = row_file(out_dir, label)
    argv = ["eval", "--dataset", dataset, "--strategy", strategy, "--budget", budget, "--out", str(path)]
    argv += ["--address", "inprocess", "--quiet"] if quiet else ["--address", "inprocess"]
    if limit:
        argv += ["--limit", str(limit)]
    # wide batches: many concurrent searches keep the single-threaded engines busy
    for key, value in [
        ("scheduler.max_concurrent_searches", 64),
        ("scheduler.max_batch", 128),
        ("policy.max_batch", 128),
        ("reward.max_batch", 128),
        *((f"search.params.{k}", v) for k, v in params.items()),
    ]:
        argv += ["--set", f"{key}={value}"]
    t0 = time.time()
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"{label}: ponder eval exited {code}")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(f"{label}: {len(records)} results ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    return records


def majority_of(records: list[dict]) -> list[dict]:
    """Majority@N from weighted BoN@N's records: the same N samples (each record keeps every
    candidate's answer), voted without the PRM, so its tokens are the policy's alone. Saves
    running the samples twice on one CPU; ties go to the answer sampled first."""
    from ponder.tasks.grading import grade

    out = []
    for r in records:
        votes = {a: v for a, v in r["candidates"]["answers"].items() if a != "None"}  # unfinished samples
        answer = max(votes, key=votes.get) if votes else None
        correct = answer is not None and grade(answer, r["reference"])
        compute = {**r["compute"], "prm_tokens": 0, "cost": r["compute"]["policy_tokens"]}
        out.append({**r, "strategy": "majority", "answer": answer, "correct": correct, "compute": compute})
    return out


def summarize(label: str, records: list[dict], ids: set[str] | None = None) -> dict:
    recs = [r for r in records if ids is None or r["id"] in ids]
    by_bin = {}
    for lv in BINS:
        sub = [r for r in recs if str(r["level"]) == lv]
        by_bin[lv] = sum(bool(r["correct"]) for r in sub) / len(sub) if sub else None
    return {
        "row": label,
        "budget": recs[0]["budget"] if recs else None,
        "problems": len(recs),
        "accuracy": sum(bool(r["correct"]) for r in recs) / max(1, len(recs)),
        "by_bin": by_bin,
        "mean_tokens": sum(r["compute"]["cost"] for r in recs) / max(1, len(recs)),
        "mean_wall_s": sum(r["wall_time"] for r in recs) / max(1, len(recs)),
        "errors": sum(r.get("stop_reason") == "error" for r in recs),
    }


def table(rows: list[dict]) -> str:
    head = "| row | budget | problems | " + " | ".join(BINS.values()) + " | all | mean tokens |"
    out = [head, "|" + "---|" * (5 + len(BINS))]
    for r in rows:
        bins = " | ".join("-" if r["by_bin"][lv] is None else f"{100 * r['by_bin'][lv]:.1f}" for lv in BINS)
        out.append(f"| {r['row']} | {r['budget']} | {r['problems']} | {bins} | {100 * r['accuracy']:.1f} | {r['mean_tokens']:.0f} |")
    return "\n".join(out)


def plot(rows: list[dict], path: Path, title: str) -> None:
    from ponder.api import report

    family = {"greedy": "greedy", "majority": "majority", "weighted": "weighted BoN", "beam": "beam search"}
    plot_rows = []
    for r in rows:
        name = next((v for k, v in family.items() if r["row"].startswith(k)), r["row"].split("@")[0].split(" (")[0])
        row = report.Row(name, r["row"].split("@")[-1] if "@" in r["row"] else r["budget"], problems=r["problems"])
        row.graded, row.correct = r["problems"], round(r["accuracy"] * r["problems"])
        row.mean_tokens = r["mean_tokens"]
        plot_rows.append(row)
    report.plot(plot_rows, path, title=title)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=300, help="held-out problems, cycling through the bins")
    ap.add_argument("--search-problems", type=int, default=90, help="the first K run the wide searches")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--only", action="append", help="run only these rows (labels); the summary reads every file")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    out_dir = Path(args.out_dir)
    runs = out_dir / "arith_eval"
    runs.mkdir(parents=True, exist_ok=True)
    dataset = f"arith:{args.problems}:seed={args.seed}:levels={','.join(BINS)}"
    results: dict[str, list[dict]] = {}
    t0 = time.time()
    matched = None
    for label, strategy, budget, params, every in ROWS:
        if budget == "matched":
            if matched is None:
                continue
            budget = f"n=64,tokens={matched}"
        if args.only and label not in args.only:
            path = row_file(runs, label)
            if path.exists():
                results[label] = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        else:
            results[label] = run_row(
                label, strategy, budget, params, dataset, None if every else args.search_problems, runs, not args.progress
            )
        if label == "weighted BoN@16" and results.get(label):
            results["majority@16"] = majority_of(results[label])
        if label == "beam@64" and results.get(label):
            # a per-problem cap: beam@64's mean spend on the hard bin (a cap binds only where it is
            # reached, and the all-bin mean would starve the long problems)
            hard = [r["compute"]["cost"] for r in results[label] if str(r["level"]) == max(BINS)]
            matched = round(sum(hard) / len(hard))
    from ponder.tasks.datasets import load_problems

    subset = {p.id for p in load_problems(dataset, limit=args.search_problems)}
    full = [summarize(lb, recs) for lb, recs in results.items() if len(recs) >= args.problems]
    same = [summarize(lb, recs, subset) for lb, recs in results.items()]
    policy_eval = ROOT / "ponder" / "models" / "arith-policy" / "eval.json"
    auroc = json.loads(policy_eval.read_text()).get("prm_step_auroc") if policy_eval.exists() else None
    summary = {
        "dataset": dataset,
        "search_problems": args.search_problems,
        "matched_tokens": matched,
        "prm_step_auroc": auroc,
        "seconds": round(time.time() - t0),
        "all_problems": full,
        "search_subset": same,
    }
    (out_dir / "arith_eval.json").write_text(json.dumps(summary, indent=1) + "\n")
    md = [
        "# Arithmetic eval: shipped policy + PRM",
        "",
        f"`python bench/arith_eval.py` — dataset `{dataset}` (in-process `hf` engines, one CPU thread,",
        "T=0.8, seeded). Accuracy in %; tokens = policy tokens + PRM tokens per problem (`compute.cost`).",
        "majority@16 votes over weighted BoN@16's own 16 samples (policy tokens only).",
        f"MCTS and REBASE: n=64 with a token cap of {matched} (beam@64's mean tokens on the hard bin).",
        "",
        f"## A. All {args.problems} problems ({args.problems // len(BINS)} per bin)",
        "",
        table(full),
        "",
        f"## B. Every row on the first {args.search_problems} problems ({args.search_problems // len(BINS)} per bin)",
        "",
        table(same),
        "",
    ]
    # the target shape: greedy <= 40% on the hard bin, the best n=64 search 25+ points above it
    greedy_row = next((r for r in same if r["row"] == "greedy"), None)
    wide = [r for r in same if "64" in str(r["budget"])]
    if greedy_row and wide:
        best = max(wide, key=lambda r: r["by_bin"]["5"] or 0)
        gap = 100 * ((best["by_bin"]["5"] or 0) - (greedy_row["by_bin"]["5"] or 0))
        md += [
            f"Target shape (hard bin, table B): greedy {100 * greedy_row['by_bin']['5']:.1f}% (target <= 40%); best n=64 "
            f"search {best['row']} {100 * best['by_bin']['5']:.1f}%, {gap:+.1f} points (target >= +25).",
            "",
        ]
        summary["target"] = {"hard_greedy": greedy_row["by_bin"]["5"], "best_n64": best["row"], "gap_points": gap}
        (out_dir / "arith_eval.json").write_text(json.dumps(summary, indent=1) + "\n")
    if auroc is not None:
        md += [f"PRM step AUROC against exact prefix labels (ponder/models/arith-policy/eval.json): **{auroc:.3f}**.", ""]
    (out_dir / "arith_eval.md").write_text("\n".join(md))
    plot(same, out_dir / "arith_eval.png", f"arithmetic (first {args.search_problems}): accuracy vs compute")
    print("\n".join(md))


if __name__ == "__main__":
    main()
