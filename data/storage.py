"""Where runs and shards live: a local directory, NFS, or cloud storage (`s3://`, `gs://`, ...).

A `Location` is a pyarrow filesystem plus a path on it, the pair Ray Data (`filesystem=`) and Ray
Train (`storage_filesystem=`) take. `pathlib` would turn `s3://bucket/runs` into a local directory
named `s3:`; everything that names a run directory goes through here instead. Options a cloud URI
carries in its query (`s3://bucket/runs?endpoint_override=minio:9000&scheme=http`) stay with it, in
the filesystem and in every URI derived from it (a checkpoint's, for serving). Credentials come from
the usual places (environment, instance role), as for any pyarrow or boto client.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

__all__ = ["Location", "is_remote"]


def _finalize_s3() -> None:
    atexit.unregister(_finalize_s3)
    with contextlib.suppress(Exception):
        pafs.finalize_s3()


def is_remote(where: str) -> bool:
    """A URI of a non-local filesystem (`s3://...`, `gs://...`); `file://` and plain paths are local."""
    return "://" in where and not where.startswith("file://")


@dataclass(frozen=True)
class Location:
    """A directory (or file) on a filesystem, named by `uri` for people and by (`fs`, `path`) for code."""

    fs: pafs.FileSystem
    path: str
    uri: str
    query: str = ""
    """A cloud URI's options (without the `?`), kept on every URI derived from this one."""

    @classmethod
    def parse(cls, where: str | Path) -> Location:
        """A local path (made absolute), a `file://` URI, or a cloud URI pyarrow understands."""
        where = str(where)
        if not is_remote(where):
            local = os.path.abspath(where.removeprefix("file://"))
            return cls(pafs.LocalFileSystem(), local, local)
        try:
            fs, path = pafs.FileSystem.from_uri(where)
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError or ImportError by scheme
            raise ValueError(
                f"{where!r} is not a storage location this machine can open ({err}). Use a local path, "
                "s3://bucket/dir or gs://bucket/dir (pyarrow must be built with that filesystem)"
            ) from None
        if fs.type_name == "s3":
            # pyarrow's S3 client must be finalized before the interpreter exits, or exit may crash.
            atexit.register(_finalize_s3)
        scheme = where.split("://", 1)[0]
        query = where.split("?", 1)[1] if "?" in where else ""
        return cls(fs, path.rstrip("/"), f"{scheme}://{path.rstrip('/')}", query)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def __truediv__(self, name: str) -> Location:
        return Location(self.fs, posixpath.join(self.path, name), posixpath.join(self.uri, name), self.query)

    def __str__(self) -> str:
        return f"{self.uri}?{self.query}" if self.query else self.uri

    def at(self, path: str) -> Location:
        """Another `path` on the same filesystem (as Ray reports checkpoint paths)."""
        if self.local:
            return Location(self.fs, path, path)
        return Location(self.fs, path, f"{self.uri.split('://', 1)[0]}://{path}", self.query)

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_empty_dir(self) -> bool:
        """True when nothing is there yet (object stores have no empty directories)."""
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.NotFound:
            return True
        if info.type != pafs.FileType.Directory:
            return False
        return not self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False))

    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def read_text(self) -> str:
        with self.fs.open_input_stream(self.path) as stream:
            return bytes(stream.read()).decode("utf-8")

    def write_text(self, text: str) -> None:
        parent = posixpath.dirname(self.path)
        if parent:
            self.fs.create_dir(parent, recursive=True)
        with self.fs.open_output_stream(self.path) as stream:
            stream.write(text.encode("utf-8"))

    def download(self, directory: str | Path | None = None) -> Path:
        """This directory on local disk: itself when local, else a copy (into `directory`, or a new
        temporary directory)."""
        if self.local:
            return Path(self.path)
        target = Path(directory or tempfile.mkdtemp(prefix="rayformers-"))
        if target.exists() and any(target.iterdir()):
            shutil.rmtree(target)
        target.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(
            self.path, str(target), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem()
        )
        return target

    @contextlib.contextmanager
    def local_copy(self) -> Iterator[Path]:
        """This directory on local disk for the block: itself when local, else a temporary copy that is
        removed when the block ends (a replica reading an adapter or checkpoint keeps no stray copy)."""
        if self.local:
            yield Path(self.path)
            return
        with tempfile.TemporaryDirectory(prefix="rayformers-") as tmp:
            yield self.download(tmp)

    def upload(self, directory: str | Path) -> None:
        """Copy a local directory's files here (the same layout)."""
        self.mkdir()
        pafs.copy_files(
            str(directory),
            self.path,
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.fs,
        )
