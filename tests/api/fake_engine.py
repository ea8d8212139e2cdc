"""A test-only engine kind ("fake") over the deterministic fakes of tests/search, registered into
the engine factory: the CLI tests that need its `delay` option (e.g. to interrupt a run) use it."""

from __future__ import annotations

import importlib.util

from ponder.actors import factory
from ponder.config import EngineConfig
from tests.search.fakes import FakePolicy, FakePRM


class FakeApiPolicy(FakePolicy):
    @classmethod
    def from_config(cls, cfg: EngineConfig) -> FakeApiPolicy:
        return cls(**cfg.options)


class FakeApiReward(FakePRM):
    @classmethod
    def from_config(cls, cfg: EngineConfig) -> FakeApiReward:
        return cls(**cfg.options)


def install() -> None:
    factory.ENGINES.setdefault("fake", (__name__, "FakeApiPolicy", "FakeApiReward"))


def engine_kind() -> str:
    """`sim` once it exists, else the fake (installed)."""
    if importlib.util.find_spec("ponder.actors.sim") is not None:
        return "sim"
    install()
    return "fake"
