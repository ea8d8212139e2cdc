"""Answer extraction and grading (math-verify, with a fast exact path).

`extract_answer` finds a solution's final answer the way the field's graders do (math-verify's
extraction targets, lm-evaluation-harness's MATH and GSM8K patterns); it runs per candidate, so
it is a few linear scans.

`grade` first tries cheap exact comparisons (normalised strings; integers, decimals and simple
fractions compared by exact value; base-b numerals like `52_8`), which settle every
arithmetic-task answer and most MATH-500 ones. Anything else goes to math-verify, in a small
pool of worker processes: a sympy computation on big integers (`3^{3^{3^{3}}}`, `9999999!`)
holds the GIL, so neither a thread nor math-verify's signal-based timeouts can stop it, but a
process can be killed. A call that runs over `timeout_s` counts as "not equal" and its worker
is killed and replaced. `answer_key` is the same equivalence as a string, for grouping votes.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import logging
import math
import os
import re
import select
import subprocess
import sys
import threading
from fractions import Fraction

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
_START_TIMEOUT_S = 60.0  # a fresh worker imports sympy and math-verify (about a second)
_POOL_SIZE = max(1, min(4, os.cpu_count() or 1))
_MAX_DIGITS = 1000  # longest numerator/denominator turned into an int (Python refuses > 4,300 digits)


# -- extraction ---------------------------------------------------------------------------------

# Minerva's format (math-verify's first priority; lm-eval's minerva_math).
_MINERVA_RE = re.compile(r"final answer is:?\s*(.{1,300}?)\s*I hope it is correct", re.IGNORECASE | re.DOTALL)
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(\s*\{|\s+)")  # \boxed{..}, \fbox{..} and lm-eval's `\boxed 5`
_BOX_SPACE_RE = re.compile(r"[^\s$]+")
# "The answer is N." (lm-eval's GSM8K chain-of-thought), "Final answer is $x$", "**Answer:** N":
# a math environment or a number right after the anchor, as math-verify's answer patterns take.
# Environments are bounded (300 characters) so that unclosed ones cannot make a scan quadratic.
_ANSWER_IS_RE = re.compile(
    r"answer\**(?:\s+is|\s*:)\s*:?\s*\**\s*"
    r"(\$\$.{1,300}?\$\$|\$[^$\n]{1,300}\$|\\\(.{1,300}?\\\)|\\\[.{1,300}?\\\]|-?\\?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?)",
    re.IGNORECASE,
)
_GSM8K_RE = re.compile(r"####\s*([^\n]+)")  # GSM8K's reference solutions end "#### N"


def extract_answer(text: str) -> str | None:
    """The final answer stated in `text`, or None when it states none.

    In order: Minerva's "final answer is X. I hope it is correct"; the last non-empty
    \\boxed{...} or \\fbox{...} (braces balanced) or `\\boxed X`; the last "answer is X" /
    "answer: X" (X a $...$ or \\(...\\) environment or a number); the last "#### X". Only
    anchored answers count: a bare number is no answer (an engine ends a solution at the step
    that states one).
    """
    for find in (_minerva, _last_box, _answer_is, _gsm8k):
        answer = find(text)
        if answer:
            return answer
    return None


def _minerva(text: str) -> str | None:
    return _last_group(_MINERVA_RE, text)


def _last_box(text: str) -> str | None:
    boxes = list(_BOX_RE.finditer(text))
    closing = _closing_braces(text, boxes[0].start()) if boxes else {}
    for m in reversed(boxes):
        if m.group(1).endswith("{"):
            end = closing.get(m.end() - 1)
            inner = text[m.end() : end] if end is not None else None
        else:
            word = _BOX_SPACE_RE.match(text, m.end())
            inner = _unwrap(word.group()) if word else None
        if inner is not None and inner.strip():
            return inner.strip()
    return None


def _closing_braces(text: str, start: int) -> dict[int, int]:
    """Where each "{" from `start` on is closed: one pass, however many boxes are unbalanced."""
    opened: list[int] = []
    closing: dict[int, int] = {}
    for j in range(start, len(text)):
        if text[j] == "{":
            opened.append(j)
        elif text[j] == "}" and opened:
            closing[opened.pop()] = j
    return closing


def _answer_is(text: str) -> str | None:
    return _last_group(_ANSWER_IS_RE, text)


def _gsm8k(text: str) -> str | None:
    return _last_group(_GSM8K_RE, text)


def _last_group(regex: re.Pattern[str], text: str) -> str | None:
    matches = list(regex.finditer(text))
    return _unwrap(matches[-1].group(1)) if matches else None


def _unwrap(s: str) -> str | None:
    """Without surrounding $...$, $$...$$, \\(...\\), \\[...\\] and a trailing period."""
    while True:
        before = s
        s = s.strip().rstrip(".").strip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)]
                break
        if s == before:
            return s or None


# -- normalisation ------------------------------------------------------------------------------

# Layout-only LaTeX that never changes an answer's value.
_NOISE = [
    "\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "~",
    "^\\circ", "^{\\circ}", "\\displaystyle", "\\$",
]  # fmt: skip
# A unit after a value, as MATH writes them (`36 \text{ dollars}`, `5\text{ cm}^2`); a single
# letter right after the value is kept (`2\mathrm{e}`, `3\text{i}` are values, not units).
_UNIT_RE = re.compile(r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\{(?:\s+[A-Za-z]|[A-Za-z]{2})[A-Za-z .]*\}(\^\{?[23]\}?)?$")
_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_FRAC_RE = re.compile(r"(-?)\\frac(?:\{(-?\d+)\}|(\d))(?:\{(\d+)\}|(\d))")
_SLASH_RE = re.compile(r"([+-]?\d+)/(\d+)")
_NUMBER_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")
_BASE_RE = re.compile(r"([0-9A-Za-z]+)_\{?(\d{1,2})\}?")  # 52_8, 1011_{2}, A_{16}


@functools.lru_cache(maxsize=1 << 16)  # a search votes over the same few answers again and again
def normalize(answer: str) -> str:
    """A canonical string for exact comparison: the extracted answer (if `answer` is a whole
    solution or \\boxed{}), no $ wrapper, spacing commands, units or spaces, \\dfrac/\\tfrac as
    \\frac, no trailing period."""
    s = extract_answer(answer) or answer
    s = _unwrap(s) or ""
    for noise in _NOISE:
        s = s.replace(noise, "")
    s = _UNIT_RE.sub("", s)
    s = _TEXT_RE.sub(r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return re.sub(r"\s+", "", s).rstrip(".")


def _number_key(s: str) -> str | None:
    """The exact value of a normalised integer, decimal (thousands commas allowed) or simple
    fraction as one string: a terminating decimal ("0.5", "-12") or "p/q"; None otherwise."""
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    if _NUMBER_RE.fullmatch(s):
        # Digit strings, not int(): linear in the length, and no limit on it.
        sign, body = ("-" if s[0] == "-" else ""), s.lstrip("+-")
        whole, _, frac = body.partition(".")
        key = (whole.lstrip("0") or "0") + ("." + frac.rstrip("0") if frac.rstrip("0") else "")
        return sign + key if key != "0" else key
    m = _SLASH_RE.fullmatch(s)
    if m:
        sign, num, den = "", m.group(1), m.group(2)
    else:
        m = _FRAC_RE.fullmatch(s)
        if not m:
            return None
        sign, num, den = m.group(1), m.group(2) or m.group(3), m.group(4) or m.group(5)
    if len(num) > _MAX_DIGITS or len(den) > _MAX_DIGITS or not int(den):
        return None
    value = Fraction(int(num), int(den))
    return _render(-value if sign else value)


def _render(value: Fraction) -> str:
    """"0.5" for 1/2 (a terminating decimal, as _number_key writes decimals), "1/3" for 1/3."""
    q = value.denominator
    twos = (q & -q).bit_length() - 1
    rest, fives = q >> twos, 0
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{value.numerator}/{q}"
    k = max(twos, fives)
    digits = str(abs(value.numerator) * 10**k // q).rjust(k + 1, "0")
    return _number_key(("-" if value < 0 else "") + digits[: len(digits) - k] + "." + digits[len(digits) - k :])  # type: ignore[return-value]


def _base_key(s: str) -> str | None:
    """"52_8" for a base-8 numeral; None unless every digit is valid in its base."""
    m = _BASE_RE.fullmatch(s)
    if not m:
        return None
    digits, base = m.group(1).upper().lstrip("0") or "0", int(m.group(2))
    if not 2 <= base <= 36 or any(int(c, 36) >= base for c in digits):
        return None
    return f"{digits}_{base}"


def as_number(answer: str) -> Fraction | None:
    """The exact value of an integer, decimal (thousands commas allowed) or simple fraction
    (`a/b`, `\\frac{a}{b}`, `\\frac12`), or None for anything else (or anything too long)."""
    key = _number_key(normalize(answer))
    return Fraction(key) if key is not None and len(key) <= _MAX_DIGITS else None


def answer_key(answer: str) -> str:
    """A string that two answers share when the exact path grades them equal: the value of a
    number ("1/2", "0.5", "\\frac12" all give "0.5"), a base-b numeral, else the normalised
    string. Cheap; what votes group by."""
    s = normalize(answer)
    return _number_key(s) or _base_key(s) or s


# -- grading ------------------------------------------------------------------------------------


def grade(predicted: str | None, reference: str | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Is `predicted` mathematically the same answer as `reference`?

    Either may be bare ("\\frac{1}{2}"), in $...$ or \\boxed{}, or a whole solution. Safe to
    call from any thread; math-verify gets at most `timeout_s` (after waiting for a free worker).
    """
    return bool(verdict(predicted, reference, timeout_s))


