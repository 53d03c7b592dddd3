"""Benchmark data on remote storage (``--data s3://bucket/POPE``): copied to a local cache on each node that needs it,
then read by the same readers as a local folder.

Why a copy rather than streams: the published layouts need random access and folder walks (pandas TSV, Parquet
shards, JSON beside image folders, videos that PyAV seeks in), and a node reads each file many times (the reader,
then the media decoder, then the report's thumbnails).

* :func:`stage` — a path as given to ``--data``: a local path is returned unchanged; a URI (file or folder) is copied
  into the cache and its local copy returned. The driver stages a benchmark's whole ``--data`` before reading it.
* :func:`remote_uri` / :func:`local_copy` — media travel between nodes as URIs: the driver turns the path of a
  staged medium back into its URI (``pipelines.stages.input_row``) and each preprocessing actor fetches only the
  files its samples name, into its own node's cache (``pipelines.stages.sample_from_row``).

Cache: ``$ERNIE_VL_DATA_CACHE`` (default ``$ERNIE_VL_HOME/data``, i.e. ``~/.cache/ernie_vl/data``), laid out as the
URI: ``s3://bucket/a/b.jpg`` → ``<cache>/s3/bucket/a/b.jpg``, so a file staged with its folder and a file staged
alone land at the same place (a single-node run downloads each file once). A copy is fetched again when its size or
modification time differs from the remote file's (the copy carries the remote mtime), and staging a folder removes
the files its remote no longer has; each file is downloaded to a temporary name and renamed, so a killed copy leaves no torn file and two processes staging one file both end with a
whole one. Nothing is ever evicted: remove the folder to reclaim the space.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from evals.storage import TMP_PREFIX, filesystem, is_uri

_CHUNK = 8 << 20
_fresh: set[str] = set()  # local copies checked against the remote in this process (data does not change in a run)


def cache_root() -> Path:
    """Where remote data is copied (``$ERNIE_VL_DATA_CACHE``, else ``$ERNIE_VL_HOME/data``)."""
    explicit = os.environ.get("ERNIE_VL_DATA_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("ERNIE_VL_HOME", Path.home() / ".cache" / "ernie_vl")).expanduser() / "data"


def cache_path(uri: str) -> Path:
    """The local place of ``uri`` in the cache."""
    parts = urlsplit(uri)
    rel = [p for p in f"{parts.netloc}/{parts.path}".split("/") if p]
    if any(p in (".", "..") for p in rel):
        raise ValueError(f"{uri}: '.' and '..' are not allowed in a data URI")
    return cache_root() / parts.scheme / Path(*rel)


def remote_uri(path) -> str | None:
    """The URI a file of the cache was copied from (None for a path outside the cache)."""
    try:
        rel = Path(path).resolve().relative_to(cache_root().resolve())
    except ValueError:
        return None
    if len(rel.parts) < 2:
        return None
    scheme, *rest = rel.parts
    return f"{scheme}://{'/'.join(rest)}"


def _fetch(fs: pafs.FileSystem, info: pafs.FileInfo, dest: Path) -> None:
    """Copy one remote file to ``dest`` unless a copy of the same size and mtime is there."""
    mtime = info.mtime.timestamp() if info.mtime is not None else None
    if dest.is_file():
        st = dest.stat()
        if st.st_size == info.size and (mtime is None or abs(st.st_mtime - mtime) < 1e-3):
            return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{TMP_PREFIX}{dest.name}-{uuid.uuid4().hex[:8]}")
    try:
        with fs.open_input_stream(info.path) as src, open(tmp, "wb") as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def stage(where) -> str:
    """``where`` as a local path: unchanged when local; a remote file or folder copied into the cache (only what
    changed; local files the remote folder no longer has are removed) and its local copy returned. A URI naming
    nothing raises FileNotFoundError naming it."""
    if where is None or not is_uri(str(where)):
        return where
    uri = str(where).rstrip("/")
    dest = cache_path(uri)
    if str(dest) in _fresh:
        return str(dest)
    fs, root = filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{uri}: no such file or folder")
    if info.type == pafs.FileType.File:
        _fetch(fs, info, dest)
    else:
        dest.mkdir(parents=True, exist_ok=True)
        remote = set()
        for item in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
            if item.type == pafs.FileType.File:
                rel = item.path[len(root) + 1:]
                _fetch(fs, item, dest / rel)
                remote.add(dest / rel)
                _fresh.add(str(dest / rel))
        for path in dest.rglob("*"):  # deleted upstream: a reader must not find it here
            if path.is_file() and path not in remote and not path.name.startswith(TMP_PREFIX):
                path.unlink(missing_ok=True)
    _fresh.add(str(dest))
    return str(dest)


def local_copy(path: str | None) -> str | None:
    """A medium's path as a preprocessing actor opens it: a URI staged on this node, a local path unchanged."""
    return stage(path) if path is not None and is_uri(path) else path
