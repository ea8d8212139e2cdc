"""One results record: what happened to one problem under one (strategy, budget, config)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ponder.search.types import Problem, SearchResult

ERROR_CHARS = 500  # a record's `error` is one bounded line; tracebacks stay in the worker's log


def one_line(text: str | None, limit: int = ERROR_CHARS) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def chosen_rewards(result: SearchResult) -> list[float | None]:
    for c in result.candidates:
        if c.steps == result.trajectory:
            return list(c.rewards) + [None] * (len(c.steps) - len(c.rewards))
    return [None] * len(result.trajectory)


def make_record(
    problem: Problem, result: SearchResult, strategy: str, budget: str, fingerprint: str,
    *, dataset: str | None = None, job: str | None = None, attempts: int = 1,
) -> dict[str, Any]:
    correct = result.correct
    if (correct is None and problem.answer is not None and result.stop_reason not in ("error", "cancelled")
            and "grading" not in result.meta):  # "grading": the runner tried and could not decide
        from ponder.tasks.grading import grade

        correct = result.answer is not None and grade(result.answer, problem.answer)
    votes: dict[str, int] = {}
    for c in result.candidates:
        votes[str(c.answer)] = votes.get(str(c.answer), 0) + 1
    top = sorted(result.candidates, key=lambda c: c.score, reverse=True)[:5]
    meta = {k: v for k, v in result.meta.items() if k not in ("traceback", "error", "search_id")}
    error = result.meta.get("error")
    record: dict[str, Any] = {
        "id": problem.id,
        "level": problem.level,
        "strategy": strategy,
        "budget": budget,
        "fingerprint": fingerprint,
        "answer": result.answer,
        "reference": problem.answer,
        "correct": correct,
        "stop_reason": result.stop_reason,
        "compute": dataclasses.asdict(result.compute),
        "wall_time": round(result.wall_time, 4),
        "trajectory": [{"step": s, "reward": r} for s, r in zip(result.trajectory, chosen_rewards(result))],
        "candidates": {
            "count": len(result.candidates),
            "answers": votes,
            "top": [{"answer": c.answer, "score": c.score, "tokens": c.tokens, "steps": len(c.steps)} for c in top],
        },
        "error": one_line(error) if error else None,
        "meta": meta,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if dataset is not None:
        record["dataset"] = dataset
    if job is not None:
        record["job"] = job
    if result.stop_reason == "error":
        record["attempts"] = attempts
    return record
