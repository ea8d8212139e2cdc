"""Bad input: one line `ponder: error: ...`, a non-zero exit (2 usage, 1 otherwise), and an
existing results file left byte-identical (even one whose last line is torn)."""

from __future__ import annotations

import json

import pytest

from ponder.api import cli

# Two finished records and a torn third: only a real run may cut the torn line.
DONE = {"strategy": "best_of_n", "budget": "n=4", "fingerprint": "x", "stop_reason": "done"}
PRIOR = "".join(json.dumps({"id": f"arith-0-{i}", **DONE}) + "\n" for i in range(2)) + '{"id": "arith-0-2", "strat'


@pytest.fixture
def files(tmp_path):
    (tmp_path / "nolabel.jsonl").write_text('{"problem": "Compute 1 + 2.", "answer": "3"}\n{"answer": "4"}\n')
    (tmp_path / "notjson.jsonl").write_text("{this is not json\n")
    (tmp_path / "bad.yaml").write_text("search: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "unknown.yaml").write_text("search:\n  nope: 1\n")
    (tmp_path / "empty-model").mkdir()
    return tmp_path


# (extra argv, exit code, a word the message must contain or None)
CASES = {
    "missing dataset": (["--dataset", "{d}/nope.jsonl"], 1, "nope.jsonl"),
    "line without problem": (["--dataset", "{d}/nolabel.jsonl"], 1, None),
    "dataset not json": (["--dataset", "{d}/notjson.jsonl"], 1, None),
    "zero arith problems": (["--dataset", "arith:0"], 1, None),
    "malformed arith spec": (["--dataset", "arith:lots"], 1, None),
    "unknown strategy": (["--strategy", "telepathy"], 2, "telepathy"),
    "second strategy unknown": (["--strategy", "best_of_n", "--strategy", "nope"], 2, "nope"),
    "zero budget": (["--budget", "0"], 2, "budget"),
    "negative budget": (["--budget", "-5"], 2, "budget"),
    "zero width": (["--budget", "n=0"], 2, "budget"),
    "malformed budget": (["--budget", "lots"], 2, "budget"),
    "budget incompatible with strategy": (["--strategy", "beam_search", "--budget", "n=6"], 2, "beam_search"),
    "missing model directory": (["--set", "policy.kind=hf", "--set", "policy.path={d}/no-model"], 1, "no-model"),
    "model directory without a model": (["--set", "policy.kind=hf", "--set", "policy.path={d}/empty-model"], 1, None),
    "missing config file": (["--config", "{d}/none.yaml"], 2, "none.yaml"),
    "invalid yaml": (["--config", "{d}/bad.yaml"], 2, "bad.yaml"),
    "config not a mapping": (["--config", "{d}/list.yaml"], 2, "list.yaml"),
    "unknown key in config file": (["--config", "{d}/unknown.yaml"], 2, "nope"),
    "override without =": (["--set", "search.seed"], 2, "search.seed"),
    "override of an unknown key": (["--set", "search.nope=1"], 2, "nope"),
    "unknown strategy parameter": (["--set", "search.params.bogus=1"], 2, "bogus"),
    "bad strategy parameter value": (["--strategy", "beam_search", "--set", "search.params.beam_width=0"], 2, None),
    "params not a mapping": (["--set", "search.params=3"], 2, "search.params"),
    "wrong type of setting": (["--set", "search.temperature=hot"], 2, "search.temperature"),
    "wrong type of section": (["--set", "scheduler=5"], 2, "scheduler"),
    "zero limit": (["--limit", "0"], 2, "positive"),
    "unknown engine": (["--set", "policy.kind=quantum"], 1, "quantum"),
    "unknown flag": (["--frobnicate"], 2, "frobnicate"),
    "plot into a missing directory": (["--plot", "{d}/no/dir/p.png"], 1, "dir"),
}


@pytest.mark.parametrize("extra,code,word", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_and_leaves_out_untouched(files, engine, capsys, extra, code, word):
    out = files / "r.jsonl"
    out.write_text(PRIOR)
    argv = ["eval", "--dataset", "arith:3", "--quiet", "--out", str(out), *engine]
    argv += [a.format(d=files) for a in extra]  # later flags win over the defaults above
    assert cli.main(argv) == code
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ponder: error: "), captured.err
    if word:
        assert word in err[0]
    assert captured.out == ""
    assert out.read_text() == PRIOR


def test_results_path_in_a_missing_directory(tmp_path, engine, capsys):
    out = tmp_path / "no" / "r.jsonl"
    assert cli.main(["eval", "--dataset", "arith:2", "--out", str(out), *engine]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ponder: error: results file directory does not exist")
    assert not out.parent.exists()


@pytest.mark.parametrize(
    "argv,code",
    [
        (["eval"], 2),  # --dataset is required
        (["launch"], 2),
        ([], 2),
        (["report", "/nonexistent/r.jsonl"], 1),
        (["solve", "  "], 2),
        (["solve", "Compute 1 + 2.", "--strategy", "nope"], 2),
        (["solve", "Compute 1 + 2.", "--budget", "n=-1"], 2),
    ],
)
def test_other_commands_bad_input(argv, code, capsys):
    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ponder: error: ")


def test_report_on_a_file_without_results(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "x", "stra')
    assert cli.main(["report", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ponder: error: results file") and "no results" in err[-1]
    assert path.read_text() == '{"id": "x", "stra'  # reading never modifies the file


def test_plot_paths_are_checked_before_any_work(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    engine = ["--set", "policy.kind=sim", "--set", "reward.kind=sim", "--address", "inprocess"]
    base = ["eval", "--dataset", "arith:3", "--quiet", "--out", str(out), *engine]
    for plot, says in ((str(out), "would overwrite"), (str(tmp_path / "noext"), "no extension"),
                       (str(tmp_path / "p.xyz"), "'.xyz'")):
        assert cli.main([*base, "--plot", plot]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err
    assert not out.exists()  # refused before anything ran or was written
    assert cli.main([*base, "--plot", str(tmp_path / "ok.svg")]) == 0
    assert (tmp_path / "ok.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert cli.main(["report", str(out), "--plot", str(out)]) == 2
    assert "would overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("content", [
    "notes I keep\nlast line without a newline",
    '{"problem": "Compute 1 + 2.", "answer": "3"}\n{"problem": "Compute 2 + 2.", "answer": "4"}',
], ids=["text file", "a dataset"])
def test_out_that_is_not_a_results_file_is_refused_untouched(tmp_path, engine, capsys, content):
    out = tmp_path / "mine.jsonl"
    out.write_text(content)
    code = cli.main(["eval", "--dataset", "arith:2", "--out", str(out), *engine])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "not a ponder results file" in err and len(err.splitlines()) == 1
    assert out.read_text() == content
