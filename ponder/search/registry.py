"""Strategy registry: name -> (async search function, config dataclass).

Every config dataclass has a width field `n` (samples, beams or particles), which a budget
like `n=16` sets; a token budget is enforced by the context.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ponder.search.context import SearchContext
from ponder.search.types import Problem, SearchResult

SearchFn = Callable[[Problem, SearchContext, Any], Awaitable[SearchResult]]


class UnknownStrategy(ValueError):
    pass


@dataclass(frozen=True)
class Strategy:
    name: str
    fn: SearchFn
    config_cls: type

    def make_config(self, params: dict[str, Any] | None = None, n: int | None = None) -> Any:
        params = dict(params or {})
        if n is not None:
            params["n"] = n
        known = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"strategy {self.name!r} has no parameter {unknown[0]!r} (known: {', '.join(sorted(known))})")
        hints = typing.get_type_hints(self.config_cls)
        for key, value in params.items():
            want = hints.get(key)
            if want is int and (type(value) is not int):  # beam_width=2.0 would fail every search later
                raise ValueError(f"strategy {self.name!r}: parameter {key!r} must be an integer, got {value!r}")
            if want is float and (type(value) not in (int, float) or not math.isfinite(value)):
                raise ValueError(f"strategy {self.name!r}: parameter {key!r} must be a finite number, got {value!r}")
            if want is str and type(value) is not str:
                raise ValueError(f"strategy {self.name!r}: parameter {key!r} must be a string, got {value!r}")
        cfg = self.config_cls(**params)
        validate = getattr(cfg, "validate", None)
        if validate:
            validate()
        return cfg


_REGISTRY: dict[str, Strategy] = {}


def register(name: str, config_cls: type) -> Callable[[SearchFn], SearchFn]:
    def deco(fn: SearchFn) -> SearchFn:
        _REGISTRY[name] = Strategy(name, fn, config_cls)
        return fn

    return deco


_plugins_loaded = False


def _load_builtins() -> None:
    """Importing the modules registers them: the built-in algorithms, then the modules named by
    the `ponder.strategies` entry points (other rooms' strategies, and third-party ones)."""
    global _plugins_loaded
    from ponder.search import algorithms  # noqa: F401

    if _plugins_loaded:
        return
    _plugins_loaded = True
    import importlib
    from importlib.metadata import entry_points

    for ep in entry_points(group="ponder.strategies"):
        if ep.name not in _REGISTRY:
            importlib.import_module(ep.value)


def get(name: str) -> Strategy:
    _load_builtins()
    if name not in _REGISTRY:
        raise UnknownStrategy(f"unknown strategy {name!r} (known: {', '.join(names())})")
    return _REGISTRY[name]


def names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)
