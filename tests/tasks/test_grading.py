"""Answer extraction and grading: fast path, math-verify path, timeouts and threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import pytest

from ponder.tasks import grading
from ponder.tasks.grading import as_number, extract_answer, grade, normalize


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("so \\boxed{42}.", "42"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{ {a}^{b} }", "{a}^{b}"),
        ("no box here", None),
        ("\\boxed{unbalanced", None),
    ],
)
def test_extract_answer(text: str, want: str | None) -> None:
    assert extract_answer(text) == want


@pytest.mark.parametrize(
    "pred", ["1/2", "\\frac{1}{2}", "0.5", "\\frac12", "\\dfrac{1}{2}", "$\\frac{1}{2}$", "\\boxed{0.50}"]
)
@pytest.mark.parametrize("ref", ["1/2", "\\frac{1}{2}", "0.5", "\\frac12"])
def test_half_equivalences(pred: str, ref: str) -> None:
    assert grade(pred, ref)


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("491", "491"),
        (" 491. ", "491"),
        ("1,000", "1000"),
        ("-3", "-3.0"),
        ("\\text{5}", "5"),
        ("10^\\circ", "10"),
        ("x^2+2x+1", "(x+1)^2"),  # symbolic: math-verify
        ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}"),
        ("$\\{1,2\\}$", "\\{2,1\\}"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ],
)
def test_equivalent(pred: str, ref: str) -> None:
    assert grade(pred, ref)


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("491", "492"),
        ("1/3", "0.33"),
        ("\\frac{1}{2}", "\\frac{1}{3}"),
        ("12", "1,2"),
        ("x^2+1", "(x+1)^2"),
        ("\\sqrt{3}", "\\sqrt{2}"),
        ("", "0"),
        (None, "0"),
        ("0", None),
        ("hello", "5"),
    ],
)
def test_not_equivalent(pred: str | None, ref: str | None) -> None:
    assert not grade(pred, ref)


def test_as_number_is_exact() -> None:
    assert as_number("\\frac{3}{4}") == Fraction(3, 4)
    assert as_number("-\\frac34") == Fraction(-3, 4)
    assert as_number("0.1") == Fraction(1, 10)
    assert as_number("1/0") is None
    assert as_number("x") is None


def test_normalize_strips_wrappers() -> None:
    assert normalize("$\\boxed{\\dfrac{1}{2}}$") == "\\frac{1}{2}"
    assert normalize("\\text{ 7 }.") == "7"


def test_grading_from_worker_threads() -> None:
    pairs = [
        ("x^2+2x+1", "(x+1)^2", True),
        ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True),
        ("\\sqrt{3}", "\\sqrt{2}", False),
    ]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda t: grade(t[0], t[1]), pairs))
    assert got == [want for _, _, want in pairs]
    assert threading.current_thread() is threading.main_thread()


def test_slow_math_verify_counts_as_not_equal(monkeypatch: pytest.MonkeyPatch) -> None:
    import math_verify

    def slow_verify(*args: object, **kwargs: object) -> bool:
        time.sleep(2)
        return True

    monkeypatch.setattr(math_verify, "verify", slow_verify)
    t0 = time.perf_counter()
    assert not grade("x^2+2x+1", "(x+1)^2", timeout_s=0.2)
    assert time.perf_counter() - t0 < 1.5
    assert grading.DEFAULT_TIMEOUT_S > 0
