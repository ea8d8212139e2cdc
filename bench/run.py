"""Run the benchmarks and print the figures: ``python -m bench.run [--quick] [what ...]``.

what: ``sched`` (ponder's scheduler vs a lockstep loop on simulated GPU pools), ``cpu`` (scheduler
CPU per expansion with instant engines), ``auto`` (calibrated `auto` vs every fixed strategy and
weighted best-of-64, `bench.auto_vs_uniform`; on the simulator unless ``--engine hf``); all three
by default. Results go to ``bench/results/<what>.json`` and a markdown
table of all results there (from this run or earlier ones) to ``bench/results/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _sched(quick: bool) -> dict[str, Any]:
    from bench.scheduler_vs_lockstep import Setup, compare

    if quick:
        return compare(Setup(problems=60), [15, 60], [60], loops=[2, 4], load=200, variants=False)
    return compare(Setup(problems=500), [25, 50, 100, 128, 256, 500], [128, 256, 500], loops=[2, 4, 8], load=2000)


def _cpu(quick: bool) -> dict[str, Any]:
    from bench.scheduler_vs_lockstep import Setup, scheduler_cpu

    out = scheduler_cpu(Setup(), problems=60 if quick else 500, concurrency=256, repeats=1 if quick else 3)
    if not quick:  # the Ray actor path too (a local cluster, instant replicas): 1+1 and 8+4, and 1/2/4 shards on 2+2
        from bench.ray_cpu import ray_scheduler_cpu

        out["ray_actor"] = ray_scheduler_cpu(400)
        out["ray_actor_8x4"] = ray_scheduler_cpu(400, replicas=8, reward_replicas=4)
        out["ray_shards"] = [ray_scheduler_cpu(400, replicas=2, shards=k) for k in (1, 2, 4)]
    return out


def _path(folder: Path, name: str, engine: str, suffix: str) -> Path:
    """Where a part's results go: `auto` by engine (the summary's row is the simulator's)."""
    return folder / (f"auto_vs_fixed-{engine}{suffix}.json" if name == "auto" else f"{name}{suffix}.json")


def _auto(quick: bool, engine: str, out: Path) -> dict[str, Any]:
    from bench.auto_vs_uniform import auto_vs_fixed, plot

    if quick:
        res = auto_vs_fixed(engine, "arith:24:seed=11", "arith:24:seed=7", widths=(4, 16), fractions=(0.25,),
                            probe_samples=2, table_path=out.with_name(out.stem + "-table.yaml"))
    elif engine == "hf":  # the four fixed strategies at n=4, 8, 16, 64 on 150 test problems, calibrated at 4, 8, 16
        # on 300 dev problems (at 150 the plan chased noise: REBASE and beam search tied there).
        # auto at 8 searches in flight: the in-process models batch across searches (one at a
        # time would take hours); the ordered ledger keeps the figures independent of timing.
        res = auto_vs_fixed("hf", "arith:300:seed=11", "arith:150:seed=7", widths=(4, 8, 16, 64), cal_widths=(4, 8, 16),
                            adaptive=("best_of_n:confidence=0.99,round_size=2",),
                            concurrency=16, auto_concurrency=8, table_path=out.with_name(out.stem + "-table.yaml"))
    else:
        from bench.auto_vs_uniform import ADAPTIVE

        res = auto_vs_fixed("sim", probe_samples=2, adaptive=ADAPTIVE, table_path=out.with_name(out.stem + "-table.yaml"))
    plot(res, out.with_suffix(".png"))
    return res


