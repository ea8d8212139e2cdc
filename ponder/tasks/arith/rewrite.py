"""Ordinary arithmetic wording rewritten into the arithmetic task's trained form, where exact.

The shipped models read one form only, the one `problems.generate` writes and `problems.parse`
accepts (`TRAINED_FORM`)::

    Compute ((37 + 48) * 6) - 19.

`to_trained_form` reads ordinary wordings of integer arithmetic ("What is 12 + 30 * 2?",
"Calculate 14 - 3 * 2.", "7 × (8 − 3) + 15 =") with the usual precedence and returns the same
computation in that form, or None when it has none. The rewrite never changes the value or the
order in which the operations are done: it only makes precedence explicit, and it may swap the
two operands of a + or * (``12 + 30 * 2`` is ``Compute (30 * 2) + 12.``: 30 * 2 first, then
+ 12, as before). It refuses, rather than regroup, whatever the form cannot hold: division,
negative numbers, decimals, powers, and an operation whose right operand is itself an
operation that cannot be swapped to the left (``a - (b + c)``, ``(a + b) * (c + d)``).

`training_notes` says where a problem in the form still lies outside what the models were
trained on (long chains, big operands, negative intermediate values); `assess` combines both
for a caller that wants one line to show the user. No `eval`: a small recursive-descent parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ponder.tasks.arith.problems import LEVELS, MAX_VALUE, Chain, parse

TRAINED_FORM = "'Compute ((a op b) op c) op d.' (+, - and * on non-negative integers, nested to the left)"
# The training range, from `problems.LEVELS` and `make_chain`.
MIN_OPS = min(lv.n_ops for lv in LEVELS.values())
MAX_OPS = max(lv.n_ops for lv in LEVELS.values())
MIN_OPERAND = min(1 if lv.digits == 1 else 10 ** (lv.digits - 1) // 2 for lv in LEVELS.values())
MAX_OPERAND = 10 ** max(lv.digits for lv in LEVELS.values()) - 1  # start value and +/- operands
MAX_MULTIPLIER = 10 ** max(lv.mul_digits for lv in LEVELS.values()) - 1  # multipliers 2..9
MAX_MULTIPLICAND = MAX_VALUE // 10 ** max(lv.mul_digits for lv in LEVELS.values())  # multiply below 1,000

# Training values stay below 10,000 but for additions after the last product (about 1 problem in
# 1,000 passes 10,000); twice that is well outside.
VALUE_LIMIT = 2 * MAX_VALUE

# "What is", "Calculate the value of", "Solve the following multiplication:", "State the final
# answer to the following arithmetic problem:" ... then the expression, then "=", "?" or ".".
_LEAD_RE = re.compile(
    r"^(?:please\s+)?"
    r"(?:what\s+is|what's|compute|calculate|evaluate|find|solve|work\s+out|simplify|determine|give"
    r"|state\s+the\s+(?:final\s+)?answer\s+to)"
    r"(?:\s+the\s+(?:value|result|answer)\s+(?:of|to))?"
    r"(?:\s+the\s+following(?:\s+(?:arithmetic|math))?"
    r"(?:\s+(?:expression|problem|sum|product|multiplication|addition|subtraction|calculation))?"
    r"|\s+the\s+(?:expression|sum|product))?"
    r"\s*:?\s*",
    re.IGNORECASE,
)
_TAIL_RE = re.compile(r"\s*(?:=\s*\??)?\s*[.?!]?\s*$")
_SYMBOLS = {"**": "^", "×": "*", "·": "*", "⋅": "*", "∗": "*", "÷": "/", "−": "-", "–": "-", "—": "-", "‐": "-",
            "\\times": "*", "\\cdot": "*", "\\div": "/"}  # fmt: skip
_WORDS_RE = re.compile(r"\b(plus|minus|times|multiplied\s+by|divided\s+by|x)\b", re.IGNORECASE)
_WORDS = {"plus": "+", "minus": "-", "times": "*", "x": "*", "multiplied by": "*", "divided by": "/"}
MAX_TOKENS = 500  # numbers, operators and parentheses; more is refused unread
_TOKEN_RE = re.compile(r"\s*(\d+\.\d*|\.\d+|\d+|[-+*/^()])")


class Refused(ValueError):
    """Text that has no exact trained form; the message says why, in a few words."""


def in_trained_form(text: str) -> bool:
    """Whether the task's parser accepts `text` as it is (what the shipped models were trained on)."""
    try:
        parse(text)
    except ValueError:
        return False
    return True