def verdict(predicted: str | None, reference: str | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool | None:
    """`grade`, but None when math-verify could not decide within `timeout_s` (a runaway
    computation): the caller can say the record is ungraded instead of wrong."""
    fast = _exact_grade(predicted, reference)
    if fast is not None:
        return fast
    return _math_verify(predicted, reference, timeout_s)  # type: ignore[arg-type]


async def grade_async(predicted: str | None, reference: str | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """`grade` for asyncio code: the exact path inline (it is cheap), math-verify waited on in
    a thread, so the event loop keeps running."""
    fast = _exact_grade(predicted, reference)
    if fast is not None:
        return fast
    return bool(await asyncio.to_thread(_math_verify, predicted, reference, timeout_s))  # type: ignore[arg-type]


def _exact_grade(predicted: str | None, reference: str | None) -> bool | None:
    """The verdict when the exact path can give one, else None (math-verify decides)."""
    if predicted is None or reference is None:
        return False
    p, r = normalize(predicted), normalize(reference)
    if not p or not r:
        return False
    if p == r:
        return True
    kp, kr = _number_key(p), _number_key(r)
    if kp is not None and kr is not None:
        return kp == kr
    bp, br = _base_key(p), _base_key(r)
    if bp is not None or br is not None:  # MATH's convention: 52_8 is neither 52 nor 42
        return bp == br
    return None


def _for_math_verify(answer: str) -> str:
    """math-verify finds LaTeX inside $...$ or \\boxed{}; a bare answer gets the $."""
    s = (extract_answer(answer) or answer).strip()
    return s if ("$" in s or "\\boxed" in s) else f"${s}$"


def _math_verify(predicted: str, reference: str, timeout_s: float) -> bool | None:
    try:
        return _pool().verify(_for_math_verify(predicted), _for_math_verify(reference), timeout_s)
    except Exception as e:  # no worker could start: say so, and do not take the run down
        log.warning("math-verify grading unavailable (%s); counted as not equal", " ".join(str(e).split()))
        return False


# -- worker processes ---------------------------------------------------------------------------


class _Worker:
    """One `python -c` process serving `_serve`: a request is a JSON line, the reply "1"/"0".

    A plain subprocess, not multiprocessing: it neither forks a threaded parent (Ray, torch) nor
    re-runs the parent's main script the way spawn does.
    """

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from ponder.tasks.grading import _serve; _serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            start_new_session=True,  # a Ctrl-C meant for the parent does not kill a worker mid-call
        )  # fmt: skip
        if self._reply(_START_TIMEOUT_S) != "ready":
            self.close()
            raise RuntimeError(f"a grading worker did not start (exit code {self.proc.poll()})")

    def ask(self, predicted: str, reference: str, timeout_s: float) -> bool | None:
        """The verdict, or None when the worker ran over `timeout_s` or died."""
        try:
            self.proc.stdin.write((json.dumps([predicted, reference, timeout_s]) + "\n").encode())  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except OSError:
            return None
        reply = self._reply(timeout_s)
        return None if reply is None else reply == "1"

    def _reply(self, timeout_s: float) -> str | None:
        out = self.proc.stdout
        ready, _, _ = select.select([out], [], [], max(0.0, timeout_s))
        line = out.readline() if ready else b""  # type: ignore[union-attr]
        return line.decode().strip() if line.endswith(b"\n") else None

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass


class _Pool:
    """At most `size` workers, started on demand and reused; one that runs over its time (or
    dies) is killed and a fresh one started on the next call."""

    def __init__(self, size: int) -> None:
        self.size, self.count = size, 0  # count: workers alive or starting
        self.idle: list[_Worker] = []
        self.workers: set[_Worker] = set()
        self.cond = threading.Condition()
        self.pid = os.getpid()

    def verify(self, predicted: str, reference: str, timeout_s: float) -> bool | None:
        worker = self._take()
        verdict = worker.ask(predicted, reference, timeout_s)
        if verdict is None:
            worker.close()
        with self.cond:
            if verdict is None:
                self._drop(worker)
            else:
                self.idle.append(worker)
            self.cond.notify()
        return verdict

    def _take(self) -> _Worker:
        with self.cond:
            while True:
                while self.idle:
                    worker = self.idle.pop()
                    if worker.proc.poll() is None:
                        return worker
                    self._drop(worker)  # killed from outside while idle
                if self.count < self.size:
                    self.count += 1
                    break
                self.cond.wait()
        try:
            worker = _Worker()
        except BaseException:
            with self.cond:
                self.count -= 1
                self.cond.notify()
            raise
        with self.cond:
            self.workers.add(worker)
        return worker

    def _drop(self, worker: _Worker) -> None:
        self.workers.discard(worker)
        self.count -= 1

    def close(self) -> None:
        if os.getpid() != self.pid:  # a forked child's copy: the workers are the parent's
            return
        with self.cond:
            workers, self.workers, self.idle = list(self.workers), set(), []
        for w in workers:
            w.close()


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = _Pool(_POOL_SIZE)
            atexit.register(_POOL.close)
        return _POOL


def _forget_pool() -> None:
    """In a forked child: the parent's workers are the parent's; start afresh."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _serve() -> None:
    """A worker's loop: verify each request; exit when the parent closes the pipe."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the replies
    _quiet_math_verify()
    from math_verify import parse, verify

    try:  # a worker the kernel ends for its CPU limit leaves no core file
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ImportError, ValueError, OSError):
        pass

    try:  # warm math-verify's lazy parts, so a call's time limit is spent on the call itself
        verify(parse("$(x+1)^2$"), parse("$x^2+2x+1$"), timeout_seconds=None)
    except Exception:
        pass
    out.write("ready\n")
    for line in sys.stdin:
        predicted, reference, timeout_s = json.loads(line)
        _limit_cpu(timeout_s)
        try:
            gold = parse(reference, parsing_timeout=None)
            pred = parse(predicted, parsing_timeout=None)
            ok = bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=None))
        except Exception:  # an unparsable answer is simply not equal
            ok = False
        out.write("1\n" if ok else "0\n")


def _limit_cpu(timeout_s: float) -> None:
    """The kernel ends this worker if one call uses much more CPU than it was given: a backstop
    for a parent that died before it could kill a runaway worker."""
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + 2 * timeout_s + 5)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    except (ImportError, ValueError, OSError):
        pass


def _quiet_math_verify() -> None:
    """math-verify warns once that its timeouts are off; the parent bounds the time itself."""
    try:
        from math_verify import grader, parser

        grader.TIMEOUT_WARNING_SHOWN = True
        parser.TIMEOUT_WARNING_SHOWN = True
    except (ImportError, AttributeError):
        pass
