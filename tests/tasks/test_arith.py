"""The built-in arithmetic task: generator, parser, exact step checker and prefix labels."""

from __future__ import annotations

import pytest

from ponder.search.types import STEP_DELIMITER
from ponder.tasks.arith.problems import (
    LEVELS,
    Chain,
    apply,
    check_steps,
    format_answer,
    format_step,
    generate,
    parse,
    parse_step,
    prefix_labels,
    slip_result,
)
from ponder.tasks.grading import extract_answer, grade

PROBLEMS = generate(200, seed=11)


def steps_of(problem_text: str) -> list[str]:
    return parse(problem_text).solution_steps()


def test_seeded_reproducibility() -> None:
    assert generate(30, seed=5) == generate(30, seed=5)
    assert [p.problem for p in generate(30, seed=5)] != [p.problem for p in generate(30, seed=6)]
    # a prefix of a longer run is the shorter run (problem i does not depend on n)
    assert generate(10, seed=5) == generate(30, seed=5)[:10]
    assert len({p.id for p in generate(50, seed=5)}) == 50


def test_levels_shape_the_problems() -> None:
    for p in PROBLEMS:
        level = LEVELS[int(p.level)]
        chain = parse(p.problem)
        assert len(chain.ops) == level.n_ops
        assert chain.start < 10**level.digits
        for op, b in chain.ops:
            limit = 10**level.mul_digits if op == "*" else 10**level.digits
            assert 0 < b < limit
        if level.mul_digits == 0:
            assert all(op != "*" for op, _ in chain.ops)
        assert all(v >= 0 for v in chain.values())  # natural numbers throughout
    assert {p.level for p in generate(10, levels=(2, 4))} == {"2", "4"}
    with pytest.raises(ValueError, match="levels must be among"):
        generate(3, levels=(6,))


def test_references_pass_the_checker() -> None:
    for p in PROBLEMS:
        steps = steps_of(p.problem)
        assert check_steps(p.problem, steps) == [True] * len(steps)
        assert prefix_labels(p.problem, steps) == [True] * len(steps)
        solution = STEP_DELIMITER.join(steps)
        assert extract_answer(solution) == p.answer
        assert grade(extract_answer(solution), p.answer)


def test_parse_round_trip() -> None:
    for p in PROBLEMS:
        chain = parse(p.problem)
        assert chain.text() == p.problem
        assert parse(chain.text()) == chain
        assert str(chain.answer) == p.answer
    # spacing and the final period may vary
    assert parse("Compute ((3+4) * 2)-1") == Chain(3, (("+", 4), ("*", 2), ("-", 1)))


@pytest.mark.parametrize(
    "text",
    [
        "What is 3 + 4?",
        "Compute 3.",
        "Compute 3 +.",
        "Compute 3 + 4 +.",
        "Compute 3 / 4.",
        "Compute 3 + + 4.",
        "Compute the sum of 3 + 4.",
        "Compute 3 + (4 * 2).",  # not left-nested: the chain would mean (3 + 4) * 2
        "Compute 3 4 + 5.",
        "",
    ],
)
def test_parse_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="not an arithmetic problem"):
        parse(text)


def test_parse_step() -> None:
    assert parse_step("37 + 48 = 85") == ((37, "+", 48, 85), None)
    assert parse_step("510 - 19 = 491\nThe answer is \\boxed{491}.") == ((510, "-", 19, 491), "491")
    assert parse_step("The answer is \\boxed{7}.") == (None, "7")
    assert parse_step("so 3 + 4 is 7") == (None, None)
    assert parse_step("3 + 4 = 7\n4 + 1 = 5") == (None, None)


# -- corruptions: each kind must fail at the corrupted step, and every later prefix label too --


