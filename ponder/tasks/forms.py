"""What problem text a model reads, as the model declares it.

A model directory may hold `ponder_task.json` with `{"problem_form": NAME}`: the model was
trained on one form of problem only (the shipped arithmetic models: `arith`). Entry points that
take free text from a user (`ponder solve`, the HTTP service) then give the model the problem in
that form where it can be rewritten exactly, and say so, or warn that the problem is outside it.
A model without the file (any real LLM) reads the user's text unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ponder.config import EngineConfig

FORM_FILE = "ponder_task.json"


def policy_form(policy: EngineConfig) -> str | None:
    """The form a policy engine's model declares; only local model directories (hf) can say."""
    return problem_form(policy.path) if policy.kind == "hf" else None


def problem_form(model_dir: str | None) -> str | None:
    if not model_dir:
        return None
    try:
        data = json.loads((Path(model_dir) / FORM_FILE).read_text())
    except (OSError, ValueError):
        return None
    form = data.get("problem_form") if isinstance(data, dict) else None
    return form if isinstance(form, str) else None


@dataclass(frozen=True)
class Prepared:
    text: str  # what the model should read
    notice: str | None  # one line for the user, or None


def prepare(text: str, form: str | None) -> Prepared:
    """`text` for a model that reads `form` (None: any text), with what the user should know."""
    if form == "arith":
        from ponder.tasks.arith.rewrite import assess

        a = assess(text)
        return Prepared(a.text, a.message())
    return Prepared(text, None)
