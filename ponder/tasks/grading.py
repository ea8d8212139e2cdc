"""Answer extraction and grading (math-verify, with a fast exact-match path).

`grade` first tries cheap exact comparisons (normalised strings; integers, decimals and simple
fractions compared as exact rationals), which settle every arithmetic-task answer and most
MATH-500 ones. Anything else goes to math-verify. math-verify's own timeouts use signals, which
only work on the main thread, so they are switched off and each call runs in a daemon worker
thread that `grade` waits on for at most `timeout_s`; a call that runs over counts as "not
equal" (the thread is left to finish on its own; a daemon thread never blocks exit).
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction
from typing import Any

DEFAULT_TIMEOUT_S = 5.0


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


# Layout-only LaTeX that never changes an answer's value.
_NOISE = [
    "\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "~",
    "^\\circ", "^{\\circ}", "\\displaystyle", "\\$",
]  # fmt: skip
_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_FRAC_RE = re.compile(r"^(-?)\\[dt]?frac(?:\{(\d+)\}|(\d))(?:\{(\d+)\}|(\d))$")
_SLASH_RE = re.compile(r"^(-?\d+)/(\d+)$")
_NUMBER_RE = re.compile(r"^-?(\d+\.?\d*|\.\d+)$")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d*)?$")


def normalize(answer: str) -> str:
    """A canonical string for exact comparison: no $ or \\boxed wrapper, no spacing commands,
    no spaces, \\dfrac/\\tfrac as \\frac, no trailing period."""
    s = answer.strip()
    boxed = extract_answer(s)
    if boxed is not None:
        s = boxed
    s = s.strip().strip("$").strip()
    for noise in _NOISE:
        s = s.replace(noise, "")
    s = _TEXT_RE.sub(r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\s+", "", s).rstrip(".")
    return s


def as_number(answer: str) -> Fraction | None:
    """The exact value of an integer, decimal (thousands commas allowed) or simple fraction
    (`a/b`, `\\frac{a}{b}`, `\\frac12`), or None for anything else."""
    s = normalize(answer)
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    if _NUMBER_RE.match(s):
        return Fraction(s)
    m = _SLASH_RE.match(s)
    if m:
        num, den = int(m.group(1)), int(m.group(2))
        return Fraction(num, den) if den else None
    m = _FRAC_RE.match(s)
    if m:
        num, den = int(m.group(2) or m.group(3)), int(m.group(4) or m.group(5))
        if not den:
            return None
        return -Fraction(num, den) if m.group(1) else Fraction(num, den)
    return None


def grade(predicted: str | None, reference: str | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Is `predicted` mathematically the same answer as `reference`?

    Either may be bare ("\\frac{1}{2}"), in $...$ or in \\boxed{}. Safe to call from any thread.
    """
    if predicted is None or reference is None:
        return False
    p, r = normalize(predicted), normalize(reference)
    if not p or not r:
        return False
    if p == r:
        return True
    pn, rn = as_number(p), as_number(r)
    if pn is not None and rn is not None:
        return pn == rn
    return _math_verify(predicted, reference, timeout_s)


def _for_math_verify(answer: str) -> str:
    """math-verify finds LaTeX inside $...$ or \\boxed{}; a bare reference gets the $."""
    s = answer.strip()
    return s if ("$" in s or "\\boxed" in s) else f"${s}$"


def _math_verify(predicted: str, reference: str, timeout_s: float) -> bool:
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            from math_verify import parse, verify

            gold = parse(_for_math_verify(reference), parsing_timeout=None)
            pred = parse(_for_math_verify(predicted), parsing_timeout=None)
            box["ok"] = bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=None))
        except Exception:  # an unparsable answer is simply not equal
            box["ok"] = False

    _quiet_math_verify()
    worker = threading.Thread(target=work, name="grade", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return bool(box.get("ok", False))


_quieted = False


def _quiet_math_verify() -> None:
    """math-verify warns once that its timeouts are off; we bound the time ourselves."""
    global _quieted
    if _quieted:
        return
    try:
        from math_verify import grader, parser

        grader.TIMEOUT_WARNING_SHOWN = True
        parser.TIMEOUT_WARNING_SHOWN = True
    except (ImportError, AttributeError):
        pass
    _quieted = True
