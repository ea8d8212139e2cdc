"""Rendering the example configs: the CLI in-process, into a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from ponder.api.cli import main

REPO = Path(__file__).resolve().parents[2]

# The repo's rendered files and the commands that make them (run from the repo root).
EXAMPLES = [
    ("configs/deploy-prod.yaml", ["rayservice", "rayjob"], "k8s/prod"),
    ("configs/deploy-dev.yaml", ["rayservice", "rayjob"], "k8s/dev"),
    ("configs/deploy-prod.yaml", ["cluster-launcher"], "."),
]


def command(config: str, targets: list[str], out: str) -> list[str]:
    return ["deploy", "render", "--config", config, *(a for t in targets for a in ("--target", t)), "--out", out]


def shell_command(config: str, targets: list[str], out: str) -> str:
    return "ponder " + " ".join(command(config, targets, out))


def render_examples(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Render every example under `root` as the repo has it (config paths relative to the repo)."""
    monkeypatch.chdir(REPO)
    for config, targets, out in EXAMPLES:
        assert main(command(config, targets, str(root / out))) == 0


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rendered")
    with pytest.MonkeyPatch.context() as mp:
        render_examples(root, mp)
    return root
