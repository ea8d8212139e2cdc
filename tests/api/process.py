"""Running `ponder` as a subprocess from the repository root."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# With the fake engine, the subprocess installs it before running main.
_WRAPPER = (
    "import sys; from tests.api.fake_engine import install; install(); "
    "from ponder.api.cli import main; sys.exit(main(sys.argv[1:]))"
)


def ponder_command(kind: str) -> list[str]:
    if kind == "sim":
        return [sys.executable, "-m", "ponder"]
    return [sys.executable, "-c", _WRAPPER]
