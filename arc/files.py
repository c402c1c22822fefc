"""Content hashing and atomic file writes, shared by the image sources and the cloud store.

Hashes are sha256 hex digests. :func:`canonical_json` is the one serialisation every key and
identity hash is taken of (sorted keys, no spaces, no NaN), so the same settings always give the
same store and decoder paths; changing it changes every key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from torch import Tensor


def _jsonable(value: Any) -> Any:
    """JSON form of the non-JSON values settings may hold: dataclasses, paths, tensors, numpy scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, Tensor):
        return value.tolist()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces); dataclasses, paths, tensors and numpy scalars allowed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_jsonable, allow_nan=False)


def short_hash(value: Any, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (streamed in ``chunk``-byte blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_list_hash(root: str | Path, files: Sequence[str | Path] | None = None) -> str:
    """Hex sha256 of the sorted (relative path, size in bytes) of ``files`` (default: every file under ``root``)."""
    root = Path(root)
    if files is None:
        files = [Path(dirpath) / name for dirpath, _, names in os.walk(root) for name in names]
    entries = sorted((Path(path).relative_to(root).as_posix(), os.path.getsize(path)) for path in files)
    return hashlib.sha256(canonical_json(entries).encode()).hexdigest()


def atomic_write(path: Path, write: Callable[[str], None], overwrite: bool = True) -> None:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, fsync it, then move it onto ``path``.

    overwrite=False links instead of replacing, so an existing ``path`` raises FileExistsError
    (two processes creating the same file: exactly one wins). On any failure the temporary file is
    removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        # mkstemp's 0600 would keep stores and bundles from the rest of a team; set after the write, as
        # safetensors' save_file replaces the file with a 0600 one of its own
        os.chmod(tmp, 0o644)
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: Path, value: Mapping, overwrite: bool = True) -> None:
    """:func:`atomic_write` ``value`` as indented JSON with sorted keys (see ``overwrite`` there)."""
    text = json.dumps(value, indent=1, sort_keys=True, default=_jsonable, allow_nan=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"), overwrite)
