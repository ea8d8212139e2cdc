"""`auto` against the fixed strategies, averaged over search seeds.

One `bench.auto_vs_uniform` run compares single runs: on 150 problems a fixed strategy's
accuracy moves by several points from one search seed to the next (REBASE at n=16 on the shipped
models: 0.693 / 0.640 / 0.613 at seeds 0 / 1 / 2), as much as the margins being measured. This
reads runs of the same table and test set at several seeds (`--seed`) and compares means:

    fixed[s][n]   <- mean accuracy and cost of strategy s at width n over the seeds (widths every
                     seed measured)
    auto[f]       <- mean accuracy and cost at job budget f (a fraction of each seed's best-of-64)
    verdict[f]    <- auto[f] >= every fixed strategy's mean curve at auto's mean cost
                     (interpolated as in one run); the per-seed differences give a standard error

    python -m bench.auto_seeds bench/results/auto_vs_fixed-hf-reuse.json bench/results/auto_vs_fixed-hf-reuse-seed1.json ...
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench.auto_vs_uniform import _interp


def _mean(xs: list[float]) -> float:
    return statistics.mean(xs)


def _se(xs: list[float]) -> float | None:
    return statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else None


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean comparison of runs that differ only in their search seed."""
    if len(runs) < 2:
        raise ValueError("need runs at two seeds at least")
    # the same table: its difficulty map and calibration (a copy of the table file may lie elsewhere)
    same = {(r["engine"], r["test"], r["dev"], r["probe_samples"],
             json.dumps([r.get("difficulty_map"), r["calibration"]], sort_keys=True)) for r in runs}
    if len(same) != 1:
        raise ValueError("runs differ in more than their seed (engine, test set, table or probe)")
    seeds = [r.get("seed", 0) for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"two runs share a seed: {seeds}")
    fracs = [[a["fraction"] for a in r["auto"]] for r in runs]
    if any(f != fracs[0] for f in fracs):
        raise ValueError("runs measured auto at different budgets")

    fixed: dict[str, list[dict[str, Any]]] = {}
    for s in runs[0]["fixed"]:
        widths = set.intersection(*({p["n"] for p in r["fixed"].get(s, [])} for r in runs))
        pts = []
        for n in sorted(widths):
            at = [next(p for p in r["fixed"][s] if p["n"] == n) for r in runs]
            pts.append({"n": n, "accuracy": round(_mean([p["accuracy"] for p in at]), 4),
                        "cost": round(_mean([p["cost"] for p in at]), 1),
                        "raw_cost": round(_mean([p["raw_cost"] for p in at]), 1),
                        "per_seed": [p["accuracy"] for p in at]})
        if pts:
            fixed[s] = pts
    bars = [r["uniform"] for r in runs]
    uniform = {"n": bars[0]["n"], "accuracy": round(_mean([b["accuracy"] for b in bars]), 4),
               "cost": round(_mean([b["cost"] for b in bars]), 1),
               "raw_cost": round(_mean([b["raw_cost"] for b in bars]), 1), "per_seed": [b["accuracy"] for b in bars]}

    autos = []
    for i, f in enumerate(fracs[0]):
        at = [r["auto"][i] for r in runs]
        a = {"fraction": f, "accuracy": round(_mean([x["accuracy"] for x in at]), 4),
             "cost": round(_mean([x["cost"] for x in at]), 1), "raw_cost": round(_mean([x["raw_cost"] for x in at]), 1),
             "per_seed": [x["accuracy"] for x in at]}
        interp = {s: _interp(c, a["cost"]) for s, c in fixed.items()}
        interp = {s: round(v, 4) for s, v in interp.items() if v is not None}
        a["fixed_at_same_cost"] = interp
        if interp:
            best = max(interp, key=interp.get)
            # per seed: auto's accuracy minus that seed's curve of the best strategy at auto's cost there
            diffs = [x["accuracy"] - v for x, r in zip(at, runs)
                     if (v := _interp([p for p in r["fixed"][best] if p["n"] in {q["n"] for q in fixed[best]}],
                                      x["cost"])) is not None]
            a["best_fixed"] = {"strategy": best, "accuracy": interp[best]}
            a["margin"] = round(a["accuracy"] - interp[best], 4)
            a["margin_per_seed"] = [round(d, 4) for d in diffs]
            se = _se(diffs)
            a["margin_se"] = round(se, 4) if se is not None else None
            a["beats_fixed"] = a["margin"] >= -1e-9
        else:
            a["best_fixed"], a["beats_fixed"] = None, None
        autos.append(a)
    reached = [a for a in autos if a["accuracy"] >= uniform["accuracy"]]
    best = min(reached, key=lambda a: a["cost"]) if reached else None
    return {
        "engine": runs[0]["engine"], "test": runs[0]["test"], "dev": runs[0]["dev"], "seeds": seeds,
        "probe_samples": runs[0]["probe_samples"], "table": runs[0].get("table_from") or runs[0].get("table"),
        "uniform": uniform, "fixed": fixed, "auto": autos,
        "budgets_beaten": sum(1 for a in autos if a["beats_fixed"]),
        "auto_reaching_bar": best,
        "cost_ratio": round(best["cost"] / uniform["cost"], 4) if best else None,
        "raw_cost_ratio": round(best["raw_cost"] / uniform["raw_cost"], 4) if best else None,
    }


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s, c in res["fixed"].items():
        ax.errorbar([p["cost"] for p in c], [p["accuracy"] for p in c],
                    yerr=[_se(p["per_seed"]) or 0 for p in c], fmt="o-", capsize=3, alpha=0.8,
                    label=f"{s} (n={c[0]['n']}..{c[-1]['n']})")
    a = res["auto"]
    ax.errorbar([p["cost"] for p in a], [p["accuracy"] for p in a], yerr=[_se(p["per_seed"]) or 0 for p in a],
                fmt="k*-", ms=11, lw=2, capsize=3, label="auto (calibrated)")
    u = res["uniform"]
    ax.axhline(u["accuracy"], color="grey", ls=":", lw=1)
    ax.axvline(u["cost"] / 4, color="grey", ls="--", lw=1, label="1/4 of best-of-64's cost")
    ax.set_xscale("log")
    ax.set_xlabel("cost per problem (Compute.cost)")
    ax.set_ylabel(f"accuracy, mean of seeds {'/'.join(map(str, res['seeds']))} (bars: standard error)")
    ax.set_title(f"auto vs fixed strategies, {res['engine']} engines, test {res['test']}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="auto vs fixed strategies, averaged over search seeds")
    ap.add_argument("runs", nargs="+", help="bench.auto_vs_uniform result JSONs, one per seed")
    ap.add_argument("--out", required=True, help="combined JSON (and its .png)")
    args = ap.parse_args(argv)
    try:
        res = combine([json.loads(Path(p).read_text()) for p in args.runs])
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"auto_seeds: {e}") from None
    res["runs"] = args.runs
    out = Path(args.out)
    out.write_text(json.dumps(res, indent=1) + "\n")
    plot(res, out.with_suffix(".png"))
    for a in res["auto"]:
        print(f"auto @ {a['fraction']:g}: {a['accuracy']:.3f} at {a['cost']:.0f} (per seed {a['per_seed']}); "
              f"best fixed {a['best_fixed']}; margin {a.get('margin')} (se {a.get('margin_se')})")
    print(f"budgets where auto >= every fixed strategy: {res['budgets_beaten']} of {len(res['auto'])}; "
          f"best-of-64 ({res['uniform']['accuracy']:.3f}) reached at {res['cost_ratio']}x (raw {res['raw_cost_ratio']}x)")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
