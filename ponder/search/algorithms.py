"""Imports every built-in search algorithm so that each registers itself."""

from ponder.search import (  # noqa: F401
    beam_search,
    best_of_n,
    dvts,
    mcts,
    particle_filtering,
    rebase,
    self_consistency,
)
