"""Hugging Face dataset repositories stored as Parquet shards, read with pyarrow (no ``datasets``).

A dataset folder as published (``huggingface-cli download --repo-type dataset``) holds shards named
``[<config>/]<split>-NNNNN-of-NNNNN[-hash].parquet`` (``data/`` for the default config), or plain
``<split>.parquet``. Image features are structs ``{"bytes": ..., "path": ...}``; lists are Arrow lists
(or, for MMMU ``options``, a string holding a Python list literal).

Shards are streamed in record batches so a multi-gigabyte split never has to fit in memory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow.parquet as pq

from evals.errors import DatasetError
from evals.readers.files import walk_files

HF_LAYOUT = "a Hugging Face dataset folder with Parquet shards: [<config>/]<split>-00000-of-0000N.parquet"
_SPLIT_ALIASES = {"validation": ("validation", "val"), "test": ("test",), "dev": ("dev",),
                  "train": ("train",)}
_SHARD_NAME = re.compile(r"^(?P<split>[^-]+?)(?:-\d+-of-\d+.*)?\.parquet$")


def shard_split(path: Path) -> str:
    """The split a shard belongs to, from its file name (``validation-00000-of-00001.parquet``)."""
    match = _SHARD_NAME.match(path.name)
    return match.group("split") if match else path.stem


def list_shards(root: Path) -> list[Path]:
    """Every ``*.parquet`` under ``root`` (or ``root`` itself), hidden folders (``.cache``) excluded."""
    if root.is_file():
        return [root] if root.suffix == ".parquet" else []
    return sorted(p for p in walk_files(root, max_depth=4) if p.suffix == ".parquet")


def find_shards(root: Path, split: str, configs: Sequence[str] = (), expected: str = HF_LAYOUT) -> list[Path]:
    """The shards of ``split``; among config folders prefer those named in ``configs`` (first match wins).

    A single ``.parquet`` file is returned as is, whatever its name.
    """
    if root.is_file():
        return [root]
    shards = list_shards(root)
    if not shards:
        raise DatasetError(root, "no .parquet files found", expected)
    names = _SPLIT_ALIASES.get(split, (split,))
    in_split = [p for p in shards if shard_split(p) in names]
    if not in_split:
        found = sorted({shard_split(p) for p in shards})
        raise DatasetError(root, f"no Parquet shard for split {split!r}; splits found: {found}", expected)
    for config in configs:
        chosen = [p for p in in_split if config in p.relative_to(root).parts[:-1]]
        if chosen:
            return chosen
    return in_split


def iter_parquet(shards: list[Path], batch_size: int = 64) -> Iterator[tuple[Path, dict]]:
    """``(shard, row)`` for every row of the shards, in shard order."""
    for shard in shards:
        try:
            reader = pq.ParquetFile(shard)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DatasetError(shard, f"cannot read Parquet shard: {exc}", HF_LAYOUT) from None
        for batch in reader.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield shard, row


def shard_columns(shards: list[Path]) -> list[str]:
    """Column names of the first shard (for required-column checks)."""
    try:
        return list(pq.ParquetFile(shards[0]).schema_arrow.names)
    except Exception as exc:
        raise DatasetError(shards[0], f"cannot read Parquet schema: {exc}", HF_LAYOUT) from None


def require_columns(shards: list[Path], required: Sequence[str], expected: str = HF_LAYOUT) -> None:
    """DatasetError naming the first shard if a required column is absent."""
    columns = shard_columns(shards)
    missing = [c for c in required if c not in columns]
    if missing:
        raise DatasetError(shards[0], f"Parquet shard lacks column(s) {missing}; has {columns}", expected)
