"""The built-in arithmetic task: seeded multi-step integer problems with exact step checking.

A problem is a left-nested chain of operations, e.g. ``((37 + 48) * 6) - 19``. Its reference
solution has one operation per step, steps separated by the step delimiter, and the last step
ends with a line giving the answer in ``\\boxed{}``::

    37 + 48 = 85

    85 * 6 = 510

    510 - 19 = 491
    The answer is \\boxed{491}.

The step checker is exact, so it is the ground truth for PRM labels and for tests.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ponder.search.types import STEP_DELIMITER, Problem

PROMPT_PREFIX = "Compute "
_STEP_RE = re.compile(r"^\s*(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
_BOXED_LINE_RE = re.compile(r"^The answer is \\boxed\{(-?\d+)\}\.?$")


@dataclass(frozen=True)
class Level:
    """The difficulty knob: how many operations and how large the numbers are."""

    n_ops: int
    digits: int  # operands of + and - have up to this many digits
    mul_digits: int  # multipliers have up to this many digits (0: no multiplication)


# Difficulty comes from chain length and carries: operands stay at most 3 digits and multipliers
# one digit, so a sub-1M-parameter character model trained for CPU minutes learns each step well
# on short chains, while errors compound (and 3- and 4-digit carries bite) on long ones.
LEVELS: dict[int, Level] = {
    1: Level(n_ops=2, digits=2, mul_digits=0),
    2: Level(n_ops=3, digits=2, mul_digits=1),
    3: Level(n_ops=4, digits=2, mul_digits=1),
    4: Level(n_ops=6, digits=3, mul_digits=1),
    5: Level(n_ops=8, digits=3, mul_digits=1),
}
MAX_VALUE = 10**4  # multiply only below 1,000: intermediate values stay within 4 digits (plus additions)


@dataclass(frozen=True)
class Chain:
    """A parsed problem: a start value and a list of (op, operand)."""

    start: int
    ops: tuple[tuple[str, int], ...]

    def values(self) -> list[int]:
        """Value after each operation."""
        out, v = [], self.start
        for op, b in self.ops:
            v = apply(op, v, b)
            out.append(v)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def expression(self) -> str:
        expr = str(self.start)
        for i, (op, b) in enumerate(self.ops):
            expr = f"({expr} {op} {b})" if i < len(self.ops) - 1 else f"{expr} {op} {b}"
        return expr

    def text(self) -> str:
        return f"{PROMPT_PREFIX}{self.expression()}."

    def solution_steps(self) -> list[str]:
        steps, a = [], self.start
        for i, (op, b) in enumerate(self.ops):
            c = apply(op, a, b)
            steps.append(format_step(a, op, b, c, final=i == len(self.ops) - 1))
            a = c
        return steps

    def solution(self) -> str:
        return STEP_DELIMITER.join(self.solution_steps())


def apply(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operation {op!r}")


def format_step(a: int, op: str, b: int, c: int, final: bool = False) -> str:
    """One step; the final one also states its result as the boxed answer."""
    return f"{a} {op} {b} = {c}" + ("\n" + format_answer(c) if final else "")


def format_answer(value: int | str) -> str:
    return f"The answer is \\boxed{{{value}}}."


def slip_result(step: str, rng: random.Random) -> str:
    """A reference step with one digit of its result changed (the boxed answer too, on the last
    step): the smallest arithmetic slip, which a PRM that checks arithmetic must catch."""
    parsed, answer = parse_step(step)
    if parsed is None:
        raise ValueError(f"not a step: {step!r}")
    a, op, b, c = parsed
    digits = list(str(c))
    i = rng.randrange(len(digits))
    digits[i] = rng.choice([d for d in "0123456789" if d != digits[i] and (i or d != "0" or len(digits) == 1)])
    bad = int("".join(digits))
    return format_step(a, op, b, bad, final=answer is not None)


def _rand_digits(rng: random.Random, digits: int) -> int:
    return rng.randint(1 if digits == 1 else 10 ** (digits - 1) // 2, 10**digits - 1)


def make_chain(rng: random.Random, level: Level) -> Chain:
    v = _rand_digits(rng, level.digits)
    start, ops = v, []
    for _ in range(level.n_ops):
        choices = ["+", "-"]
        if level.mul_digits and 0 < abs(v) * 10**level.mul_digits < MAX_VALUE:
            choices.append("*")
        op = rng.choice(choices)
        if op == "*":
            b = rng.randint(2, 10**level.mul_digits - 1)
        elif op == "-":
            # stay non-negative: answers and intermediate values are natural numbers
            b = _rand_digits(rng, level.digits)
            if b > v:
                op = "+"
        else:
            b = _rand_digits(rng, level.digits)
        v = apply(op, v, b)
        ops.append((op, b))
    return Chain(start, tuple(ops))


def generate(n: int, seed: int = 0, levels: tuple[int, ...] = (1, 2, 3, 4, 5)) -> list[Problem]:
    """`n` problems cycling through `levels`, reproducible from `seed`."""
    if not levels or any(lv not in LEVELS for lv in levels):
        raise ValueError(f"levels must be among {sorted(LEVELS)}, got {list(levels)}")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lv = levels[i % len(levels)]
        chain = make_chain(rng, LEVELS[lv])
        out.append(Problem(id=f"arith-{seed}-{i}", problem=chain.text(), answer=str(chain.answer), level=str(lv)))
    return out


_EXPR_CHARS_RE = re.compile(r"[\d+\-*()\s]*")


def parse(problem_text: str) -> Chain:
    """Parse a problem produced by `Chain.text()` back into its chain.

    Spacing and the final period may vary; anything else (words, other operations, parentheses
    that do not nest to the left) is not an arithmetic problem and raises ValueError.
    """
    text = problem_text.strip()
    body = text[len(PROMPT_PREFIX) :].rstrip(".") if text.startswith(PROMPT_PREFIX) else ""
    toks = re.findall(r"\d+|[+\-*]", body)
    shaped = (
        _EXPR_CHARS_RE.fullmatch(body) is not None
        and len(toks) >= 3
        and len(toks) % 2 == 1
        and all(t.isdigit() == (k % 2 == 0) for k, t in enumerate(toks))
    )
    if shaped:
        chain = Chain(int(toks[0]), tuple((toks[k], int(toks[k + 1])) for k in range(1, len(toks), 2)))
        if "".join(chain.expression().split()) == "".join(body.split()):
            return chain
    raise ValueError(f"not an arithmetic problem: {problem_text[:60]!r}")


def parse_step(step: str) -> tuple[tuple[int, str, int, int] | None, str | None]:
    """Split a step into its operation (a, op, b, c) and its boxed answer, if any."""
    lines = [ln.strip() for ln in step.strip().split("\n") if ln.strip()]
    answer = None
    if lines:
        m = _BOXED_LINE_RE.match(lines[-1])
        if m:
            answer = m.group(1)
            lines = lines[:-1]
    if len(lines) != 1:
        return None, answer
    m = _STEP_RE.match(lines[0])
    if not m:
        return None, answer
    return (int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))), answer


def check_steps(problem_text: str, steps: list[str]) -> list[bool]:
    """Exact local correctness of each step, given the steps before it.

    Step i is right when it applies the problem's i-th operation to the result the previous
    step claimed (the start value for the first step), computes it correctly, and, on the last
    operation, states that result as the boxed answer (and not before).
    """
    chain = parse(problem_text)
    out: list[bool] = []
    prev = chain.start
    for i, step in enumerate(steps):
        parsed, answer = parse_step(step)
        ok = parsed is not None and i < len(chain.ops)
        if ok:
            a, op, b, c = parsed
            want_op, want_b = chain.ops[i]
            last = i == len(chain.ops) - 1
            ok = (
                a == prev
                and op == want_op
                and b == want_b
                and c == apply(op, a, b)
                and ((answer == str(c)) if last else answer is None)
            )
            prev = c
        out.append(ok)
    return out


def prefix_labels(problem_text: str, steps: list[str]) -> list[bool]:
    """Math-Shepherd style labels: is the solution still correct after step i?"""
    out, ok = [], True
    for good in check_steps(problem_text, steps):
        ok = ok and good
        out.append(ok)
    return out
