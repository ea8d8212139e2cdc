"""Ordinary arithmetic wording -> the arithmetic task's trained form (`ponder.tasks.arith.rewrite`)."""

from __future__ import annotations

import ast
import random
from fractions import Fraction

import pytest

from ponder.tasks.arith.problems import generate, parse
from ponder.tasks.arith.rewrite import assess, in_trained_form, rewrite, to_trained_form, training_notes


@pytest.mark.parametrize(
    "text, want",
    [
        ("What is 12 + 30 * 2?", "Compute (30 * 2) + 12."),
        ("Compute 7 * (8 - 3) + 15.", "Compute ((8 - 3) * 7) + 15."),
        ("12+30*2", "Compute (30 * 2) + 12."),
        ("Find the value of 45 + 38 - 12.", "Compute (45 + 38) - 12."),
        ("Evaluate (45 + 38) × 6 − 19", "Compute ((45 + 38) * 6) - 19."),
        ("Calculate the value of 3 * 40 + 5.", "Compute (40 * 3) + 5."),  # the one-digit multiplier right
        ("What is 5 plus 3 times 2?", "Compute (3 * 2) + 5."),
        ("State the final answer to the following arithmetic problem: 12 + 45 - 7 =", "Compute (12 + 45) - 7."),
        ("Solve the following multiplication: 7 * 8 * 3 =", "Compute (7 * 8) * 3."),
        ("Evaluate the expression: ((2 + 3)) * 4", "Compute (2 + 3) * 4."),
        ("what's 10 - 4 - 3 = ?", "Compute (10 - 4) - 3."),
        ("$6 \\times 7 + 1$", "Compute (6 * 7) + 1."),
        ("Work out 45 + 38.", "Compute 45 + 38."),
    ],
)
def test_rewrites_ordinary_wording(text, want):
    assert to_trained_form(text) == want
    assert in_trained_form(want) and not in_trained_form(text)


@pytest.mark.parametrize(
    "text, why",
    [
        ("Calculate 14 - 3 * 2.", "subtracting a computed value"),
        ("3 - (4 + 5)", "subtracting a computed value"),
        ("(1 + 2) * (3 + 4)", "two computed values"),
        ("Evaluate 7 × (8 − 3) ÷ 5", "division"),
        ("-1 + -5 * 8 + -8 =", "negative"),
        ("2 ** 3 + 1", "powers"),
        ("What is 1.5 + 2?", "decimal"),
        ("What is 7?", "no operation"),
        ("What is 2 + 3 apples?", "not arithmetic"),
        ("How many legs do 3 spiders have?", "not arithmetic"),
        ("(2 + 3", "unbalanced"),
        ("2 + * 3", "where a number belongs"),
        ("", "no expression"),
        ("(" * 240 + "1 + 2" + ")" * 240, "nested too deeply"),
        ("1 + " * 300 + "1", "more than 500 symbols"),
    ],
)
def test_refuses_what_the_form_cannot_hold(text, why):
    assert to_trained_form(text) is None
    with pytest.raises(ValueError, match=why):
        rewrite(text)
    a = assess(text)
    assert not a.in_form and why in a.reason and "outside what the shipped arithmetic models read" in a.message()


def test_task_problems_are_in_the_form_and_the_training_range():
    for p in generate(500, seed=3):
        assert in_trained_form(p.problem)
        assert to_trained_form(p.problem) == p.problem  # left as it is
        assert training_notes(p.problem) == []
        assert assess(p.problem).message() is None


def test_training_notes():
    assert training_notes("Compute 32 * 7.") == ["1 operation (trained on 2-8)"]
    assert "a multiplier outside 2-9" in training_notes("Compute (40 * 12) + 5.")
    assert "a negative intermediate value" in training_notes("Compute (30 - 45) + 20.")
    assert "an operand below 5" in training_notes("Compute (8 + 3) + 12.")
    a = assess("What is 3 - 10 + 4?")
    assert a.rewritten and a.text == "Compute (3 - 10) + 4." and "outside the training range" in a.message()


# -- exactness: same value, same operations in the same order -------------------------------------

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def _walk(node, steps: list[Fraction]) -> Fraction:
    """Python's own reading of the expression (ast): its value, and each operation's result in
    the order Python computes them."""
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp):
        return -_walk(node.operand, steps)
    a, b = _walk(node.left, steps), _walk(node.right, steps)
    op = _OPS[type(node.op)]
    v = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else Fraction(0)}[op]
    steps.append(v)
    return v


def _random_expression(rng: random.Random, n_ops: int) -> str:
    if n_ops == 0:
        n = rng.randint(0, 10 ** rng.randint(1, 3) - 1)
        return f"-{n}" if rng.random() < 0.03 else str(n)
    left = rng.randint(0, n_ops - 1)
    op = rng.choice("+-*" * 8 + "/")
    s = f"{_random_expression(rng, left)} {op} {_random_expression(rng, n_ops - 1 - left)}"
    return f"({s})" if rng.random() < 0.5 else s


def _convertible(node) -> bool:
    """Independently: no division or negative, and each operation has at most one computed
    operand, on the right only for + and *."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) or isinstance(node.op, ast.Div):
        return False
    left, right = (not isinstance(x, ast.Constant) for x in (node.left, node.right))
    if right and (left or isinstance(node.op, ast.Sub)):
        return False
    return _convertible(node.left) and _convertible(node.right)


def test_rewrite_is_exact_on_random_expressions():
    rng = random.Random(0)
    converted = refused = 0
    for _ in range(3000):
        expr = _random_expression(rng, rng.randint(1, 6))
        tree = ast.parse(expr, mode="eval").body
        steps: list[Fraction] = []
        value = _walk(tree, steps)
        text = rng.choice(["What is {}?", "Calculate {}.", "{} =", "{}", "Find the value of {}."]).format(expr)
        if rng.random() < 0.3:
            text = text.replace("*", "×").replace(" - ", " − ")
        out = to_trained_form(text)
        assert (out is not None) == _convertible(tree), (expr, out)
        if out is None:
            refused += 1
            continue
        converted += 1
        chain = parse(out)
        assert chain.answer == value, (expr, out)
        assert chain.values() == steps, (expr, out)  # the same operations, in the same order
    assert converted > 500 and refused > 500