def _fmt(x: Any, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def _sched_rows(r: dict[str, Any]) -> list[str]:
    rows = []
    for dev in ("static", "vllm"):
        d = r.get(dev)
        if not d:
            continue
        b, p, k = d["lower_bound"], d["best_ponder"], d["best_simple_baseline"]
        sal = d.get("search_and_learn")
        rows += [
            f"| [{dev}] lower bound: max(policy pool, PRM pool at ideal batching, slowest search alone) "
            f"| **{b['bound_s']:.3f} s** = max({b['policy_pool_s']:.3f}, {b['reward_pool_s']:.3f}, "
            f"{b['critical_path_s']:.3f}) | |",
            f"| [{dev}] best ponder ({p['config']}, {p['searches_in_flight']} in flight) / bound "
            f"| {p['wall_s']:.3f} s = **{d['ponder_over_bound']:.3f}x** | <= 1.10x |",
            f"| [{dev}] best simple baseline ({k['loops']} loop(s) x batch {k['batch_size']}, {k['order']}) / ponder "
            f"| {k['wall_s']:.3f} s / {p['wall_s']:.3f} s = **{d['speedup_vs_best_simple_baseline']:.3f}x** | >= 1.2x |",
            f"| [{dev}] best single lockstep loop (batch {d['best_lockstep']['batch_size']}) / ponder "
            f"| {d['best_lockstep']['wall_s']:.3f} s = {d['speedup_vs_best_lockstep']:.3f}x | |",
        ]
        if sal:
            rows.append(f"| [{dev}] search-and-learn (1 problem a GPU, policy + PRM on each of {sal['gpus']} GPUs) / ponder "
                        f"| {sal['wall_s']:.3f} s = **{d['speedup_vs_search_and_learn']:.2f}x** | |")
        for f, row in d["at_equal_in_flight"].items():
            bb = row["best_baseline"]
            cells = "; ".join(f"{name} {v['wall_s']:.3f} s ({v['over_bound']:.2f}x bound, "
                              f"{v['speedup_vs_best_baseline']:.3f}x)" for name, v in row.items() if name != "best_baseline")
            rows.append(f"| [{dev}] {f} in flight: best baseline {bb['loops']} x {bb['batch_size']} ({bb['order']}) "
                        f"{bb['wall_s']:.3f} s; ponder (vs it) | {cells} | ponder ahead |")
        pr = d["ponder_sweep"]["ponder"][-1]
        rows.append(f"| [{dev}] ponder {pr['searches_in_flight']} in flight: pools busy policy / PRM; "
                    f"mean policy batch (requests, sequences); PRM batch "
                    f"| {pr['policy_busy']:.1%} / {pr['reward_busy']:.1%}; {pr['policy_mean_batch']}, "
                    f"{pr['policy_mean_seqs']}; {pr['reward_mean_batch']} | |")
        for v in d.get("ponder_variants") or []:
            rows.append(f"| [{dev}] variant {v['config']} ({v['searches_in_flight']} in flight) "
                        f"| {v['wall_s']:.3f} s ({v['over_bound']:.2f}x bound) | |")
    rows.append(f"| same answers in every mode and device | {r['same_answers']} | True |")
    if r.get("under_load"):
        u, v = r["under_load"], r["under_load"]["balanced_split"]
        rows.append(f"| [static] pools busy under load, steady state ({u['concurrency']} searches; 8 policy / 4 PRM): "
                    f"policy, PRM | {u['steady_policy_busy']:.1%}, {u['steady_reward_busy']:.1%} | >= 90% |")
        split = f"{v['policy_replicas']} policy / {v['reward_replicas']} PRM"
        rows.append(f"| same load, replicas split by demand ({split}): policy, PRM"
                    f" | {v['steady_policy_busy']:.1%}, {v['steady_reward_busy']:.1%} | >= 90% |")
    return rows


def table(res: dict[str, dict[str, Any]]) -> str:
    rows = ["| figure | measured | target |", "|---|---|---|"]
    if "sched" in res:
        rows += _sched_rows(res["sched"])
    if "cpu" in res:
        c = res["cpu"]
        rows += [
            f"| scheduler CPU per expansion, instant engines | {c['scheduler_cpu_us_per_expansion']:.1f} us "
            f"= **{c['expansions_per_scheduler_cpu_s']:.0f} expansions/s** per core | >= 20k/s |",
            f"| end to end with the sim engines' own CPU | {c['expansions_per_wall_s']:.0f} expansions/s | |",
        ]
        for key, label in (("ray_actor", "1+1"), ("ray_actor_8x4", "8+4")):
            if c.get(key):
                ra = c[key]
                rows.append(f"| Ray SchedulerActor CPU per expansion (incl. Ray calls to the replicas), {label} replicas "
                            f"| {ra['actor_cpu_us_per_expansion']:.1f} us = **{ra['expansions_per_actor_cpu_s']:.0f} "
                            f"expansions/s** | >= 20k/s |")
        if c.get("ray_shards"):
            one = c["ray_shards"][0]["expansions_per_actor_cpu_s"]
            proj = [s.get("projected_expansions_per_s", s["expansions_per_actor_cpu_s"]) for s in c["ray_shards"]]
            rows.append("| scheduler shards on 2+2 replicas: expansions/s a core per shard would drive, 1 / 2 / 4 shards "
                        f"| {' / '.join(f'{p:.0f}' for p in proj)} ({' / '.join(f'{p / one:.2f}x' for p in proj)}) | near-linear |")
    if "auto" in res:
        a = res["auto"]
        u = a["uniform"]
        curve = ", ".join(f"{x['fraction']:g}x: {x['accuracy']:.3f} at {x['cost']:.0f}"
                          f"{' (beats fixed)' if x['beats_fixed'] else ''}" for x in a["auto"])
        beats = sum(1 for x in a["auto"] if x["beats_fixed"])
        rows += [
            f"| weighted best-of-{u['n']} ({a['engine']}, test {a['test']}, dev {a['dev']}): accuracy, cost/problem "
            f"| {u['accuracy']:.3f}, {u['cost']:.0f} (raw {u['raw_cost']:.0f}) | |",
            f"| auto at fractions of that cost: accuracy at cost | {curve} | |",
            f"| auto's cost to reach best-of-{u['n']}'s accuracy / best-of-{u['n']}'s (raw) | **{_fmt(a['cost_ratio'], '.3f')}** "
            f"({_fmt(a['raw_cost_ratio'], '.3f')}) | <= 0.25 |",
            f"| budgets where auto is at least as accurate as every fixed strategy at its cost | **{beats}** of "
            f"{len(a['auto'])} | >= 3 |",
        ]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="*", help="sched, cpu and/or auto (default: all three)")
    ap.add_argument("--quick", action="store_true", help="a smoke run on small sets (seconds to a minute)")
    ap.add_argument("--engine", default="sim", choices=["hf", "sim"],
                    help="engines for `auto` (default sim, ~3 min; hf: the shipped models, ~1.5 hours on two cores)")
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
        path = _path(args.out, name, args.engine, suffix)
        res[name] = _sched(args.quick) if name == "sched" else _cpu(args.quick) if name == "cpu" else _auto(
            args.quick, args.engine, path)
        res[name]["bench_s"] = round(time.perf_counter() - t, 1)
        path.write_text(json.dumps(res[name], indent=1) + "\n")
    if args.engine != "sim":
        res.pop("auto", None)  # the summary's row is the simulator's
    for name in ("sched", "cpu", "auto"):  # the table also shows earlier results of the parts not run now
        path = _path(args.out, name, "sim", suffix)
        if name not in res and path.exists():
            res[name] = json.loads(path.read_text())
    md = table({k: res[k] for k in ("sched", "cpu", "auto") if k in res})
    (args.out / f"summary{suffix}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
