"""Atomic file writes and file hashes, shared by every module that writes results.

A file is written beside its destination under a hidden temporary name
(``.<name>.<pid>.tmp``) and moved into place with ``os.replace``, so a reader (or a run
that was interrupted) never sees a half-written file; folder scans skip hidden names.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """The hidden temporary path used while ``path`` is being written."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (parents created); ``fsync`` for durability."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Write UTF-8 text atomically (no newline translation)."""
    return write_bytes(path, text.encode("utf-8"), fsync=fsync)


def torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically (checkpoints survive an interruption mid-write)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
