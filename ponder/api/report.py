"""Summaries of eval results: the per-(strategy, budget) table and the accuracy-versus-compute plot.

Works on result records as the store holds them (plain dicts), so `ponder report` can rebuild
both from a results file alone.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    strategy: str
    budget: str
    dataset: str | None = None  # where the records came from (older files do not say)
    fingerprint: str = ""  # the config part of the key: two configs are two rows
    problems: int = 0
    graded: int = 0  # problems with a reference answer
    correct: int = 0
    errors: int = 0
    no_answer: int = 0  # searches that ended without an answer (not errors): wrong, but for another reason
    mean_tokens: float = 0.0  # compute cost (the token unit budgets use) per problem
    mean_wall: float = 0.0
    by_level: dict[str, tuple[int, int]] = field(default_factory=dict)  # level -> (correct, graded)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None


_LEVEL_WORDS = {"easy": 0, "medium": 1, "hard": 2}


def _level_order(level: str) -> tuple[int, float, str]:
    """Numbers in numeric order ("Level 2" before "Level 10"), then easy, medium, hard, then
    any other words alphabetically."""
    m = re.search(r"-?\d+(\.\d+)?", level)
    if m:
        return (0, float(m.group()), level)
    word = level.strip().lower()
    if word in _LEVEL_WORDS:
        return (1, _LEVEL_WORDS[word], level)
    return (2, 0.0, level)


def _no_answer(r: dict[str, Any]) -> bool:
    """A search that ended without an answer (an error is counted as an error instead)."""
    stop = r.get("stop_reason")
    return stop == "no_answer" or ("answer" in r and r["answer"] is None and stop != "error")


def summarize(records: Iterable[dict[str, Any]]) -> list[Row]:
    """One row per key minus the problem (dataset, strategy, budget, config fingerprint), so
    different configs or datasets are never merged; strategies in first-seen order, budgets by
    mean tokens."""
    groups: dict[tuple[Any, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r.get("dataset"), str(r.get("strategy")), str(r.get("budget")), str(r.get("fingerprint", "")))].append(r)
    rows = []
    for (dataset, strategy, budget, fp), recs in groups.items():
        row = Row(strategy, budget, dataset, fp, problems=len(recs))
        levels: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in recs:
            row.errors += r.get("stop_reason") == "error"
            row.no_answer += _no_answer(r)
            row.mean_tokens += float((r.get("compute") or {}).get("cost", 0.0))
            row.mean_wall += float(r.get("wall_time") or 0.0)
            if r.get("correct") is None:
                continue
            ok = bool(r["correct"])
            row.graded += 1
            row.correct += ok
            if r.get("level") is not None:
                lv = levels[str(r["level"])]
                lv[0] += ok
                lv[1] += 1
        row.mean_tokens /= len(recs)
        row.mean_wall /= len(recs)
        row.by_level = {k: (v[0], v[1]) for k, v in sorted(levels.items(), key=lambda kv: _level_order(kv[0]))}
        rows.append(row)
    order = {s: i for i, s in enumerate(dict.fromkeys(r.strategy for r in rows))}
    datasets = {d: i for i, d in enumerate(dict.fromkeys(r.dataset for r in rows))}
    rows.sort(key=lambda r: (datasets[r.dataset], order[r.strategy], r.mean_tokens))
    return rows


def _label(r: Row, rows: list[Row]) -> str:
    """The strategy, plus the config and dataset where the rows need them told apart."""
    parts = [r.strategy]
    if len({x.fingerprint for x in rows if (x.dataset, x.strategy) == (r.dataset, r.strategy)}) > 1:
        parts.append(f"[{r.fingerprint[:6]}]")
    if len({x.dataset for x in rows}) > 1:
        parts.append(f"({r.dataset or '?'})")
    return " ".join(parts)


def _pct(correct: int, total: int) -> str:
    return f"{100 * correct / total:.1f}" if total else "-"


# Strategies that draw one sample whatever width the budget names (the row says so).
ONE_SAMPLE = {"greedy"}

LEGEND = ("acc%: graded results right; tokens: mean cost per problem (tokens computed with prefix reuse: "
          "generated, the prompt once, each PRM path beyond its scored parent; x scheduler.prm_cost_ratio "
          "for the PRM); wall s: mean seconds per search; L1..: accuracy by level")


def format_table(rows: list[Row]) -> str:
    """A plain-text table; accuracy columns are percentages, one per difficulty level."""
    if not rows:
        return "no results"
    levels = sorted({lv for r in rows for lv in r.by_level}, key=_level_order)
    several_data = len({r.dataset for r in rows}) > 1
    several_cfg = len({(r.dataset, r.strategy, r.budget) for r in rows}) < len(rows)
    header = (["dataset"] if several_data else []) + ["strategy", "budget"] + (["config"] if several_cfg else [])
    numeric_from = len(header)  # right-align the numbers
    header += ["n", "acc%", "tokens", "wall s"]
    header += [f"L{lv}" if lv.isdigit() else lv for lv in levels]
    if any(r.no_answer for r in rows):
        header.append("no-answer")
    if any(r.errors for r in rows):
        header.append("errors")
    body = []
    for r in rows:
        budget = "1 sample" if r.strategy in ONE_SAMPLE and r.budget.startswith("n=") and "," not in r.budget else r.budget
        cells = ([r.dataset or "?"] if several_data else []) + [r.strategy, budget]
        cells += [r.fingerprint or "?"] if several_cfg else []
        cells += [
            str(r.problems),
            _pct(r.correct, r.graded),
            f"{r.mean_tokens:.0f}",
            f"{r.mean_wall:.2f}",
        ] + [_pct(*r.by_level.get(lv, (0, 0))) for lv in levels]
        if "no-answer" in header:
            cells.append(str(r.no_answer))
        if "errors" in header:
            cells.append(str(r.errors))
        body.append(cells)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < numeric_from else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in body]
    return "\n".join(out)


def plot(rows: list[Row], path: str | Path, title: str | None = None) -> Path:
    """Accuracy versus mean tokens per problem (log x), one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    by_strategy: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.accuracy is not None and r.mean_tokens > 0:
            by_strategy[_label(r, rows)].append(r)
    for strategy, rs in by_strategy.items():
        rs.sort(key=lambda r: r.mean_tokens)
        ax.plot([r.mean_tokens for r in rs], [100 * r.accuracy for r in rs], marker="o", label=strategy)
        for r in rs:
            xy = (r.mean_tokens, 100 * r.accuracy)
            ax.annotate(r.budget, xy, fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("mean tokens per problem")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "accuracy versus compute")
    ax.grid(True, which="both", alpha=0.3)
    if by_strategy:
        ax.legend()
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