def to_trained_form(text: str) -> str | None:
    """`text` itself when it is in the trained form, else the same computation written in it
    (same value, same operations in the same order), else None."""
    try:
        return rewrite(text)
    except Refused:
        return None


def rewrite(text: str) -> str:
    """As `to_trained_form`, but raises `Refused` saying why there is no trained form."""
    if in_trained_form(text):
        return text
    tokens = _expression_of(text)
    if len(tokens) > MAX_TOKENS:
        raise Refused(f"more than {MAX_TOKENS} symbols")
    try:
        start, ops = _chain(_parse_expression(tokens))
    except RecursionError:
        raise Refused("nested too deeply") from None
    if not ops:
        raise Refused("no operation to compute")
    return Chain(start, tuple(ops)).text()


def training_notes(text: str) -> list[str]:
    """Where a problem in the trained form lies outside the training range (empty when inside):
    the models saw 2-8 operations, a start value and +/- operands from 5 to 999, multipliers
    2-9 applied to values below 1,000, and intermediate values from 0 to about 10,000."""
    chain = parse(text)
    notes = []
    if not MIN_OPS <= len(chain.ops) <= MAX_OPS:
        notes.append(f"{len(chain.ops)} operation{'' if len(chain.ops) == 1 else 's'} (trained on {MIN_OPS}-{MAX_OPS})")
    added = [chain.start, *(b for op, b in chain.ops if op != "*")]
    if min(added) < MIN_OPERAND:
        notes.append(f"an operand below {MIN_OPERAND}")
    if max(added) > MAX_OPERAND:
        notes.append(f"an operand above {MAX_OPERAND}")
    if any(op == "*" and not 2 <= b <= MAX_MULTIPLIER for op, b in chain.ops):
        notes.append(f"a multiplier outside 2-{MAX_MULTIPLIER}")
    befores = [chain.start, *chain.values()[:-1]]
    if any(op == "*" and v >= MAX_MULTIPLICAND for (op, _), v in zip(chain.ops, befores)):
        notes.append(f"a product of a value of {MAX_MULTIPLICAND} or more")
    values = chain.values()
    if min(values) < 0:
        notes.append("a negative intermediate value")
    if max(values) >= VALUE_LIMIT:
        notes.append(f"an intermediate value of {VALUE_LIMIT} or more")
    return notes


@dataclass(frozen=True)
class Assessment:
    """What to give the shipped models for one problem text, and what to tell the user."""

    original: str
    text: str  # what the models should read: the original, or its rewrite
    in_form: bool  # `text` is in the trained form
    rewritten: bool  # `text` is a rewrite of `original`
    reason: str | None = None  # why there is no trained form (when not `in_form`)
    notes: tuple[str, ...] = ()  # training-range notes (when `in_form`)

    def message(self) -> str | None:
        """One line for the user, or None when the problem is in the form and the range."""
        if not self.in_form:
            return f"outside what the shipped arithmetic models read ({self.reason}); they read only {TRAINED_FORM}"
        said = [f"rewritten as {self.text!r}"] if self.rewritten else []
        if self.notes:
            said.append("outside the training range (" + "; ".join(self.notes) + "), so accuracy is unmeasured")
        return "; ".join(said) or None


