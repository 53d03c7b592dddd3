"""JSON / JSONL reading and file look-ups for the original benchmark releases."""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Any, Iterator

from evals.errors import DatasetError


def load_json(path: Path, expected: str | None = None) -> Any:
    """Parse a JSON file; unreadable or invalid JSON is a :class:`DatasetError` naming the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(path, f"cannot read JSON: {exc}", expected) from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """``(line_number, record, error)`` per non-empty line; a bad line yields an error, not an exception."""
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise DatasetError(path, f"cannot read JSONL: {exc}") from None
    with fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, None, f"line {number}: invalid JSON ({exc.msg})"
                continue
            if not isinstance(record, dict):
                yield number, None, f"line {number}: expected a JSON object"
                continue
            yield number, record, None


def walk_files(root: Path, max_depth: int = 3) -> Iterator[Path]:
    """Files under ``root`` at most ``max_depth`` folders down, hidden folders skipped.

    The walk is pruned, so an image folder with 40k COCO files below the depth limit costs nothing.
    """
    base = len(Path(root).parts)
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).parts) - base
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < max_depth - 1 else []
        for name in sorted(files):
            yield Path(folder) / name


def find_files(root: Path, patterns: tuple[str, ...], max_depth: int = 3) -> list[Path]:
    """Files under ``root`` (at most ``max_depth`` levels down) whose name matches a glob pattern, sorted."""
    if root.is_file():
        return [root] if any(fnmatch.fnmatch(root.name, p) for p in patterns) else []
    return sorted(p for p in walk_files(root, max_depth) if any(fnmatch.fnmatch(p.name, pat) for pat in patterns))


def first_existing(candidates) -> Path | None:
    """The first path of ``candidates`` that exists."""
    for candidate in candidates:
        if candidate is not None and Path(candidate).exists():
            return Path(candidate)
    return None
