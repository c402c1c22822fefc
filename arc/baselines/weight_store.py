"""Fitted INR weights on disk: ``STORE/manifest.json`` + ``STORE/<split>/shard-<k>.safetensors``.

The same conventions as the cloud store (:mod:`arc.store`): the directory is named by a key, a
:func:`arc.files.short_hash` of (source identity, INR settings, fit settings except ``pixel_budget``,
shard size; the samples' spatial axes D when not 2, so every 2-D store keeps its key), so a changed setting gives a new store and an old one is never overwritten or silently
reused; shard k of a split holds the source indices [k·S, (k+1)·S) and is written atomically
(:func:`arc.files.atomic_write`) and never rewritten, so a killed run resumes at the first missing
shard. A shard holds

    weights [B, P] f32 (flat, :class:`~arc.baselines.inr.WeightStack` layout), label [B] i64,
    index [B] i64 (source index, ascending), psnr [B] f32,

and in its header the format, store key, split, shard number, the skipped source indices, the
seconds its fit took and ``checksum``, the content hash of its tensors. Checksums are the cloud
store's (:mod:`arc.store.integrity`, one piece of logic for both stores): a shard is verified when
it is read and when a run resumes; a damaged, truncated or foreign shard is refitted on resume (and
reading one says so); recording a split copies its shards' hashes into the manifest
(``checksums``), so a shard replaced later is noticed too, with the split's fit summary
(``fit_stats``: images, mean PSNR, fit seconds; :meth:`WeightStore.fit_metrics`). Shards written
before checksums are read unverified (one warning) until a run records their split again, with their
content hashes.
The manifest records ``dims`` (D of the fitted samples: 1 signals, 2 images, 3 volumes; a manifest without it
is 2-D); a store of another D is refused, and so are samples of another D.
The cloud store's shard format and manifest are those of a latent cloud (positions, offsets, a
decoder hash and spacing, latent statistics) and are not reused; the key, slug, error class,
atomic writes and integrity checks are shared.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from arc.baselines.fitting import INRFitConfig, fit_inrs
from arc.baselines.inr import INRConfig
from arc.data.images import ImageReadError
from arc.files import atomic_write, short_hash, write_json
from arc.store import StoreError, source_slug
from arc.store.integrity import recorded_checksum, shard_verifies, verify_shard
from arc.store.layout import file_checksum, read_manifest, tensor_checksum

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STORE_FORMAT = "arc-weight-store"
SHARD_FORMAT = "arc-weight-shard"
MANIFEST = "manifest.json"
TENSORS = ("weights", "label", "index", "psnr")
SETTINGS = ("source", "inr", "fit", "dims", "channels", "param_count", "shard_size")


def weight_store_key(source_identity: Mapping | str, inr: INRConfig, fit: INRFitConfig, shard_size: int, dims: int = 2) -> str:
    """Key of a weight store: a hash of (source identity, INR settings, fit settings, shard size; the samples'
    spatial axes ``dims`` only when not 2, so 2-D stores keep their keys)."""
    content = {"kind": "weights", "source": source_identity, "inr": inr.key_settings(), "fit": fit.key_settings(),
               "shard_size": shard_size}
    return short_hash(content if dims == 2 else {**content, "dims": int(dims)})


def default_weight_store_dir(root: str | os.PathLike, source_spec: str, key: str) -> Path:
    """``root/weights/<source name>-<key>`` (key from :func:`weight_store_key`)."""
    return Path(root) / "weights" / f"{source_slug(source_spec)}-{key}"


class WeightStore:
    """A weight store directory. Make one with :meth:`create_or_open` or :meth:`open`."""

    tensor_names = TENSORS  # a shard's tensors, in checksum order (arc.store.integrity)
    record_hint = "run the baseline again to record it"

    def __init__(self, path: str | os.PathLike, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def create_or_open(
        cls, path: str | os.PathLike, source: Mapping | str, inr: INRConfig, fit: INRFitConfig, channels: int,
        shard_size: int = 1024, dims: int = 2,
    ) -> "WeightStore":
        """Create the store at ``path`` for samples of ``channels`` channels and ``dims`` spatial axes, or open the
        one there if its settings are the same (else StoreError naming the differing ones)."""
        path = Path(path)
        if shard_size < 1:
            raise StoreError(f"shard_size must be positive, got {shard_size}")
        settings = json.loads(json.dumps({
            "source": source, "inr": inr.key_settings(), "fit": fit.key_settings(), "dims": int(dims), "channels": int(channels),
            "param_count": inr.param_count(channels, dims), "shard_size": int(shard_size),
        }))
        key = weight_store_key(source, inr, fit, shard_size, dims)
        if not (path / MANIFEST).exists():
            if path.exists() and any(not name.startswith(f".{MANIFEST}.") for name in os.listdir(path)):
                raise StoreError(f"{path} exists, is not empty and has no {MANIFEST}; refusing to write a weight store there")
            manifest = {"format": STORE_FORMAT, "format_version": FORMAT_VERSION, "key": key, **settings, "counts": {}, "skipped": {}}
            try:
                write_json(path / MANIFEST, manifest, overwrite=False)
                return cls(path, manifest)
            except FileExistsError:
                pass
        store = cls.open(path)
        there = {**store.manifest, "dims": store.dims}
        differ = sorted(name for name in SETTINGS if there.get(name) != settings[name])
        if differ or store.key != key:
            details = "; ".join(f"{name} {there.get(name)} there, {settings[name]} asked" for name in differ if name != "source")
            raise StoreError(
                f"{path} holds weights fitted with other settings (differing: {', '.join(differ) or 'key'}"
                f"{': ' + details if details else ''}); it is never overwritten: use another directory (the default "
                "one is derived from the settings) or delete it"
            )
        return store

    @classmethod
    def open(cls, path: str | os.PathLike) -> "WeightStore":
        """Open an existing weight store for reading or resume."""
        path = Path(path)
        return cls(path, read_manifest(path, STORE_FORMAT, FORMAT_VERSION, "weight store", "fit one first"))

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def dims(self) -> int:
        """D, the spatial axes of the fitted samples (a manifest without ``dims`` is a 2-D store)."""
        return int(self.manifest.get("dims", 2))

    @property
    def shard_size(self) -> int:
        return int(self.manifest["shard_size"])

    @property
    def counts(self) -> dict[str, int]:
        """Samples per recorded (finished) split."""
        return dict(self.manifest["counts"])

    def shard_path(self, split: str, shard: int) -> Path:
        return self.path / split / f"shard-{shard:05d}.safetensors"

    def _identity(self, split: str, shard: int) -> dict[str, str]:
        return {"format": SHARD_FORMAT, "key": self.key, "split": split, "shard": str(shard)}

    @property
    def repair_hint(self) -> str:
        """What to do about a damaged shard (arc.store.integrity's messages)."""
        return f"run the baseline again: it refits a damaged shard of {self.path} (or delete the shard)"

    def open_shard(self, split: str, shard: int):
        """(safe_open handle, header) of a shard of this store and place; StoreError naming the file otherwise."""
        path = self.shard_path(split, shard)
        if not path.exists():
            raise StoreError(f"{path}: shard missing; run the baseline again to fit it")
        try:
            handle = safe_open(str(path), framework="pt")
        except (SafetensorError, OSError) as err:
            raise StoreError(f"{path}: truncated or corrupt shard ({err}); {self.repair_hint}") from err
        metadata = dict(handle.metadata() or {})
        wrong = [name for name, value in self._identity(split, shard).items() if metadata.get(name) != value]
        if wrong or any(name not in handle.keys() for name in TENSORS):
            raise StoreError(f"{path}: foreign or incomplete shard (header {wrong or 'tensors'} differ); {self.repair_hint}")
        return handle, metadata

    def write_shard(self, split: str, shard: int, tensors: Mapping[str, Tensor], skipped: Sequence[int],
                    fit_seconds: float = 0.0) -> None:
        """Atomically write one shard: ``tensors`` (:data:`TENSORS`; weights [B, P]), the skipped indices, the
        seconds the fit took and the tensors' checksum."""
        out = {name: tensors[name].detach().cpu().contiguous() for name in TENSORS}
        out["weights"], out["psnr"] = out["weights"].float(), out["psnr"].float()
        out["label"], out["index"] = out["label"].long(), out["index"].long()
        b, p = out["weights"].shape
        if p != self.manifest["param_count"] or any(out[name].shape != (b,) for name in TENSORS[1:]):
            raise StoreError(f"refusing to write {self.shard_path(split, shard)}: weights [B, {self.manifest['param_count']}] "
                             f"and [B] label, index, psnr expected, got {[tuple(out[n].shape) for n in TENSORS]}")
        metadata = {**self._identity(split, shard), "count": str(b), "skipped_indices": json.dumps(sorted(int(i) for i in skipped)),
                    "fit_seconds": repr(float(fit_seconds)), "checksum": tensor_checksum(out, TENSORS)}
        atomic_write(self.shard_path(split, shard), lambda tmp: save_file(out, tmp, metadata=metadata))

    def read_shard(self, split: str, shard: int, recorded: bool = True) -> tuple[dict[str, Tensor], list[int]]:
        """(tensors, skipped source indices) of one shard, checksum verified (``recorded``: also against the
        manifest's record of its split, :func:`arc.store.integrity.verify_shard`)."""
        handle, metadata = self.open_shard(split, shard)
        try:
            tensors = {name: handle.get_tensor(name) for name in TENSORS}
            skipped = [int(i) for i in json.loads(metadata.get("skipped_indices", "[]"))]
        except (SafetensorError, OSError, ValueError) as err:
            raise StoreError(f"{self.shard_path(split, shard)}: corrupt shard ({err}); {self.repair_hint}") from err
        verify_shard(self, split, shard, tensors, recorded=recorded)
        return tensors, skipped

    def shards(self, split: str, length: int) -> int:
        """Number of shards of a split of ``length`` source images."""
        return math.ceil(length / self.shard_size)

    def collect(self, split: str) -> dict[str, Tensor]:
        """Every stored sample of a recorded split: weights [N, P], label [N], index [N], psnr [N]."""
        if split not in self.manifest["counts"]:
            raise StoreError(f"{self.path}: split {split!r} is not fitted yet (fitted: {sorted(self.manifest['counts'])})")
        total = self.manifest["counts"][split] + len(self.manifest["skipped"][split])
        parts = [self.read_shard(split, k)[0] for k in range(self.shards(split, total))]
        return {name: torch.cat([part[name] for part in parts]) for name in TENSORS}

    def record(self, split: str, count: int, skipped: Sequence[int], psnr_sum: float, fit_seconds: Optional[float]) -> None:
        """Record a finished split in the manifest: its sample count, skipped indices, the checksums of
        its shards and its fit summary (sum of the samples' PSNR in dB, seconds the fits took, None if unknown)."""
        checksums = {}
        for k in range(self.shards(split, int(count) + len(skipped))):  # a shard from before checksums: its content now
            handle, header = self.open_shard(split, k)
            checksums[str(k)] = header.get("checksum") or recorded_checksum(self, split, k) or file_checksum(handle, names=TENSORS)
        stats = {"images": int(count), "psnr_mean": psnr_sum / count if count else None, "fit_seconds": fit_seconds}
        manifest = {**self.manifest, "counts": {**self.manifest["counts"], split: int(count)},
                    "skipped": {**self.manifest["skipped"], split: sorted(int(i) for i in skipped)},
                    "checksums": {**self.manifest.get("checksums", {}), split: checksums},
                    "fit_stats": {**self.manifest.get("fit_stats", {}), split: stats}}
        if manifest != self.manifest:
            write_json(self.path / MANIFEST, manifest)
            self.manifest = manifest

    def fit_metrics(self) -> dict[str, float]:
        """Over the recorded splits: ``fit/psnr_mean`` (dB, per image), ``fit/images_per_s`` (images over the
        seconds their fits took; absent for a store recorded before fit times) and ``repr/params_per_sample`` (P)."""
        stats = [s for s in self.manifest.get("fit_stats", {}).values() if s["images"]]
        metrics = {"repr/params_per_sample": float(self.manifest["param_count"])}
        images = sum(s["images"] for s in stats)
        if images:
            metrics["fit/psnr_mean"] = sum(s["psnr_mean"] * s["images"] for s in stats) / images
        if images and all(s["fit_seconds"] is not None for s in stats) and sum(s["fit_seconds"] for s in stats) > 0:
            metrics["fit/images_per_s"] = images / sum(s["fit_seconds"] for s in stats)
        return metrics


def fit_weight_store(
    store: WeightStore, split: str, images: Sequence[tuple[Tensor, int]], inr: INRConfig, fit: INRFitConfig,
    device: torch.device | str | None = None, progress: Optional[Callable[[int, int], None]] = None,
) -> int:
    """Fit every missing shard of ``split`` (``images[i]`` -> (sample [C, *S] in [0, 1], label), S of the
    store's D axes; an :class:`ImageReadError` is a counted skip), record the split and return the number of shards fitted.
    ``progress(shard, shards)`` follows every shard, fitted or found."""
    total = store.shards(split, len(images))
    fitted, count, skipped_all, psnr_sum = 0, 0, [], 0.0
    seconds: Optional[float] = 0.0  # None once a shard from before fit times is met
    for k in range(total):
        if shard_verifies(store, split, k):
            tensors, skipped = store.read_shard(split, k, recorded=False)
            took = store.open_shard(split, k)[1].get("fit_seconds")
            seconds = None if seconds is None or took is None else seconds + float(took)
        else:
            if store.shard_path(split, k).exists():
                log.warning("%s: damaged, truncated or foreign shard; refitting it", store.shard_path(split, k))
            began = time.perf_counter()
            rows, labels, indices, skipped = [], [], [], []
            for i in range(k * store.shard_size, min((k + 1) * store.shard_size, len(images))):
                try:
                    image, label = images[i]
                except ImageReadError:
                    skipped.append(i)
                    continue
                if image.ndim - 1 != store.dims:
                    raise StoreError(f"{store.path} holds INRs of {store.dims}-D samples; {split} sample {i} has shape "
                                     f"{tuple(image.shape)} ({image.ndim - 1}-D): use another store directory")
                rows.append(image)
                labels.append(int(label))
                indices.append(i)
            if rows:
                result = fit_inrs(rows, inr, fit, split, indices, device=device)
                weights, psnr = result.weights, result.psnr
            else:
                weights, psnr = torch.empty(0, store.manifest["param_count"]), torch.empty(0)
            tensors = {"weights": weights, "label": torch.tensor(labels, dtype=torch.long),
                       "index": torch.tensor(indices, dtype=torch.long), "psnr": psnr}
            elapsed = time.perf_counter() - began
            store.write_shard(split, k, tensors, skipped, elapsed)
            seconds = None if seconds is None else seconds + elapsed
            fitted += 1
        count += len(tensors["index"])
        psnr_sum += float(tensors["psnr"].double().sum())
        skipped_all += list(skipped)
        if progress is not None:
            progress(k + 1, total)
    store.record(split, count, skipped_all, psnr_sum, seconds)
    return fitted


def store_settings(manifest: Mapping[str, Any]) -> tuple[INRConfig, dict]:
    """The INR settings and fit settings (as a dict) a store's manifest records."""
    inr = dict(manifest["inr"])
    inr["hidden"] = tuple(inr["hidden"])
    return INRConfig(**inr), dict(manifest["fit"])
