"""Does handing a search the probe's samples change what it scores? Fixed REBASE against `auto`
forced to REBASE (the probe first, its samples replayed into the tree, the unused ones in the
vote) at one width, on the shipped models, at several search seeds.

    python -m bench.replay_check --test arith:150:seed=7 --seeds 0,1,2 --n 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from bench.auto_vs_uniform import _results, make_runner
from ponder.tasks.datasets import load_problems


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fixed REBASE vs auto forced to REBASE, over seeds")
    ap.add_argument("--test", default="arith:150:seed=7")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--probe-samples", type=int, default=4)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "replay_check-hf.json"))
    args = ap.parse_args(argv)
    problems = load_problems(args.test)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        runner = make_runner("hf", 16, seed)
        for run, strategy, params in (("fixed", "rebase", None),
                                      ("replay", "auto", {"strategy": "rebase", "probe_samples": args.probe_samples})):
            t0 = time.perf_counter()
            res = asyncio.run(_results(runner, problems, strategy, f"n={args.n}", params))
            rows.append({"seed": seed, "run": run, "accuracy": round(statistics.mean(bool(r.correct) for r in res.values()), 4),
                         "cost": round(statistics.mean(r.compute.cost for r in res.values()), 1),
                         "s": round(time.perf_counter() - t0)})
            print(json.dumps(rows[-1]), flush=True)
    mean = {run: {k: round(statistics.mean(r[k] for r in rows if r["run"] == run), 4) for k in ("accuracy", "cost")}
            for run in ("fixed", "replay")}
    out = {"test": args.test, "n": args.n, "probe_samples": args.probe_samples, "rows": rows, "mean": mean}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"mean: {mean}; wrote {args.out}")


if __name__ == "__main__":
    main()
