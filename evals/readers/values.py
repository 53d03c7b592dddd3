"""Cell-level parsing shared by every reader: missing values, list literals, option columns.

Published files store lists in several ways: real lists (Parquet), Python list literals
(``"['a', 'b']"`` — MMMU ``options``, VLMEvalKit ``answer``), JSON arrays. :func:`parse_list` reads all
three with ``ast.literal_eval`` / ``json`` (never ``eval``).
"""

from __future__ import annotations

import ast
import json
import math
import string
from typing import Any

LETTERS = string.ascii_uppercase


class RowError(ValueError):
    """A problem with one row; readers turn it into ``Sample.error``."""


def is_missing(value: Any) -> bool:
    """None, NaN, or an empty/whitespace string."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str):
        return value.strip() == ""
    return False


def text(value: Any) -> str | None:
    """A cell as text, or None if missing. Integral floats (from pandas) lose their ``.0``."""
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8")
    return str(value)


def parse_list(value: Any) -> list:
    """A list from a real list/tuple/ndarray, a JSON array, or a Python list literal; else ``[value]``."""
    if value is None:
        return []
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("[") and s.endswith("]"):
            for loader in (json.loads, ast.literal_eval):
                try:
                    parsed = loader(s)
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    continue
                if isinstance(parsed, (list, tuple)):
                    return list(parsed)
        return [value]
    return [value]


def answers_list(value: Any, what: str = "answer") -> list[str]:
    """Non-empty list of answer strings; raise :class:`RowError` when the answer is missing."""
    items = [text(v) for v in parse_list(value)] if not is_missing(value) else []
    items = [v for v in items if v is not None]
    if not items:
        raise RowError(f"missing {what}")
    return items


def option_columns(row: dict, letters: str = LETTERS) -> dict[str, str]:
    """Options stored as columns ``A``, ``B``, … (VLMEvalKit TSV, MMBench parquet); missing cells skipped.

    The literal string ``"nan"`` also means "no such option": lmms-lab/MMBench stores absent options
    that way and lmms-eval's ``create_options_prompt`` skips it too.
    """
    out = {}
    for letter in letters:
        value = text(row.get(letter))
        if value is not None and value.strip() not in ("nan", "NaN"):
            out[letter] = value
    return out


def options_from_list(items: list) -> dict[str, str]:
    """``["cat", "dog"]`` → ``{"A": "cat", "B": "dog"}``."""
    if len(items) > len(LETTERS):
        raise RowError(f"{len(items)} options exceed the {len(LETTERS)} letters A-Z")
    return {LETTERS[i]: str(item) for i, item in enumerate(items)}


def check_answer_letter(answer: str, options: dict[str, str]) -> str:
    """The answer letter, verified to be one of the option letters (wrong option columns → RowError)."""
    letter = answer.strip()
    if letter not in options:
        have = ", ".join(options) or "none"
        raise RowError(f"answer {answer!r} is not one of the option letters ({have})")
    return letter
