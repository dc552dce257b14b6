"""Filesystem access for sources: local paths or any URI pyarrow understands (s3://, gs://, hdfs://)."""

from __future__ import annotations

import io
import posixpath
from typing import IO, Iterator

import pyarrow.fs as pafs

__all__ = ["resolve", "exists", "is_dir", "list_dir", "join", "open_text", "iter_lines"]


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """Return (filesystem, path inside it) for a local path or a URI."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    import os

    return pafs.LocalFileSystem(), os.path.abspath(path)


def exists(path: str) -> bool:
    fs, p = resolve(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def is_dir(path: str) -> bool:
    fs, p = resolve(path)
    return fs.get_file_info(p).type == pafs.FileType.Directory


def join(base: str, *parts: str) -> str:
    if "://" in base:
        return posixpath.join(base, *parts)
    import os

    return os.path.join(base, *parts)


def list_dir(path: str, recursive: bool = False) -> list[str]:
    """Files (not folders) under ``path``, sorted, as paths/URIs of the same form as ``path``."""
    fs, p = resolve(path)
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=recursive))
    names = sorted(i.path for i in infos if i.type == pafs.FileType.File)
    if "://" in path:
        scheme = path.split("://", 1)[0]
        return [f"{scheme}://{n}" for n in names]
    return names


def open_binary(path: str) -> IO[bytes]:
    """Open a file for streaming binary reads; ``.gz`` files are decompressed."""
    fs, p = resolve(path)
    # Explicit: pyarrow's default compression="detect" would also gunzip by extension (twice with GzipFile).
    raw = fs.open_input_stream(p, compression="gzip" if path.lower().endswith(".gz") else None)
    # pyarrow streams cannot readline() or iterate lines; a BufferedReader can (and closes them).
    return io.BufferedReader(raw)  # type: ignore[arg-type]


def open_text(path: str, encoding: str = "utf-8") -> IO[str]:
    """Open a (possibly gzipped) file for streaming text reads; undecodable bytes raise."""
    return io.TextIOWrapper(open_binary(path), encoding=encoding, errors="strict", newline="")


def iter_lines(path: str, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without newline), streaming; encoding errors name the line."""
    with open_binary(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise UnicodeDecodeError(
                    exc.encoding, exc.object, exc.start, exc.end, f"{path}:{lineno}: {exc.reason}"
                ) from None
            yield lineno, line.rstrip("\r\n")
