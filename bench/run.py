"""Run the benchmarks and print the figures: ``python -m bench.run [--quick] [what ...]``.

what: ``sched`` (ponder's scheduler vs a lockstep loop on simulated GPU pools), ``cpu`` (scheduler
CPU per expansion with instant engines), ``auto`` (`auto` vs weighted best-of-64 on the shipped
tiny models); all three by default. Results go to ``bench/results/<what>.json`` and a markdown
table of all results there (from this run or earlier ones) to ``bench/results/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"speedup": 3.0, "busy": 0.9, "expansions_per_cpu_s": 20_000, "token_ratio": 0.25}


def _sched(quick: bool) -> dict[str, Any]:
    from bench.scheduler_vs_lockstep import Setup, compare

    if quick:
        return compare(Setup(problems=60), [15, 60], [60], load=200)
    return compare(Setup(problems=500), [25, 50, 100, 250, 500], [128, 256, 500], load=2000)


def _cpu(quick: bool) -> dict[str, Any]:
    from bench.scheduler_vs_lockstep import Setup, scheduler_cpu

    out = scheduler_cpu(Setup(), problems=60 if quick else 500, concurrency=256, repeats=1 if quick else 3)
    if not quick:  # the Ray actor path too: a local cluster, one instant replica per pool
        from bench.ray_cpu import ray_scheduler_cpu

        out["ray_actor"] = ray_scheduler_cpu()
    return out


def _auto(quick: bool, engine: str, problems: int) -> dict[str, Any]:
    from bench.auto_vs_uniform import compare

    if quick:
        return compare(8, engine, fractions=(0.25, 1.0))
    return compare(problems, engine)


def _fmt(x: Any, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def table(res: dict[str, dict[str, Any]]) -> str:
    rows = ["| figure | measured | target |", "|---|---|---|"]
    if "sched" in res:
        r = res["sched"]
        s, b = r["scheduler"], r["best_lockstep"]
        rows += [
            f"| wall time, lockstep (best batch {b['batch_size']}) / scheduler (concurrency {s['concurrency']}) "
            f"| {b['wall_s']:.2f} s / {s['wall_s']:.2f} s = **{r['speedup']:.2f}x** | >= 3x |",
            f"| policy pool busy, scheduler (lockstep) | {s['policy_busy']:.1%} ({b['policy_busy']:.1%}) | >= 90% |",
            f"| PRM pool busy, scheduler (lockstep) | {s['reward_busy']:.1%} ({b['reward_busy']:.1%}) | >= 90% |",
            f"| expansions/s (simulated H100 time), scheduler (lockstep) | {s['expansions_per_s']:.0f} "
            f"({b['expansions_per_s']:.0f}) | |",
            f"| same answers in every run | {r['same_answers']} | True |",
        ]
        sweep = ", ".join(f"{x['batch_size']}: {x['wall_s']:.2f} s" for x in r["lockstep_sweep"])
        ssweep = ", ".join(f"{x['concurrency']}: {x['wall_s']:.2f} s" for x in r["scheduler_sweep"])
        rows.append(f"| lockstep sweep (batch: wall) | {sweep} | |")
        rows.append(f"| scheduler sweep (concurrency: wall) | {ssweep} | |")
        if r.get("under_load"):
            u, v = r["under_load"], r["under_load"]["balanced_split"]
            rows.append(f"| pools busy under load, steady state ({u['concurrency']} searches; 8 policy / 4 PRM): "
                        f"policy, PRM | {u['steady_policy_busy']:.1%}, {u['steady_reward_busy']:.1%} | >= 90% |")
            split = f"{v['policy_replicas']} policy / {v['reward_replicas']} PRM"
            rows.append(f"| same load, replicas split by demand ({split}): policy, PRM"
                        f" | {v['steady_policy_busy']:.1%}, {v['steady_reward_busy']:.1%} | >= 90% |")
    if "cpu" in res:
        c = res["cpu"]
        rows += [
            f"| scheduler CPU per expansion, instant engines | {c['scheduler_cpu_us_per_expansion']:.1f} us "
            f"= **{c['expansions_per_scheduler_cpu_s']:.0f} expansions/s** per core | >= 20k/s |",
            f"| end to end with the sim engines' own CPU | {c['expansions_per_wall_s']:.0f} expansions/s | |",
        ]
        if c.get("ray_actor"):
            ra = c["ray_actor"]
            rows.append(f"| Ray SchedulerActor CPU per expansion (incl. Ray calls to the replicas) "
                        f"| {ra['actor_cpu_us_per_expansion']:.1f} us = **{ra['expansions_per_actor_cpu_s']:.0f} "
                        f"expansions/s** | >= 20k/s |")
    if "auto" in res:
        a = res["auto"]
        u = a["uniform"]
        curve = ", ".join(f"{x['tokens_per_problem']:.0f}: {x['accuracy']:.3f}" for x in a["auto"])
        rows += [
            f"| best-of-64 ({a['engine']}, {a['problems']} problems): accuracy, tokens/problem "
            f"| {u['accuracy']:.3f}, {u['tokens_per_problem']:.0f} | |",
            f"| auto (tokens/problem: accuracy) | {curve} | |",
            f"| auto tokens to reach best-of-64's accuracy / best-of-64's | **{_fmt(a['token_ratio'])}** | <= 0.25 |",
        ]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="*", help="sched, cpu and/or auto (default: all three)")
    ap.add_argument("--quick", action="store_true", help="a smoke run on small sets (seconds to a minute)")
    ap.add_argument("--engine", default="hf", choices=["hf", "sim"], help="engines for `auto` (default: shipped hf)")
    ap.add_argument("--auto-problems", type=int, default=64, help="problems for `auto` (default 64: ~5 min on CPU)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = ap.parse_args(argv)
    what = args.what or ["sched", "cpu", "auto"]
    if set(what) - {"sched", "cpu", "auto"}:
        ap.error(f"unknown benchmark(s) {sorted(set(what) - {'sched', 'cpu', 'auto'})}: use sched, cpu, auto")
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    res: dict[str, dict[str, Any]] = {}
    for name in what:
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        t = time.perf_counter()
        res[name] = _sched(args.quick) if name == "sched" else _cpu(args.quick) if name == "cpu" else _auto(
            args.quick, args.engine, args.auto_problems)
        res[name]["bench_s"] = round(time.perf_counter() - t, 1)
        (args.out / f"{name}{suffix}.json").write_text(json.dumps(res[name], indent=1) + "\n")
    for name in ("sched", "cpu", "auto"):  # the table also shows earlier results of the parts not run now
        path = args.out / f"{name}{suffix}.json"
        if name not in res and path.exists():
            res[name] = json.loads(path.read_text())
    md = table({k: res[k] for k in ("sched", "cpu", "auto") if k in res})
    (args.out / f"summary{suffix}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
