"""A cloud store directory (its manifest and shards, see :mod:`arc.store.layout`): create or reopen
for resume, write and read shards, record finished splits, and the train-only latent statistics.

A store directory whose manifest has other settings is never written to.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from arc.cloud import CloudBatch
from arc.files import write_json
from arc.store.integrity import header_checksums, shard_verifies, verify_shard
from arc.store.layout import (
    FORMAT_VERSION,
    MANIFEST,
    TENSORS,
    UNCOMPARED,
    StoreError,
    differing_settings,
    manifest_settings,
    open_shard_file,
    read_manifest,
    read_shard_file,
    shard_tensors,
    skipped_indices,
    store_dims,
    write_shard_file,
)

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class CloudStore:
    """A cloud store directory: its manifest and shards. Make one with :meth:`create_or_open` or :meth:`open`."""

    tensor_names, record_hint = TENSORS, "run anchoring again to record it"  # for arc.store.integrity
    repair_hint = property(lambda self: f"`arc store verify {self.path} --repair` drops it and the next anchoring run refits it")

    def __init__(self, path: str | os.PathLike, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def create_or_open(cls, path: str | os.PathLike, manifest_fields: Mapping[str, Any]) -> "CloudStore":
        """Create a store at ``path``, or open the existing one there if its settings are the same.

        manifest_fields: ``source`` (identity), ``field``, ``fit``, ``spacing``, ``decoder_hash``,
        optional ``decoder_path`` and ``shard_size`` (default 1024), and any further JSON-able
        settings. An existing store with different settings raises :class:`StoreError` (it is never
        written over); the same settings open it for resume.
        """
        path = Path(path)
        settings = manifest_settings(manifest_fields)
        if not (path / MANIFEST).exists():
            busy = path.exists() and any(not name.startswith(f".{MANIFEST}.") for name in os.listdir(path))
            if busy and not (path / MANIFEST).exists():  # re-check: another rank may have just created it
                raise StoreError(f"{path} exists, is not empty and has no {MANIFEST}; refusing to write a store there")
            manifest = {**settings, "status": "incomplete", "counts": {}, "skipped": {}, "latent_mean": None, "latent_std": None}
            try:
                write_json(path / MANIFEST, manifest, overwrite=False)
                return cls(path, manifest)
            except FileExistsError:  # another process created it meanwhile: compare below
                pass
        store = cls.open(path)
        differ = differing_settings(settings, store.manifest)
        if differ:
            raise StoreError(
                f"{path} holds a store with other settings (differing: {', '.join(differ)}); it is never "
                "overwritten: use another directory (the default one is derived from the settings) or delete it"
            )
        moved = {name: settings[name] for name in UNCOMPARED if name in settings and settings[name] != store.manifest.get(name)}
        if moved:
            store.manifest = {**store.manifest, **moved}
            write_json(path / MANIFEST, store.manifest)
        return store

    @classmethod
    def open(cls, path: str | os.PathLike) -> "CloudStore":
        """Open an existing store (complete or not) for reading or resume."""
        path = Path(path)
        return cls(path, read_manifest(path))

    # -- properties -------------------------------------------------------------------------

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def shard_size(self) -> int:
        return int(self.manifest["shard_size"])

    @property
    def decoder_hash(self) -> str:
        return self.manifest["decoder_hash"]

    @property
    def decoder_path(self) -> str | None:
        return self.manifest.get("decoder_path")

    dims = property(lambda self: store_dims(self.manifest), doc="D, the samples' spatial dimensions (2 when the manifest has no dims).")

    @property
    def spacing(self) -> float:
        return float(self.manifest["spacing"])

    @property
    def is_complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    @property
    def counts(self) -> dict[str, int]:
        """Clouds per recorded split (see :meth:`record`)."""
        return dict(self.manifest.get("counts", {}))

    @property
    def skipped(self) -> dict[str, list[int]]:
        """Skipped source indices per recorded split."""
        return {split: list(indices) for split, indices in self.manifest.get("skipped", {}).items()}

    @property
    def latent_mean(self) -> Tensor:
        """[z] float32 train-only latent mean (recorded once train is fitted)."""
        return self._statistic("latent_mean")

    @property
    def latent_std(self) -> Tensor:
        """[z] float32 train-only latent std (recorded once train is fitted)."""
        return self._statistic("latent_std")

    def _statistic(self, name: str) -> Tensor:
        if self.manifest.get(name) is None:
            raise StoreError(f"{self.path}: the train split is not fitted yet; {name} is not available (run anchoring)")
        return torch.tensor(self.manifest[name], dtype=torch.float32)

    # -- shards -----------------------------------------------------------------------------

    def shard_path(self, split: str, k: int) -> Path:
        if not _SPLIT_NAME.match(split):
            raise StoreError(f"invalid split name {split!r}")
        if k < 0:
            raise StoreError(f"shard number must be >= 0, got {k}")
        return self.path / split / f"shard-{int(k):05d}.safetensors"

    def shard_range(self, k: int) -> tuple[int, int]:
        """Source indices [start, stop) of shard k."""
        return k * self.shard_size, (k + 1) * self.shard_size

    def num_shards(self, split: str, count: int | None = None) -> int:
        """Number of shards for ``count`` source images (default: the finalised count + skips of ``split``)."""
        if count is None:
            if not self.has_split(split):
                raise StoreError(f"{self.path}: pass the number of images; split {split!r} is not recorded yet")
            count = self.counts.get(split, 0) + len(self.skipped.get(split, []))
        return math.ceil(count / self.shard_size)

    def shard_numbers(self, split: str) -> list[int]:
        """Numbers of the shard files present for ``split`` (not validated), ascending."""
        folder = self.path / split
        if not folder.is_dir():
            return []
        found = (re.fullmatch(r"shard-(\d+)\.safetensors", name) for name in os.listdir(folder))
        return sorted(int(match.group(1)) for match in found if match)

    def _shard_identity(self, split: str, k: int) -> dict[str, str]:
        """The header entries that tie a shard to this store, decoder and place."""
        return {
            "format_version": str(FORMAT_VERSION),
            "store_key": self.key,
            "decoder_hash": self.decoder_hash,
            "split": split,
            "shard": str(k),
            "shard_size": str(self.shard_size),
        }

    def open_shard(self, split: str, k: int):
        """(safe_open handle, header metadata) of shard k of ``split``; :class:`StoreError` unless it is
        present with a valid header of this store (tensors are read lazily through the handle)."""
        return open_shard_file(self.shard_path(split, k), self._shard_identity(split, k))

    def has_shard(self, split: str, k: int) -> bool:
        """True when shard k of ``split`` exists with a complete, valid header of this store."""
        try:
            self.open_shard(split, k)
        except StoreError:
            return False
        return True

    def shard_skipped(self, split: str, k: int) -> list[int]:
        """Source indices skipped in shard k (from its header)."""
        _, metadata = self.open_shard(split, k)
        return skipped_indices(self.shard_path(split, k), metadata)

    def collect(self, split: str) -> tuple[int, list[int]]:
        """(number of clouds, skipped source indices) over the shards present for ``split`` (headers only)."""
        count, skipped = 0, []
        for k in self.shard_numbers(split):
            handle, metadata = self.open_shard(split, k)
            count += handle.get_slice("offset").get_shape()[0]
            skipped.extend(skipped_indices(self.shard_path(split, k), metadata))
        return count, sorted(skipped)

    def write_shard(self, split: str, k: int, clouds: CloudBatch, psnr: Tensor, skipped: Sequence[int] = ()) -> Path:
        """Write shard k of ``split`` atomically: ``clouds`` (index ascending, inside the shard's range),
        ``psnr`` [B], and the ``skipped`` source indices of the range.

        A finished shard that verifies is never rewritten; a truncated, corrupt or damaged one is replaced.
        """
        path = self.shard_path(split, k)
        if self.has_shard(split, k) and shard_verifies(self, split, k):
            raise StoreError(f"refusing to write {path}: the shard is already finished (delete it to refit)")
        write_shard_file(path, clouds, psnr, skipped, self._shard_identity(split, k), self.shard_range(k), self.manifest)
        return path

    def read_shard(self, split: str, k: int) -> tuple[CloudBatch, Tensor]:
        """(clouds, psnr [B]) of shard k, checksum verified; :class:`StoreError` naming the file when it is unusable."""
        handle, metadata = self.open_shard(split, k)
        clouds, psnr = read_shard_file(self.shard_path(split, k), handle, metadata, self.shard_range(k))
        verify_shard(self, split, k, shard_tensors(clouds, psnr))
        return clouds, psnr

    # -- completion -------------------------------------------------------------------------

    def record(
        self,
        counts: Mapping[str, int],
        skips: Mapping[str, Sequence[int]],
        latent_mean: Tensor | None = None,
        latent_std: Tensor | None = None,
        complete: bool = False,
    ) -> None:
        """Check the shards of every split in ``counts`` (clouds) against ``skips`` (skipped source indices)
        and record those splits with their shards' checksums in the manifest, keeping the splits recorded before; also record the
        train-only latent statistics when given. ``complete`` sets status "complete" (statistics required)."""
        result_counts, result_skips = dict(self.manifest.get("counts", {})), dict(self.manifest.get("skipped", {}))
        checksums = dict(self.manifest.get("checksums") or {})
        for split, count in counts.items():
            expected_skips = sorted(int(i) for i in skips.get(split, ()))
            n = self.num_shards(split, int(count) + len(expected_skips))
            numbers = self.shard_numbers(split)
            if numbers != list(range(n)):
                raise StoreError(
                    f"{self.path / split}: expected shards 0..{n - 1} for {count} clouds + {len(expected_skips)} skips, "
                    f"found {numbers}; run anchoring again to fit the missing ones"
                )
            found_count, found_skips = self.collect(split)
            if found_count != int(count) or found_skips != expected_skips:
                raise StoreError(
                    f"{self.path / split}: shards hold {found_count} clouds and {len(found_skips)} skips, "
                    f"the record was told {count} and {len(expected_skips)}"
                )
            result_counts[split], result_skips[split] = int(count), expected_skips
            checksums[split] = header_checksums(self, split)
        manifest = {**self.manifest, "counts": result_counts, "skipped": result_skips, "checksums": checksums}
        if (latent_mean is None) != (latent_std is None):
            raise StoreError("latent mean and std are recorded together")
        if latent_mean is not None:
            mean = torch.as_tensor(latent_mean, dtype=torch.float64).reshape(-1)
            std = torch.as_tensor(latent_std, dtype=torch.float64).reshape(-1)
            if mean.shape != std.shape or not bool(torch.isfinite(mean).all() and torch.isfinite(std).all()):
                raise StoreError(f"latent mean/std must be finite vectors of one length, got {tuple(mean.shape)} and {tuple(std.shape)}")
            manifest.update(latent_mean=mean.tolist(), latent_std=std.tolist())
        if complete:
            if manifest.get("latent_mean") is None:
                raise StoreError(f"{self.path}: a complete store needs the train latent statistics")
            manifest["status"] = "complete"
        write_json(self.path / MANIFEST, manifest)
        self.manifest = manifest

    def finalize(self, counts: Mapping[str, int], skips: Mapping[str, Sequence[int]], latent_mean: Tensor, latent_std: Tensor) -> None:
        """:meth:`record` the splits and the train-only latent statistics, and mark the store complete."""
        self.record(counts, skips, latent_mean, latent_std, complete=True)

    def has_split(self, split: str) -> bool:
        """Whether every shard of ``split`` is fitted and recorded (the split is readable)."""
        return split in self.manifest.get("counts", {})

    @property
    def has_statistics(self) -> bool:
        return self.manifest.get("latent_mean") is not None


def record_fit_time(store: CloudStore, split: str, images: int, seconds: float) -> None:
    """Add ``images`` fitted in ``seconds`` (wall time) to the manifest's ``fit_time[split]`` ({images, seconds},
    summed over the runs that fitted its shards, so a resumed store keeps the rate of all its fitting)."""
    times = dict(store.manifest.get("fit_time") or {})
    done = times.get(split, {"images": 0, "seconds": 0.0})
    times[split] = {"images": int(done["images"]) + int(images), "seconds": round(float(done["seconds"]) + float(seconds), 3)}
    store.manifest = {**store.manifest, "fit_time": times}
    write_json(store.path / MANIFEST, store.manifest)


def fit_images_per_s(store: CloudStore) -> float | None:
    """Images fitted per second over every split the manifest has a ``fit_time`` for (None when none)."""
    times = (store.manifest.get("fit_time") or {}).values()
    images, seconds = sum(t["images"] for t in times), sum(t["seconds"] for t in times)
    return images / seconds if seconds > 0 else None


def as_store(store: CloudStore | str | os.PathLike) -> CloudStore:
    """``store`` itself, or the store opened at that path."""
    return store if isinstance(store, CloudStore) else CloudStore.open(store)


def latent_statistics(store: CloudStore | str | os.PathLike, split: str = "train", chunk_rows: int = 1 << 18) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and std (unbiased, like ``torch.std``) of all latents of ``split``: ([z], [z]) float32.

    Streams over the shards in chunks of ``chunk_rows`` latents (float64 accumulation, Chan's
    parallel merge), so memory stays bounded; meant for train only.
    """
    store = as_store(store)
    total, mean, m2 = 0, None, None
    for k in store.shard_numbers(split):
        handle, _ = store.open_shard(split, k)
        latents = handle.get_slice("lat")
        rows = latents.get_shape()[0]
        for first in range(0, rows, chunk_rows):
            lat = latents[first : first + chunk_rows].to(torch.float64)
            n = lat.shape[0]
            chunk_mean = lat.mean(0)
            chunk_m2 = ((lat - chunk_mean) ** 2).sum(0)
            if mean is None:
                total, mean, m2 = n, chunk_mean, chunk_m2
                continue
            delta = chunk_mean - mean
            merged = total + n
            mean = mean + delta * (n / merged)
            m2 = m2 + chunk_m2 + delta**2 * (total * n / merged)
            total = merged
    if total < 2:
        raise StoreError(f"{store.path / split}: need at least 2 latents for statistics, found {total}")
    return mean.float(), (m2 / (total - 1)).sqrt().float()
