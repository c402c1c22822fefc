"""Shard checksums: a shard's content hash is written into its header with the shard (one atomic
file, so every DDP rank checksums the shards it writes) and checked whenever the shard is read,
resumed or verified.

The hash is :func:`arc.store.layout.tensor_checksum` (sha256 of each tensor's name, dtype, shape and
bytes). Rank 0 copies the headers' hashes into the manifest (``checksums``: split -> shard number ->
hash) when it records a split, so a shard replaced after recording is noticed too.

A shard written before checksums (no ``checksum`` in its header) is checked against the manifest's
entry for it once ``arc store verify STORE --repair`` has recorded one; until then it is read
unverified (structure checks only), with one warning per store and process.

The helpers take any store object with ``path``, ``manifest``, ``shard_path(split, k)``,
``open_shard(split, k) -> (handle, header)``, ``shard_numbers(split)`` (:func:`header_checksums`),
``tensor_names`` (its shard tensors, hashed in that order) and the remedies its messages give,
``record_hint`` (a shard replaced since its split was recorded) and ``repair_hint`` (a damaged shard):
the cloud store (:class:`arc.store.CloudStore`) and the baselines' weight store
(:class:`arc.baselines.weight_store.WeightStore`).

A verified shard is remembered per process by its file's (device, inode, size, mtime), so it is
hashed once per process however often it is opened (the loader, the statistics, the callbacks).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Optional

from torch import Tensor

from arc.store.layout import StoreError, file_checksum, tensor_checksum

log = logging.getLogger(__name__)

_VERIFIED: dict[tuple, str] = {}  # file identity -> the checksum it verified against
_WARNED: set[str] = set()  # stores warned about shards without a checksum


def recorded_checksum(store, split: str, k: int) -> Optional[str]:
    """The checksum the manifest recorded for shard k of ``split`` (None when it recorded none)."""
    return (store.manifest.get("checksums") or {}).get(split, {}).get(str(k))


def _file_identity(path: Path) -> tuple:
    stat = os.stat(path)
    return (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def verify_shard(store, split: str, k: int, tensors: Optional[Mapping[str, Tensor]] = None, recorded: bool = True) -> bool:
    """Check shard k of ``split`` of ``store`` against its checksum; :class:`StoreError` naming the file
    when it is missing, unreadable, foreign or damaged.

    tensors: the shard's tensors when already read (hashed instead of reading the file again).
    recorded: also require the header's checksum to be the one the manifest recorded for the shard
    (a shard replaced since its split was recorded); resume passes False.
    Returns True when checked against a checksum, False for a shard written before checksums.
    """
    path = store.shard_path(split, k)
    identity = _file_identity(path) if path.exists() else None
    handle, metadata = store.open_shard(split, k)
    header, manifest = metadata.get("checksum"), recorded_checksum(store, split, k)
    if recorded and header and manifest and header != manifest:
        raise StoreError(f"{path}: shard replaced since its split was recorded (hash {header[:12]}, the manifest "
                         f"recorded {manifest[:12]}); {store.record_hint}, or {store.repair_hint}")
    expected = header or manifest
    if expected is None:
        if str(store.path) not in _WARNED:
            _WARNED.add(str(store.path))
            log.warning("%s: shards without a checksum (written before checksums) are read unverified; "
                        "`arc store verify %s --repair` records their checksums", store.path, store.path)
        return False
    if identity is not None and _VERIFIED.get(identity) == expected:
        return True
    names = store.tensor_names
    actual = tensor_checksum(tensors, names) if tensors is not None else file_checksum(handle, names=names)
    if actual != expected:
        raise StoreError(f"{path}: damaged shard (content hash {actual[:12]}, recorded {expected[:12]}); "
                         f"{store.repair_hint}")
    if identity is not None:
        _VERIFIED[identity] = expected
    return True


def shard_verifies(store, split: str, k: int) -> bool:
    """Whether shard k of ``split`` is present, readable, of this store and matches its checksum (resume)."""
    try:
        verify_shard(store, split, k, recorded=False)
    except StoreError:
        return False
    return True


def header_checksums(store, split: str) -> dict[str, Optional[str]]:
    """Shard number (as a string) -> the checksum in its header, else the one the manifest recorded
    (None for neither), for the shard files present for ``split`` (headers only)."""
    return {
        str(k): store.open_shard(split, k)[1].get("checksum") or recorded_checksum(store, split, k)
        for k in store.shard_numbers(split)
    }


def split_changed(store, split: str) -> bool:
    """Whether the shards of a recorded ``split`` are no longer those recorded: a shard missing, added,
    unreadable, or with another checksum (headers only; a refitted shard shows here)."""
    try:
        if store.shard_numbers(split) != list(range(store.num_shards(split))):
            return True
        current = header_checksums(store, split)
    except StoreError:
        return True
    recorded = (store.manifest.get("checksums") or {}).get(split)
    if recorded is None:  # recorded before checksums: only shards written since carry one
        return any(value is not None for value in current.values())
    return current != recorded