def assess(text: str) -> Assessment:
    """The trained form of `text` (itself when already in it), with the reason when it has none."""
    try:
        out = rewrite(text)
    except Refused as e:
        return Assessment(text, text, in_form=False, rewritten=False, reason=str(e))
    return Assessment(text, out, in_form=True, rewritten=out != text, notes=tuple(training_notes(out)))


# -- reading ordinary wording -------------------------------------------------------------------


def _expression_of(text: str) -> list[str]:
    """The tokens of the expression in `text`, with the lead phrase and final "=", "?" or "." cut."""
    s = " ".join(text.split())
    s = _LEAD_RE.sub("", s, count=1)
    s = _TAIL_RE.sub("", s, count=1)
    s = s.replace("$", "")
    for symbol, plain in _SYMBOLS.items():
        s = s.replace(symbol, plain)
    s = _WORDS_RE.sub(lambda m: _WORDS[" ".join(m.group(1).lower().split())], s)
    tokens, pos = [], 0
    while pos < len(s):
        m = _TOKEN_RE.match(s, pos)
        if m is None:
            if s[pos:].strip():
                raise Refused(f"not arithmetic at {s[pos:pos + 12]!r}")
            break
        tokens.append(m.group(1))
        pos = m.end()
    if not tokens:
        raise Refused("no expression")
    return tokens


# A tree is an int or (op, left, right); "neg" has right None. Grammar (usual precedence, left
# associative, ^ right associative and above unary minus, as in Python's **):
#   sum := product (("+" | "-") product)* ; product := unary (("*" | "/") unary)*
#   unary := "-" unary | "+" unary | power ; power := atom ("^" unary)? ; atom := int | "(" sum ")"
def _parse_expression(tokens: list[str]):
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def binary(operand, ops: str):
        def rule():
            node = operand()
            while peek() is not None and peek() in ops:
                op = take()
                node = (op, node, operand())
            return node

        return rule

    def unary():
        if peek() in ("-", "+"):
            sign = take()
            inner = unary()
            return ("neg", inner, None) if sign == "-" else inner
        return power()

    def power():
        base = atom()
        if peek() == "^":
            take()
            return ("^", base, unary())
        return base

    def atom():
        tok = take() if peek() is not None else None
        if tok is None:
            raise Refused("the expression ends early")
        if tok == "(":
            node = sum_()
            if peek() != ")":
                raise Refused("unbalanced parentheses")
            take()
            return node
        if tok.isdigit():
            return int(tok)
        if tok[0].isdigit() or tok[0] == ".":
            raise Refused("decimal numbers")
        raise Refused(f"{tok!r} where a number belongs")

    sum_ = binary(binary(unary, "*/"), "+-")
    tree = sum_()
    if pos != len(tokens):
        raise Refused(f"unexpected {tokens[pos]!r}")
    return tree


_NOT_IN_FORM = {"/": "division", "^": "powers", "neg": "negative numbers"}


def _chain(node) -> tuple[int, list[tuple[str, int]]]:
    """The left-nested chain computing `node` with the same operations in the same order."""
    if isinstance(node, int):
        return node, []
    op, left, right = node
    if op in _NOT_IN_FORM:
        raise Refused(_NOT_IN_FORM[op])
    if op in "+*" and isinstance(left, int) and not isinstance(right, int):
        left, right = right, left  # a + (b * c) -> (b * c) + a: the same two operations
    elif op == "*" and isinstance(left, int) and isinstance(right, int) and right > MAX_MULTIPLIER >= left:
        left, right = right, left  # 3 * 40 -> 40 * 3: the trained form multiplies by one digit
    if not isinstance(right, int):
        _chain(right)  # a reason inside the right operand comes first (division, negatives)
        if not isinstance(left, int):
            _chain(left)
            raise Refused("an operation on two computed values")
        raise Refused("subtracting a computed value")
    start, ops = _chain(left)
    return start, [*ops, (op, right)]
