"""Where a run folder lives: a local folder or any file system pyarrow reaches — ``file://``, ``s3://``, ``gs://``,
``hdfs://`` and, through fsspec, any scheme fsspec knows — behind one interface, :class:`Storage`, with the one write
rule per backend that makes every file *complete or absent* (never torn, never half-listed).

Every reader and writer of a run folder (the pipeline's part files, manifest and lock, ``metrics.parquet``, the judge
cache, the report) goes through it; the local folder is one case of it.

========================  =====================================================================  ===================
backend                   how a file is committed (``write_bytes`` / ``write_table``)             ``move``
========================  =====================================================================  ===================
local path, ``file://``   a ``.tmp-*`` file in the same folder, fsync, ``os.replace``, fsync of    ``os.replace``
                          the folder: atomic and durable                                          (atomic)
``hdfs://``               a ``.tmp-*`` file in the same folder, then a rename (atomic in the       rename (atomic)
                          NameNode; an existing target is deleted first)
``s3://``, ``gs://``,     one PUT under the final name (pyarrow: a multipart upload completed on   copy, then delete
fsspec schemes            close). An object store has no rename; an object becomes visible whole  (not atomic)
                          or not at all, an overwrite replaces it whole, and a writer killed
                          mid-upload leaves only an incomplete upload that no listing shows
                          (a bucket lifecycle rule aborts those)
========================  =====================================================================  ===================

Readers skip ``.tmp-*`` names. The exactly-once rules built on this (pipelines/resume.py) need two more things from
an object store, both true of AWS S3 (since December 2020), Google Cloud Storage and MinIO: a PUT is visible to the
next read and list (strong read-after-write consistency), and content-derived names make a retried write an
overwrite of the same object, never a second one.

Endpoint and credentials come from the environment as every client of that store reads them: S3 from
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``), ``AWS_DEFAULT_REGION`` / ``AWS_REGION``,
``~/.aws`` or an instance role, and the endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (passed to
pyarrow explicitly, so MinIO, Ceph or a local test server work with every pyarrow version); GCS from
``GOOGLE_APPLICATION_CREDENTIALS``; HDFS from the Hadoop configuration (``HADOOP_HOME``, ``CLASSPATH``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TMP_PREFIX = ".tmp-"
LOCAL, RENAME, OBJECT = "local", "rename", "object"  # Storage.kind: how a file is committed (module docstring)
_RENAME_FILE_SYSTEMS = ("hdfs",)  # pyarrow type_name of the remote file systems with an atomic rename


def is_uri(where) -> bool:
    """Whether ``where`` names a remote location (``scheme://...``); local paths and ``file://`` URIs are not."""
    return isinstance(where, str) and "://" in where and not where.startswith("file://")


def location(where) -> str:
    """``where`` in its canonical form: a URI without a trailing ``/``, or an absolute local path (``~`` expanded,
    ``file://`` stripped)."""
    if isinstance(where, Storage):
        return where.uri
    if isinstance(where, str) and where.startswith("file://"):
        where = urlsplit(where).path
    if is_uri(where):
        return where.rstrip("/")
    return str(Path(where).expanduser().resolve())


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system of a URI and the path within it (see the module docstring for endpoints)."""
    parts = urlsplit(uri)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if parts.scheme == "s3" and endpoint and not parts.query:
        ep = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        fs = pafs.S3FileSystem(endpoint_override=ep.netloc, scheme=ep.scheme, region=region)
        return fs, f"{parts.netloc}{parts.path}".rstrip("/")
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        arrow_error = exc
    try:  # a scheme pyarrow lacks (az://, memory://, ...): fsspec's, if installed
        import fsspec.core

        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"{uri}: no file system for this location (pyarrow: {arrow_error}; fsspec: {exc})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), str(path).rstrip("/")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Storage:
    """A folder on one file system. Methods take paths relative to it, with ``/`` separators.

    ``kind`` is the write rule (:data:`LOCAL`, :data:`RENAME` or :data:`OBJECT`); ``uri`` how it was named."""

    fs: pafs.FileSystem
    base: str  # the folder's path within `fs`
    uri: str
    kind: str

    @classmethod
    def at(cls, where) -> "Storage":
        """The storage of ``where``: a :class:`Storage` (returned as is), a local path, or a URI."""
        if isinstance(where, Storage):
            return where
        loc = location(os.fspath(where) if isinstance(where, os.PathLike) else where)
        if not is_uri(loc):
            return cls(pafs.LocalFileSystem(), loc, loc, LOCAL)
        fs, path = filesystem(loc)
        if fs.type_name == "local":
            return cls(fs, path, path, LOCAL)
        return cls(fs, path, loc, RENAME if fs.type_name in _RENAME_FILE_SYSTEMS else OBJECT)

    def __str__(self) -> str:
        return self.uri

    @property
    def name(self) -> str:
        return self.base.rstrip("/").rsplit("/", 1)[-1]

    @property
    def local_path(self) -> Path | None:
        """The folder as a local path (None on a remote file system)."""
        return Path(self.base) if self.kind == LOCAL else None

    def path(self, rel: str = "") -> str:
        """The path of ``rel`` within the file system."""
        rel = str(rel).strip("/")
        if any(part in ("..", ".") for part in rel.split("/")):
            raise ValueError(f"{rel!r}: a path inside {self.uri} may not contain '.' or '..'")
        return f"{self.base}/{rel}" if rel else self.base

    def display(self, rel: str = "") -> str:
        """``rel`` as the user would name it (a local path or a URI), for messages."""
        rel = str(rel).strip("/")
        return f"{self.uri}/{rel}" if rel else self.uri

    def child(self, rel: str) -> "Storage":
        return replace(self, base=self.path(rel), uri=self.display(rel))

    # ----------------------------------------------------------------------------------------------- reading

    def _info(self, rel: str) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path(rel))

    def exists(self, rel: str = "") -> bool:
        return self._info(rel).type != pafs.FileType.NotFound

    def is_file(self, rel: str) -> bool:
        return self._info(rel).type == pafs.FileType.File

    def is_dir(self, rel: str = "") -> bool:
        return self._info(rel).type == pafs.FileType.Directory

    def files(self, rel: str = "", recursive: bool = False) -> list[str]:
        """Names of the files in folder ``rel`` (paths relative to it when ``recursive``), sorted; ``[]`` when the
        folder does not exist. Temporary ``.tmp-*`` files are included (``remove_tmp`` wants them)."""
        root = self.path(rel)
        infos = self.fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=recursive))
        return sorted(i.path[len(root) + 1:] for i in infos if i.type == pafs.FileType.File)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as fh:
            return fh.readall()

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def read_table(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(rel), filesystem=self.fs, columns=columns)

    def parquet_file(self, rel: str) -> pq.ParquetFile:
        """An open Parquet file (for its schema, or to stream record batches)."""
        return pq.ParquetFile(self.fs.open_input_file(self.path(rel)))

    # ----------------------------------------------------------------------------------------------- writing

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write the file ``rel`` complete or not at all (the backend's rule, module docstring)."""
        path = self.path(rel)
        if self.kind == OBJECT:
            with self.fs.open_output_stream(path) as out:
                out.write(data)
            return
        folder, name = path.rsplit("/", 1)
        self.fs.create_dir(folder, recursive=True)
        tmp = f"{folder}/{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        if self.kind == LOCAL:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_dir(folder)
            return
        with self.fs.open_output_stream(tmp) as out:
            out.write(data)
        if self.is_file(rel):  # NOTE: HDFS refuses to rename onto an existing file
            self.fs.delete_file(path)
        self.fs.move(tmp, path)

    def make_dir(self, rel: str = "") -> None:
        """Create folder ``rel`` (and its parents); nothing on an object store, whose folders are key prefixes."""
        if self.kind != OBJECT:
            self.fs.create_dir(self.path(rel), recursive=True)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def write_table(self, rel: str, table: pa.Table, compression: str = "zstd") -> None:
        """Write ``table`` as the Parquet file ``rel``, complete or not at all."""
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression=compression)
        self.write_bytes(rel, buf.getvalue().to_pybytes())

    def delete(self, rel: str) -> bool:
        """Delete the file ``rel``; False if it was not there."""
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            return False
        return True

    def delete_tree(self, rel: str) -> None:
        """Delete the folder ``rel`` and everything under it (nothing if absent)."""
        if self.exists(rel):
            self.fs.delete_dir(self.path(rel))

    def move(self, src: str, dst: str) -> None:
        """Move the file ``src`` to ``dst`` (replacing it): a rename on local and HDFS folders; on an object store a
        copy then a delete, so a kill in between leaves both (callers make a repeated move harmless)."""
        if self.kind == OBJECT:
            self.fs.copy_file(self.path(src), self.path(dst))
            self.fs.delete_file(self.path(src))
            return
        self.fs.create_dir(self.path(dst).rsplit("/", 1)[0], recursive=True)
        if self.kind == RENAME and self.is_file(dst):
            self.fs.delete_file(self.path(dst))
        self.fs.move(self.path(src), self.path(dst))

    def remove_tmp(self, rel: str = "") -> int:
        """Delete the temporary files a killed writer left in folder ``rel`` (callers hold the run's lock)."""
        stale = [n for n in self.files(rel) if n.startswith(TMP_PREFIX)]
        for name in stale:
            self.delete(f"{rel}/{name}" if rel else name)
        return len(stale)

    def upload(self, local: Path, rel: str = "") -> int:
        """Copy every file under the local folder ``local`` to folder ``rel``, each committed by the backend's rule;
        returns the number of files."""
        n = 0
        for path in sorted(p for p in Path(local).rglob("*") if p.is_file()):
            sub = path.relative_to(local).as_posix()
            self.write_bytes(f"{rel}/{sub}" if rel else sub, path.read_bytes())
            n += 1
        return n

    @contextmanager
    def local_folder(self) -> Iterator[Path]:
        """A local folder to write into for code that needs one (e.g. the HTML report): the folder itself when it
        is local; else a temporary folder whose files are uploaded here on a clean exit, then removed."""
        if self.kind == LOCAL:
            Path(self.base).mkdir(parents=True, exist_ok=True)
            yield Path(self.base)
            return
        tmp = Path(tempfile.mkdtemp(prefix="ernie-vl-upload-"))
        try:
            yield tmp
            self.upload(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
