"""Answer extraction and grading (math-verify, with a fast exact-match path)."""

from __future__ import annotations


def extract_answer(text: str) -> str | None:
    """The content of the last \\boxed{...} in `text` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth, j = 1, i
    while j < len(text):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
        j += 1
    return None


def grade(predicted: str, reference: str) -> bool:
    """Placeholder exact match; replaced by the math-verify grader."""
    return predicted.strip() == reference.strip()