def corrupt(problem_text: str, kind: str) -> tuple[list[str], int]:
    """The reference steps with one corruption, and the index of the first wrong step."""
    chain = parse(problem_text)
    steps = steps_of(problem_text)
    values = chain.values()
    i = len(steps) // 2
    a = chain.start if i == 0 else values[i - 1]
    op, b = chain.ops[i]
    last = i == len(steps) - 1
    tail = "\n" + format_answer(values[i]) if last else ""
    if kind == "wrong_result":
        steps[i] = format_step(a, op, b, values[i] + 10) + ("\n" + format_answer(values[i] + 10) if last else "")
    elif kind == "wrong_operand":
        steps[i] = format_step(a, op, b + 1, apply(op, a, b + 1)) + tail
    elif kind == "wrong_left_operand":
        steps[i] = format_step(a + 1, op, b, apply(op, a + 1, b)) + tail
    elif kind == "wrong_operation":
        other = "+" if op != "+" else "-"
        steps[i] = format_step(a, other, b, apply(other, a, b)) + tail
    elif kind == "skipped_step":  # a middle step, so a step follows in its place
        i = (len(steps) - 1) // 2
        del steps[i]
    elif kind == "early_answer":
        i = 0
        steps[0] += "\n" + format_answer(values[0])
    elif kind == "missing_answer":
        i = len(steps) - 1
        steps[i] = steps[i].split("\n")[0]
    elif kind == "wrong_boxed":
        i = len(steps) - 1
        steps[i] = steps[i].split("\n")[0] + "\n" + format_answer(values[-1] + 1)
    elif kind == "extra_step":
        i = len(steps)
        steps.append(format_step(values[-1], "+", 1, values[-1] + 1))
    elif kind == "garbled":
        steps[i] = "I think the answer is large"
    else:
        raise AssertionError(kind)
    return steps, i


KINDS = [
    "wrong_result",
    "wrong_operand",
    "wrong_left_operand",
    "wrong_operation",
    "skipped_step",
    "early_answer",
    "missing_answer",
    "wrong_boxed",
    "extra_step",
    "garbled",
]


@pytest.mark.parametrize("kind", KINDS)
def test_corruptions_fail(kind: str) -> None:
    for p in PROBLEMS[:40]:
        steps, i = corrupt(p.problem, kind)
        checks = check_steps(p.problem, steps)
        assert checks[:i] == [True] * i, (kind, steps)
        assert checks[i] is False, (kind, steps)
        labels = prefix_labels(p.problem, steps)
        assert labels == [True] * i + [False] * (len(steps) - i)


def test_checker_is_local_after_an_error() -> None:
    """A step that correctly continues from a wrong value is locally right (the PRM label is
    what stays False)."""
    p = PROBLEMS[3]
    chain = parse(p.problem)
    steps, a = [], chain.start + 1  # the first step is off by one, then consistent
    for k, (op, b) in enumerate(chain.ops):
        c = apply(op, a if k else chain.start, b) + (1 if k == 0 else 0)
        steps.append(format_step(a if k else chain.start, op, b, c))
        a = c
    steps[-1] += "\n" + format_answer(a)
    assert check_steps(p.problem, steps) == [False] + [True] * (len(steps) - 1)
    assert prefix_labels(p.problem, steps) == [False] * len(steps)


def test_empty_and_partial_solutions() -> None:
    p = PROBLEMS[0]
    steps = steps_of(p.problem)
    assert check_steps(p.problem, []) == []
    assert prefix_labels(p.problem, steps[:1]) == [True]
    with pytest.raises(ValueError, match="not an arithmetic problem"):
        check_steps("What is 2 + 2?", steps)


def test_slip_result_changes_one_digit() -> None:
    import random

    rng = random.Random(0)
    for p in PROBLEMS[:60]:
        steps = steps_of(p.problem)
        k = rng.randrange(len(steps))
        bad = slip_result(steps[k], rng)
        (a, op, b, c), answer = parse_step(steps[k])
        (a2, op2, b2, c2), answer2 = parse_step(bad)
        assert (a2, op2, b2) == (a, op, b) and len(str(c2)) == len(str(c))
        assert sum(x != y for x, y in zip(str(c), str(c2))) == 1
        assert (answer2 is None) == (answer is None) and (answer2 is None or answer2 == str(c2))
        assert prefix_labels(p.problem, steps[:k] + [bad])[-1] is False
    with pytest.raises(ValueError, match="not a step"):
        slip_result("I think so", rng)
