"""Shared helpers for the CLI tests: the engine flags, and running `ponder` as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.fake_engine import engine_kind

REPO = Path(__file__).resolve().parents[2]

# While the sim engine is missing, a subprocess installs the fake engine before running main.
_WRAPPER = (
    "import sys; from tests.api.fake_engine import install; install(); "
    "from ponder.api.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture(scope="session")
def kind() -> str:
    return engine_kind()


@pytest.fixture
def engine(kind: str) -> list[str]:
    return ["--set", f"policy.kind={kind}", "--set", f"reward.kind={kind}"]


def ponder_command(kind: str) -> list[str]:
    if kind == "sim":
        return [sys.executable, "-m", "ponder"]
    return [sys.executable, "-c", _WRAPPER]


@pytest.fixture
def run_ponder(kind: str):
    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*ponder_command(kind), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
        )

    return run
