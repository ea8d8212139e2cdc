"""Engines for the runtime tests: the sim engine once it exists, else the deterministic fakes
of tests/search, built inside replica actors by these (picklable) builders."""

from __future__ import annotations

import importlib.util
from typing import Any

from ponder.config import EngineConfig

HAVE_SIM = importlib.util.find_spec("ponder.actors.sim") is not None


def build_policy(cfg: EngineConfig) -> Any:
    from tests.search.fakes import FakePolicy

    return FakePolicy(**cfg.options)


def build_reward(cfg: EngineConfig) -> Any:
    from tests.search.fakes import FakePRM

    return FakePRM(**cfg.options)


def engine_configs(delay: tuple[float, float] | None = (0.002, 0.01), p_correct: float = 0.7) -> tuple[EngineConfig, EngineConfig]:
    """Policy and reward configs with small latencies."""
    pol = EngineConfig(kind="fake", options={"p_correct": p_correct, "delay": delay})
    rew = EngineConfig(kind="fake", options={"delay": delay})
    return pol, rew
