"""The JSONL results store: durability, torn lines, resume keys and the config fingerprint."""

from __future__ import annotations

import json

import pytest

from ponder.jobs.store import JsonlStore, MemoryStore, config_fingerprint, record_key
from ponder.config import PonderConfig


def rec(pid: str, stop: str = "done", strategy: str = "best_of_n", budget: str = "n=4", fp: str = "abc", **kw) -> dict:
    return {"id": pid, "strategy": strategy, "budget": budget, "fingerprint": fp, "stop_reason": stop, **kw}


def test_append_then_reopen_round_trips(tmp_path):
    path = tmp_path / "r.jsonl"
    store = JsonlStore(path)
    assert store.records() == [] and not path.exists()  # opening writes nothing
    store.append(rec("a", answer="1"))
    store.append(rec("b", answer="2"))
    store.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b"]
    again = JsonlStore(path)
    assert again.done_keys() == {("a", "best_of_n", "n=4", "abc"), ("b", "best_of_n", "n=4", "abc")}
    assert [r["answer"] for r in again.records()] == ["1", "2"]


def test_truncated_last_line_is_dropped_and_cut_before_the_next_append(tmp_path):
    path = tmp_path / "r.jsonl"
    good = json.dumps(rec("a")) + "\n" + json.dumps(rec("b")) + "\n"
    path.write_text(good + json.dumps(rec("c"))[:25])
    store = JsonlStore(path)
    assert store.warnings == [f"dropping a truncated last line in {path}"]
    assert {k[0] for k in store.done_keys()} == {"a", "b"}
    assert path.read_text().startswith(good)  # reading alone changes nothing
    store.append(rec("c"))
    store.close()
    assert path.read_text() == good + json.dumps(rec("c")) + "\n"


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(rec("a")))
    store = JsonlStore(path)
    assert {k[0] for k in store.done_keys()} == {"a"}
    store.append(rec("b"))
    store.close()
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["a", "b"]


def test_malformed_middle_line_is_ignored_but_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    text = json.dumps(rec("a")) + "\n" + "not json\n" + json.dumps(rec("b")) + "\n"
    path.write_text(text)
    store = JsonlStore(path)
    assert store.warnings == [f"ignoring malformed line 2 of {path}"]
    assert [r["id"] for r in store.records()] == ["a", "b"]
    store.append(rec("c"))
    store.close()
    assert path.read_text() == text + json.dumps(rec("c")) + "\n"


def test_errors_are_not_done_and_a_retry_supersedes_them(tmp_path):
    for store in (JsonlStore(tmp_path / "r.jsonl"), MemoryStore()):
        store.append(rec("a", stop="error", answer=None))
        store.append(rec("b"))
        assert {k[0] for k in store.done_keys()} == {"b"}
        store.append(rec("a", answer="7"))
        store.append(rec("b", stop="error"))  # a later failure never hides a finished result
        latest = {r["id"]: r for r in store.records()}
        assert len(store.records()) == 2
        assert latest["a"]["answer"] == "7" and latest["b"]["stop_reason"] == "done"
        store.close()


def test_fingerprint_tracks_what_changes_results_only():
    base = PonderConfig()
    fp = config_fingerprint(base, "beam_search", {"beam_width": 4})
    assert fp == config_fingerprint(PonderConfig(), "beam_search", {"beam_width": 4})  # stable
    assert len(fp) == 12

    def changed(**sections) -> str:
        cfg = PonderConfig.from_dict(sections)
        return config_fingerprint(cfg, "beam_search", {"beam_width": 4})

    # Engines, search settings and strategy parameters change the fingerprint...
    assert changed(policy={"kind": "hf", "path": "models/x"}) != fp
    assert changed(reward={"options": {"noise": 0.1}}) != fp
    assert changed(search={"temperature": 0.5}) != fp
    assert changed(search={"seed": 3}) != fp
    assert config_fingerprint(base, "beam_search", {"beam_width": 2}) != fp
    assert config_fingerprint(base, "dvts", {"beam_width": 4}) != fp
    # ...batching, concurrency, the cluster and the API do not.
    assert changed(scheduler={"max_batch": 8, "max_concurrent_searches": 2}) == fp
    assert changed(cluster={"address": "local", "policy_replicas": 4}, api={"port": 9000}) == fp
    assert changed(policy={"max_batch": 4, "device": "cpu"}) == fp


def test_fingerprint_follows_the_allocation_table_content(tmp_path):
    table = tmp_path / "table.yaml"
    table.write_text("easy: best_of_n\n")
    cfg = PonderConfig.from_dict({"scheduler": {"allocation_table": str(table)}})
    before = config_fingerprint(cfg, "auto")
    assert config_fingerprint(cfg, "auto") == before
    table.write_text("easy: beam_search\n")  # recalibrated in place
    assert config_fingerprint(cfg, "auto") != before


def test_record_key_uses_id_strategy_budget_and_fingerprint():
    assert record_key(rec("p1", strategy="mcts", budget="n=8", fp="f")) == ("p1", "mcts", "n=8", "f")


def test_a_second_writer_is_refused_at_once_and_the_file_stays_whole(tmp_path):
    import subprocess
    import sys

    from ponder.jobs.store import StoreError, open_store

    path = tmp_path / "r.jsonl"
    first = open_store(path)
    first.append({"id": "a", "strategy": "s", "budget": "n=1", "fingerprint": "f", "stop_reason": "done"})
    # Another process (flock is per open file, so a real second process is the honest test).
    code = ("import sys; from ponder.jobs.store import open_store, StoreError\n"
            f"try:\n    open_store({str(path)!r})\nexcept StoreError as e:\n    print(e); sys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 3 and "being written by another ponder process" in out.stdout
    with pytest.raises(StoreError):
        open_store(path)  # a second writer in this process too
    first.close()
    again = open_store(path)  # free once the first closed it
    assert len(again.records()) == 1
    again.close()
