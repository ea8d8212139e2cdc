"""Build engines from `EngineConfig`. Each engine class has `from_config(EngineConfig)`.

Engine modules are imported only when their kind is asked for, so the `vllm` extra is needed
only by users of the vllm engine.
"""

from __future__ import annotations

import importlib
from typing import Any

from ponder.config import ConfigError, EngineConfig

# kind -> (module, policy class, reward class)
ENGINES: dict[str, tuple[str, str, str]] = {
    "sim": ("ponder.actors.sim", "SimPolicy", "SimReward"),
    "hf": ("ponder.actors.hf", "HFPolicy", "HFReward"),
    "vllm": ("ponder.actors.vllm_engine", "VLLMPolicy", "VLLMReward"),
    "openai": ("ponder.actors.openai_engine", "OpenAIPolicy", "OpenAIReward"),
}


def _engine_class(kind: str, role: int) -> Any:
    if kind not in ENGINES:
        raise ConfigError(f"unknown engine kind {kind!r} (known: {', '.join(ENGINES)})")
    module, *classes = ENGINES[kind]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"engine {kind!r} is not available: {e}") from None
    cls = getattr(mod, classes[role], None)
    if cls is None:
        raise ConfigError(f"engine {kind!r} has no {'policy' if role == 0 else 'reward'} implementation")
    return cls


def build_policy(cfg: EngineConfig) -> Any:
    return _engine_class(cfg.kind, 0).from_config(cfg)


def build_reward(cfg: EngineConfig) -> Any:
    return _engine_class(cfg.kind, 1).from_config(cfg)
