"""`ponder jobs` on the embedded default: the first command starts a real redis-server under
the state directory, later ones find the same one; bad ids and URLs are one-line errors."""

import json

import pytest

from ponder.api import cli
from ponder.jobs.embedded import EmbeddedRedis

pytestmark = pytest.mark.redis


@pytest.fixture
def state(tmp_path):
    d = tmp_path / "state"
    yield d
    EmbeddedRedis(d).stop()


def test_jobs_commands_start_and_then_find_the_embedded_store(state, capsys):
    assert cli.main(["jobs", "list", "--state-dir", str(state)]) == 0
    assert "no jobs" in capsys.readouterr().err
    info = json.loads((state / "redis" / "server.json").read_text())
    assert cli.main(["jobs", "list", "--all", "--state-dir", str(state)]) == 0
    assert json.loads((state / "redis" / "server.json").read_text())["pid"] == info["pid"]  # the same server
    assert cli.main(["jobs", "status", "ab" * 16, "--state-dir", str(state)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"ponder: error: no job {'ab' * 16}"


def test_submit_validates_before_touching_any_store(tmp_path, capsys):
    state = tmp_path / "never"
    assert cli.main(["submit", "arith:5", "--strategy", "nope", "--state-dir", str(state)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert cli.main(["submit", "arith:5", "--budget", "n=0", "--state-dir", str(state)]) == 2
    assert cli.main(["submit", "missing.jsonl", "--state-dir", str(state)]) == 1
    assert cli.main(["submit", "arith:5", "--address", "inprocess", "--state-dir", str(state)]) == 2
    assert "inprocess" in capsys.readouterr().err
    assert not state.exists()  # nothing was started or written
