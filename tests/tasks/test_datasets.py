"""Dataset specs: arith:N, JSONL (MATH-500 style), local files through `datasets`, hf: names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ponder.tasks import datasets as ds
from ponder.tasks.arith.problems import parse
from ponder.tasks.datasets import DatasetError, load_problems

ROWS = [
    {"problem": "What is $1+1$?", "answer": "2", "id": "a", "level": 1, "subject": "Algebra"},
    {"problem": "Half of one?", "answer": "\\frac{1}{2}", "level": "Level 3"},
    {"problem": "Seven squared?", "answer": 49},
]


def write_jsonl(path: Path, rows: list[object], extra_lines: list[str] = ()) -> Path:
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


# -- arith ---------------------------------------------------------------------------------------


def test_arith_spec_with_options() -> None:
    base = load_problems("arith:10")
    assert [p.id for p in base] == [f"arith-0-{i}" for i in range(10)]
    assert [p.level for p in base[:5]] == ["1", "2", "3", "4", "5"]
    assert load_problems("arith:10") == base
    other = load_problems("arith:10:seed=7")
    assert [p.problem for p in other] != [p.problem for p in base]
    easy = load_problems("arith:6:levels=1-2:seed=3")
    assert {p.level for p in easy} == {"1", "2"}
    assert {p.level for p in load_problems("arith:4:levels=5")} == {"5"}
    assert {p.level for p in load_problems("arith:4:levels=1,4")} == {"1", "4"}
    assert len(load_problems("arith:10", limit=3)) == 3
    for p in easy:  # the references are right
        assert parse(p.problem).answer == int(p.answer)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("arith:x", "use arith:N"),
        ("arith:0", "must be positive"),
        ("arith:5:seed=z", "bad seed"),
        ("arith:5:levels=0-9", "bad levels"),
        ("arith:5:levels=", "bad levels"),
        ("arith:5:depth=3", "unknown option 'depth'"),
        ("arith:5:seed", "key=value"),
    ],
)
def test_arith_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_problems(spec)


def test_bad_limit() -> None:
    with pytest.raises(DatasetError, match="limit must be positive"):
        load_problems("arith:5", limit=0)


# -- JSONL ---------------------------------------------------------------------------------------


def test_jsonl_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "math.jsonl", ROWS)
    problems = load_problems(str(path))
    assert [p.id for p in problems] == ["a", "math-1", "math-2"]
    assert [p.answer for p in problems] == ["2", "\\frac{1}{2}", "49"]
    assert [p.level for p in problems] == ["1", "Level 3", None]
    assert problems[0].meta == {"subject": "Algebra"}
    assert [p.id for p in load_problems(str(path), limit=2)] == ["a", "math-1"]


def test_jsonl_ids_are_line_indices(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(
        json.dumps({"problem": "p0"})
        + "\n\n"
        + json.dumps({"problem": "p2", "unique_id": 17})
        + "\n"
        + json.dumps({"problem": "p3"})
    )
    problems = load_problems(str(path))
    assert [p.id for p in problems] == ["set-0", "17", "set-3"]
    assert problems[0].answer is None
    # appending lines keeps the ids of the lines before (resume stays valid)
    with path.open("a") as f:
        f.write("\n" + json.dumps({"problem": "p4"}) + "\n")
    assert [p.id for p in load_problems(str(path))] == ["set-0", "17", "set-3", "set-4"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset not found: .*nope.jsonl"):
        load_problems(str(tmp_path / "nope.jsonl"))


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", ROWS[:2], ['{"problem": "x", '])
    with pytest.raises(DatasetError, match=r"bad.jsonl:3: malformed JSON") as e:
        load_problems(str(path))
    assert "\n" not in str(e.value)


def test_line_without_problem(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "np.jsonl", [ROWS[0], {"question": "where is problem?"}])
    with pytest.raises(DatasetError, match=r"np.jsonl:2: no 'problem' text"):
        load_problems(str(path))


def test_line_not_an_object(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "list.jsonl", [[1, 2]])
    with pytest.raises(DatasetError, match=r"list.jsonl:1: expected a JSON object, got list"):
        load_problems(str(path))


def test_duplicate_ids(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "dup.jsonl", [ROWS[0], ROWS[1], {"problem": "again", "id": "a"}])
    with pytest.raises(DatasetError, match=r"dup.jsonl:3: duplicate id 'a' \(first on line 1\)"):
        load_problems(str(path))


def test_empty_dataset(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(DatasetError, match="is empty"):
        load_problems(str(path))


def test_unsupported_format(tmp_path: Path) -> None:
    path = tmp_path / "problems.txt"
    path.write_text("1+1")
    with pytest.raises(DatasetError, match="unsupported dataset format '.txt'"):
        load_problems(str(path))


# -- files through the datasets library ------------------------------------------------------------


def test_local_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"problem": r["problem"], "answer": str(r["answer"]), "level": i + 1} for i, r in enumerate(ROWS)]
    path = tmp_path / "math500.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    problems = load_problems(str(path))
    assert [p.id for p in problems] == ["math500-0", "math500-1", "math500-2"]
    assert [p.answer for p in problems] == ["2", "\\frac{1}{2}", "49"]
    assert [p.level for p in problems] == ["1", "2", "3"]


def test_local_json_and_saved_folder(tmp_path: Path) -> None:
    import datasets

    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"problem": "p", "answer": 3.0, "id": 5}, {"problem": "q", "answer": 0.5, "id": 6}]))
    problems = load_problems(str(path))
    assert [(p.id, p.answer) for p in problems] == [("5", "3"), ("6", "0.5")]

    folder = tmp_path / "saved"
    datasets.Dataset.from_list([{"problem": "r", "answer": "1"}, {"problem": "s", "answer": "2"}]).save_to_disk(
        str(folder)
    )
    assert [p.id for p in load_problems(str(folder))] == ["saved-0", "saved-1"]


def test_parquet_row_errors(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_pylist([{"problem": "a", "id": "x"}, {"problem": "b", "id": "x"}]), path)
    with pytest.raises(DatasetError, match=r"dup.parquet: row 1: duplicate id 'x'"):
        load_problems(str(path))
    path = tmp_path / "noproblem.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "a"}]), path)
    with pytest.raises(DatasetError, match=r"noproblem.parquet: row 0: no 'problem' text"):
        load_problems(str(path))


def test_corrupt_parquet_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match="broken.parquet: cannot read") as e:
        load_problems(str(path))
    assert "\n" not in str(e.value)


# -- hf: -----------------------------------------------------------------------------------------


def test_hub_goes_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load(name: str, split: str) -> datasets.Dataset:
        calls.append((name, split))
        return datasets.Dataset.from_list(
            [
                {"problem": "p", "answer": 1, "unique_id": "test/alg/1.json"},
                {"problem": "q", "answer": 2, "unique_id": None},
            ]
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    problems = load_problems("hf:org/math-500")
    assert calls == [("org/math-500", "test")]
    assert [(p.id, p.answer) for p in problems] == [("test/alg/1.json", "1"), ("org-math-500-1", "2")]
    load_problems("hf:org/math-500:train")
    assert calls[-1] == ("org/math-500", "train")


def test_hub_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach the Hub\n(offline)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        DatasetError, match=r"hf:org/x: cannot load from the Hugging Face Hub: Couldn't reach the Hub \(offline\)"
    ):
        load_problems("hf:org/x")
    with pytest.raises(DatasetError, match="use hf:name"):
        load_problems("hf:")


def test_dataset_dict_split_choice() -> None:
    import datasets

    one = datasets.Dataset.from_list([{"problem": "p"}])
    assert ds._one_split(datasets.DatasetDict({"train": one}), "x") is not None
    assert ds._one_split(datasets.DatasetDict({"train": one, "test": one}), "x") is one
    with pytest.raises(DatasetError, match="several splits"):
        ds._one_split(datasets.DatasetDict({"train": one, "dev": one}), "x")


# -- JSONL edge cases ------------------------------------------------------------------------------


def test_jsonl_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(ROWS[0]) + "\n").encode())
    assert [p.id for p in load_problems(str(path))] == ["a"]
    assert [p.id for p in ds.problems_from_jsonl("\ufeff" + json.dumps(ROWS[0]), "upload")] == ["a"]


def test_jsonl_lines_may_hold_unicode_line_separators(tmp_path: Path) -> None:
    rows = [{"problem": "one\u2028two", "answer": "1"}, {"problem": "three\x85four", "answer": "2"}]
    path = tmp_path / "seps.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    problems = load_problems(str(path))
    assert [p.problem for p in problems] == ["one\u2028two", "three\x85four"]
    assert [p.id for p in problems] == ["seps-0", "seps-1"]


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes((json.dumps(ROWS[0]) + "\n").encode() + '{"problem": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin1.jsonl:2: not UTF-8 text") as e:
        load_problems(str(path))
    assert "\n" not in str(e.value)
    with pytest.raises(DatasetError, match=r"upload:1: not UTF-8 text"):
        ds.problems_from_jsonl(b'{"problem": "\xff"}', "upload")


def test_empty_answer_is_unlabelled_and_floats_are_positional(tmp_path: Path) -> None:
    rows = [{"problem": "p", "answer": ""}, {"problem": "q", "answer": "  "}, {"problem": "r", "answer": 1.5e-7},
            {"problem": "s", "answer": 2.5}, {"problem": "t", "answer": 1e20}]
    problems = load_problems(str(write_jsonl(tmp_path / "answers.jsonl", rows)))
    assert [p.answer for p in problems] == [None, None, "0.00000015", "2.5", "100000000000000000000"]


def test_an_integer_too_long_for_python_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    path.write_text('{"problem": "p", "answer": ' + "1" * 5000 + "}\n")
    with pytest.raises(DatasetError, match=r"huge.jsonl:1: malformed JSON") as e:
        load_problems(str(path))
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_a_generated_dataset_beyond_the_machine_is_refused_at_once():
    import time

    from ponder.tasks.datasets import DatasetError, load_problems

    t0 = time.perf_counter()
    with pytest.raises(DatasetError, match="at most"):
        load_problems("arith:1000000000")
    assert time.perf_counter() - t0 < 1.0
