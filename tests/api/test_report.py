"""The summary table and the accuracy-versus-compute plot over result records."""

from __future__ import annotations

from ponder.api.report import format_table, plot, summarize


def rec(strategy, budget, level, correct, cost, wall=0.5, stop="done"):
    return {
        "id": f"{strategy}-{budget}-{level}-{cost}",
        "strategy": strategy,
        "budget": budget,
        "level": level,
        "correct": correct,
        "compute": {"cost": cost},
        "wall_time": wall,
        "stop_reason": stop,
    }


RECORDS = [
    rec("beam_search", "n=16", "1", True, 400),
    rec("beam_search", "n=16", "2", False, 600, wall=1.5),
    rec("best_of_n", "n=4", "1", True, 100),
    rec("best_of_n", "n=4", "2", False, 100),
    rec("best_of_n", "n=4", "2", False, 100, stop="error"),
    rec("beam_search", "n=4", "1", True, 100),
    rec("beam_search", "n=4", "10", True, 200),
    rec("best_of_n", "n=4", None, None, 100),  # no reference: not graded
]


def test_summary_rows_accuracy_tokens_wall_and_levels():
    rows = summarize(RECORDS)
    assert [(r.strategy, r.budget) for r in rows] == [
        ("beam_search", "n=4"),  # budgets ordered by mean tokens within a strategy
        ("beam_search", "n=16"),
        ("best_of_n", "n=4"),
    ]
    b4, b16, bon = rows
    assert b16.accuracy == 0.5 and b16.mean_tokens == 500 and b16.mean_wall == 1.0
    assert b4.accuracy == 1.0 and b4.by_level == {"1": (1, 1), "10": (1, 1)}
    assert bon.problems == 4 and bon.graded == 3 and bon.correct == 1 and bon.errors == 1
    assert bon.by_level == {"1": (1, 1), "2": (0, 2)}


def test_table_has_a_row_per_group_and_level_columns_in_numeric_order():
    table = format_table(summarize(RECORDS))
    lines = table.splitlines()
    header = lines[0].split()
    assert header[:6] == ["strategy", "budget", "n", "acc%", "tokens", "wall"]
    assert [h for h in header if h.startswith("L")] == ["L1", "L2", "L10"]
    assert header[-1] == "errors"
    assert len(lines) == 2 + 3
    bon = next(line.split() for line in lines if line.startswith("best_of_n"))
    assert bon[2:6] == ["4", "33.3", "100", "0.50"]


def test_plot_writes_a_png(tmp_path):
    out = plot(summarize(RECORDS), tmp_path / "acc.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_different_configs_and_datasets_are_never_one_row():
    from ponder.api.report import format_table, summarize

    def rec(i, dataset, fp, correct):
        return {"id": str(i), "strategy": "best_of_n", "budget": "n=4", "fingerprint": fp, "dataset": dataset,
                "correct": correct, "stop_reason": "done", "compute": {"cost": 10.0}, "wall_time": 0.1}

    recs = [rec(i, "a.jsonl", "fp-majority", True) for i in range(6)]
    recs += [rec(i, "a.jsonl", "fp-prmvote", False) for i in range(6)]
    recs += [rec(i, "b.jsonl", "fp-majority", True) for i in range(4)]
    rows = summarize(recs)
    assert [(r.dataset, r.fingerprint, r.problems) for r in rows] == [
        ("a.jsonl", "fp-majority", 6), ("a.jsonl", "fp-prmvote", 6), ("b.jsonl", "fp-majority", 4)]
    table = format_table(rows).splitlines()
    assert table[0].split()[:4] == ["dataset", "strategy", "budget", "config"]
    assert table[3].split()[:5] == ["a.jsonl", "best_of_n", "n=4", "fp-prmvote", "6"]


def test_results_without_an_answer_are_counted_apart():
    recs = [
        {**rec("best_of_n", "n=4", "1", True, 100), "answer": "3"},
        {**rec("best_of_n", "n=4", "1", False, 100), "answer": "4"},
        {**rec("best_of_n", "n=4", "1", False, 100, stop="no_answer"), "answer": None},
        {**rec("best_of_n", "n=4", "1", False, 100, stop="budget"), "answer": None},
        {**rec("best_of_n", "n=4", "1", None, 100, stop="error"), "answer": None},  # an error, not "no answer"
    ]
    (row,) = summarize(recs)
    assert row.no_answer == 2 and row.errors == 1 and row.graded == 4
    header, _, line = format_table([row]).splitlines()
    assert header.split()[-2:] == ["no-answer", "errors"] and line.split()[-2:] == ["2", "1"]
    # older records (no answer field) and tables where every result has an answer: no column
    assert "no-answer" not in format_table(summarize(RECORDS))


def test_levels_in_difficulty_order():
    recs = [rec("s", "b", lv, True, 1) for lv in ["hard", "easy", "medium", "10", "2", "other", "alpha"]]
    (row,) = summarize(recs)
    assert list(row.by_level) == ["2", "10", "easy", "medium", "hard", "alpha", "other"]
    header = format_table([row]).splitlines()[0].split()
    assert header[-7:] == ["L2", "L10", "easy", "medium", "hard", "alpha", "other"]
