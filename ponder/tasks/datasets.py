"""Problem sets from a spec string: the built-in generator, JSONL files, `datasets` files, the Hub.

Specs understood by `load_problems`:

- ``arith:N`` — N problems from the built-in arithmetic generator, with optional options after
  more colons: ``arith:100:seed=3:levels=1-3`` (``levels`` takes a range ``1-3``, a list
  ``1,4,5`` or one level ``2``; defaults: seed 0, levels 1-5, cycled in order).
- ``path/to/file.jsonl`` — MATH-500 style lines: ``problem`` (required), ``answer``, optional
  ``id`` (or ``unique_id``) and ``level``; numbers become strings, other scalar fields go to
  ``Problem.meta``. A line without an id gets ``<file stem>-<line index>`` (0-based line
  index in the file, blank lines counted) so ids, and so resume, are stable.
- ``path/to/file.parquet`` / ``.arrow`` / ``.json``, or a directory (a ``save_to_disk``
  folder or a folder of data files) — read with the ``datasets`` library, same fields; missing
  ids are ``<stem>-<row index>``.
- ``hf:name[:split]`` — a Hugging Face Hub dataset (needs network; split defaults to
  ``test``), through the same row conversion as local files.

Every problem is checked the same way; bad input raises `DatasetError` with one line naming
the file and line (or row).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from ponder.search.types import Problem
from ponder.tasks.arith.problems import LEVELS, generate

DATASETS_LIB_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow", ".json": "json"}
_ID_FIELDS = ("id", "unique_id")
_KNOWN_FIELDS = {"problem", "answer", "level", *_ID_FIELDS}


class DatasetError(ValueError):
    """A dataset spec or file that cannot be turned into problems."""


def load_problems(spec: str, limit: int | None = None) -> list[Problem]:
    """The problems named by `spec` (see the module docstring), at most `limit` of them."""
    if limit is not None and limit <= 0:
        raise DatasetError(f"limit must be positive, got {limit}")
    spec = spec.strip()
    if spec.startswith("arith:"):
        problems = _arith(spec, limit)
    elif spec.startswith("hf:"):
        problems = _hub(spec)
    else:
        problems = _file(spec)
    if not problems:
        raise DatasetError(f"dataset {spec} is empty")
    return problems if limit is None else problems[:limit]


# -- arith:N ------------------------------------------------------------------------------------


MAX_ARITH = 10_000_000


def _arith(spec: str, limit: int | None) -> list[Problem]:
    count, *options = spec.split(":")[1:]
    try:
        n = int(count)
    except ValueError:
        raise DatasetError(f"bad dataset spec {spec!r}: use arith:N[:seed=S][:levels=1-5]") from None
    if n <= 0:
        raise DatasetError(f"bad dataset spec {spec!r}: N must be positive")
    if n > MAX_ARITH:  # generated in memory before anything runs: 10^9 only grows until killed
        raise DatasetError(f"bad dataset spec {spec!r}: at most {MAX_ARITH:,} generated problems")
    seed, levels = 0, tuple(LEVELS)
    for option in options:
        key, eq, value = option.partition("=")
        if not eq:
            raise DatasetError(f"bad option {option!r} in {spec!r}: use key=value (seed, levels)")
        if key == "seed":
            try:
                seed = int(value)
            except ValueError:
                raise DatasetError(f"bad seed {value!r} in {spec!r}: an integer") from None
        elif key == "levels":
            levels = _parse_levels(value, spec)
        else:
            raise DatasetError(f"unknown option {key!r} in {spec!r} (known: seed, levels)")
    return generate(n if limit is None else min(n, limit), seed=seed, levels=levels)


def _parse_levels(value: str, spec: str) -> tuple[int, ...]:
    m = re.fullmatch(r"(\d+)-(\d+)", value)
    try:
        levels = tuple(range(int(m.group(1)), int(m.group(2)) + 1)) if m else tuple(int(v) for v in value.split(","))
    except ValueError:
        levels = ()
    if not levels or any(lv not in LEVELS for lv in levels):
        known = f"{min(LEVELS)}-{max(LEVELS)}"
        raise DatasetError(f"bad levels {value!r} in {spec!r}: a range, list or level within {known}")
    return levels


# -- files --------------------------------------------------------------------------------------


def _file(spec: str) -> list[Problem]:
    path = Path(spec).expanduser()
    if not path.exists():
        use = "arith:N, a .jsonl/.json/.parquet/.arrow file or folder, or hf:name[:split]"
        raise DatasetError(f"dataset not found: {spec} (use {use})")
    if path.is_dir():
        return _rows_to_problems(_read_with_datasets(path, None), str(path), path.name, "row")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl(path)
    if suffix in DATASETS_LIB_SUFFIXES:
        return _rows_to_problems(_read_with_datasets(path, DATASETS_LIB_SUFFIXES[suffix]), str(path), path.stem, "row")
    raise DatasetError(
        f"unsupported dataset format {path.suffix or '(none)'!r}: {spec} (use .jsonl, .json, .parquet or .arrow)"
    )


def _jsonl(path: Path) -> list[Problem]:
    return problems_from_jsonl(path.read_bytes(), str(path), path.stem)


def problems_from_jsonl(data: str | bytes, source: str, stem: str = "row") -> list[Problem]:
    """Problems from JSONL text or UTF-8 bytes (a file, an upload); errors name `source:line`."""
    text = _decode(data, source) if isinstance(data, bytes) else data
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    out: list[Problem] = []
    lines: dict[str, int] = {}
    # Lines end at "\n" only (JSON Lines): splitlines() would also split inside a valid line at
    # U+2028, U+0085 and other characters JSON strings may hold unescaped.
    for index, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        where = f"{source}:{index + 1}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
        except ValueError as e:  # an integer longer than Python converts (4,300 digits)
            raise DatasetError(f"{where}: malformed JSON ({_one_line(e)})") from None
        problem = _to_problem(row, where, f"{stem}-{index}")
        if problem.id in lines:
            raise DatasetError(f"{where}: duplicate id {problem.id!r} (first on line {lines[problem.id]})")
        lines[problem.id] = index + 1
        out.append(problem)
    return out


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(f"{source}:{line}: not UTF-8 text ({e.reason} at byte column {column})") from None


def problems_from_rows(rows: Iterable[Mapping[str, Any]], source: str, stem: str = "row") -> list[Problem]:
    """Problems from parsed rows (a JSON upload); errors name `source: row K`."""
    return _rows_to_problems(rows, source, stem, "row")


def _read_with_datasets(path: Path, builder: str | None) -> Iterable[Mapping[str, Any]]:
    """Rows of a local file or folder through the `datasets` library."""
    import datasets

    try:
        if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
            data = datasets.load_from_disk(str(path))
        elif builder is None:
            data = datasets.load_dataset(str(path))
        else:
            data = datasets.load_dataset(builder, data_files=str(path))
    except Exception as e:  # the library's errors vary by format; keep one line
        raise DatasetError(f"{path}: cannot read with the datasets library: {_one_line(e)}") from None
    return _one_split(data, str(path))


def _hub(spec: str) -> list[Problem]:
    name, _, split = spec[len("hf:") :].partition(":")
    if not name:
        raise DatasetError(f"bad dataset spec {spec!r}: use hf:name[:split]")
    import datasets

    try:
        data = datasets.load_dataset(name, split=split or "test")
    except Exception as e:  # offline, unknown name, unknown split, ...
        raise DatasetError(f"{spec}: cannot load from the Hugging Face Hub: {_one_line(e)}") from None
    return _rows_to_problems(_one_split(data, spec), spec, name.replace("/", "-"), "row")


def _one_split(data: Any, source: str) -> Iterable[Mapping[str, Any]]:
    """A DatasetDict must hold one split (or a `test` split) to be unambiguous."""
    import datasets

    if isinstance(data, (datasets.DatasetDict, dict)):
        splits = list(data.keys())
        if len(splits) == 1:
            return data[splits[0]]
        if "test" in splits:
            return data["test"]
        raise DatasetError(f"{source}: several splits ({', '.join(splits)}) and none is 'test'")
    return data


def _rows_to_problems(rows: Iterable[Mapping[str, Any]], source: str, stem: str, unit: str) -> list[Problem]:
    out: list[Problem] = []
    first: dict[str, int] = {}
    for index, row in enumerate(rows):
        where = f"{source}: {unit} {index}"
        problem = _to_problem(row, where, f"{stem}-{index}")
        if problem.id in first:
            raise DatasetError(f"{where}: duplicate id {problem.id!r} (first at {unit} {first[problem.id]})")
        first[problem.id] = index
        out.append(problem)
    return out


def _to_problem(row: Any, where: str, default_id: str) -> Problem:
    if not isinstance(row, Mapping):
        raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
    text = row.get("problem")
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"{where}: no 'problem' text")
    ident = next((row[k] for k in _ID_FIELDS if row.get(k) not in (None, "")), default_id)
    meta = {k: v for k, v in row.items() if k not in _KNOWN_FIELDS and _is_scalar(v)}
    answer = _text(row.get("answer"))
    if answer is not None and not answer.strip():
        answer = None  # an empty reference is no reference: the problem is unlabelled, not ungradable
    return Problem(id=_text(ident), problem=text, answer=answer, level=_text(row.get("level")), meta=meta)


def _text(value: Any) -> str | None:
    """Numbers (and anything else) as strings; None stays None. Floats are written out in
    positional notation (1.5e-07 as "0.00000015"), the way references are compared."""
    if value is None:
        return None
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        if math.isfinite(value):
            return format(Decimal(repr(value)), "f")
    return value if isinstance(value, str) else str(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
