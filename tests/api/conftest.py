"""Shared fixtures for the CLI tests: the engine flags, and running `ponder` as a subprocess."""

from __future__ import annotations

import subprocess

import pytest

from tests.api.fake_engine import engine_kind
from tests.api.process import REPO, ponder_command


@pytest.fixture(scope="session")
def kind() -> str:
    return engine_kind()


@pytest.fixture
def engine(kind: str) -> list[str]:
    # In-process: the CLI tests are about the CLI; tests/api/test_cli_ray.py runs it over Ray.
    return ["--set", f"policy.kind={kind}", "--set", f"reward.kind={kind}", "--address", "inprocess"]


@pytest.fixture
def run_ponder(kind: str):
    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*ponder_command(kind), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
        )

    return run
