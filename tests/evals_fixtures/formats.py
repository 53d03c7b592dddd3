"""Writers for tiny benchmark files in their real published formats (used by tests/test_evals_*).

Nothing here is fetched: each helper writes a few rows into ``tmp_path`` exactly as the harness or the
benchmark authors publish them (VLMEvalKit TSV, Hugging Face Parquet shards, original JSON/JSONL).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png_bytes(colour=(255, 0, 0), size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(colour=(0, 0, 255), size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_tsv(path: Path, rows: list[dict]) -> Path:
    """A VLMEvalKit TSV (pandas ``to_csv(sep='\\t', index=False)``, as ``vlmeval.smp.dump`` writes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def image_struct(data: bytes | None, name: str | None = "image.png") -> dict:
    return {"bytes": data, "path": name}


def write_parquet(path: Path, rows: list[dict], image_columns: tuple[str, ...] = ("image",),
                  list_columns: tuple[str, ...] = ()) -> Path:
    """A Hugging Face ``datasets`` Parquet shard: image columns as ``{bytes, path}`` structs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {}
    names = list(dict.fromkeys(k for row in rows for k in row))
    for name in names:
        values = [row.get(name) for row in rows]
        if name in image_columns:
            columns[name] = pa.array(values, type=IMAGE_STRUCT)
        elif name in list_columns:
            columns[name] = pa.array(values, type=pa.list_(pa.string()))
        else:
            columns[name] = pa.array(values)
    pq.write_table(pa.table(columns), path)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def write_image(path: Path, data: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if data is not None else png_bytes())
    return path


def write_video(path: Path) -> Path:
    """A placeholder video file (evals only checks that videos exist; decoding is the processor's job)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 32)
    return path
