"""Check the vLLM policy against the HF one on a model dir: start time, greedy agreement, and
sampled-step throughput on the same batch.

    /work/vllm-venv/bin/python bench/vllm_check.py --model ponder/models/arith-policy --requests 64 --n 4

Prints one JSON line. vLLM starts worker processes, hence the `__main__` guard.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from ponder.actors.engine import StepRequest
from ponder.actors.hf import HFPolicy
from ponder.actors.vllm_engine import VLLMPolicy
from ponder.config import EngineConfig
from ponder.tasks.arith.problems import generate


async def timed(engine, requests: list[StepRequest]) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = await engine.generate(requests)
    return time.perf_counter() - t0, out


async def main(args: argparse.Namespace) -> dict:
    problems = [p.problem for p in generate(args.requests, seed=args.seed)]
    greedy = [StepRequest(p, [], n=1, temperature=0.0, max_step_tokens=args.max_tokens) for p in problems]
    sampled = [
        StepRequest(p, [], n=args.n, temperature=0.8, max_step_tokens=args.max_tokens, seed=i)
        for i, p in enumerate(problems)
    ]
    report: dict = {"model": args.model, "requests": args.requests, "n": args.n}
    engines = {}
    for kind, cls in (("hf", HFPolicy), ("vllm", VLLMPolicy)):
        t0 = time.perf_counter()
        engines[kind] = cls.from_config(EngineConfig(kind=kind, path=args.model, dtype="float32", device="cpu"))
        report[f"{kind}_start_s"] = round(time.perf_counter() - t0, 2)
        await engines[kind].generate(greedy[:1])  # warm up
    outs = {}
    for kind, engine in engines.items():
        _, outs[kind] = await timed(engine, greedy)
        secs, samples = await timed(engine, sampled)
        tokens = sum(s.tokens for r in samples for sample in r for s in sample)
        report[f"{kind}_sampled_s"] = round(secs, 3)
        report[f"{kind}_tokens_per_s"] = round(tokens / secs, 1)
    same = sum(a[0][0].text == b[0][0].text for a, b in zip(outs["hf"], outs["vllm"]))
    report["greedy_agreement"] = f"{same}/{len(greedy)}"
    engines["vllm"].close()
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ponder/models/arith-policy")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    print(json.dumps(asyncio.run(main(ap.parse_args()))))
