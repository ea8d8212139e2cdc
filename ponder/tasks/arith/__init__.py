"""The built-in arithmetic task (see `problems`)."""

from ponder.tasks.arith.problems import (
    LEVELS,
    Chain,
    Level,
    check_steps,
    generate,
    parse,
    parse_step,
    prefix_labels,
)

__all__ = ["LEVELS", "Chain", "Level", "check_steps", "generate", "parse", "parse_step", "prefix_labels"]
