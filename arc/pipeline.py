"""The representation stages as plain, idempotent functions (no Lightning).

pretrain_stage: source -> decoder checkpoint (skipped when it exists).
anchor_stage:   source + decoder -> sharded cloud store (resumable, split across ranks).

``save_pretrained`` writes a pretrained decoder with its record (also for the Lightning
pretraining) and ``store_decoder`` is the one place a store's decoder is loaded and checked.

The anchoring DataModule calls these from ``setup()``; ``tools/anchor.py``
calls them for users who fit once and train many classifiers.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from arc.cloud import CloudBatch
from arc.data.sources import SPLITS, ImageReadError, ImageSource, ImageSplit
from arc.field.colour import check_sample
from arc.field.config import FieldConfig, FitConfig, PretrainConfig
from arc.field.decoder import Decoder, DecoderMeta, load_decoder, save_decoder
from arc.field.errors import DecoderFileError, FieldInputError
from arc.field.fitting import cloud_settings, fit_clouds, intra_op_threads
from arc.field.pretraining import pretrain_decoder
from arc.field.sampling import sample_latent_count
from arc.store import CloudStore, StoreError, decoder_key, default_store_dir, latent_statistics, store_key
from arc.store.cloud_store import record_fit_time
from arc.store.integrity import split_changed, verify_shard
from arc.store import default_decoder_path as keyed_decoder_path

log = logging.getLogger(__name__)

Barrier = Callable[[], None]
PIXEL_TABLE_BYTES = 72 + 32  # per image pixel: the pixel tables and the factored engine's block indices (fit.pixel_budget)


def _no_barrier() -> None:
    return None


def default_decoder_path(source: ImageSource, field: FieldConfig, pretrain: PretrainConfig, root: str | Path) -> Path:
    """Where the decoder for (source identity, field, pretrain, the source's D) lives: keyed by their hash."""
    return keyed_decoder_path(root, source.spec, decoder_key(source.identity, asdict(field), asdict(pretrain), source.dims))


def pretraining_indices(num_train: int, pretrain: PretrainConfig) -> list[int]:
    """The seeded subset of train images (never val or test) that pretrains the decoder."""
    generator = torch.Generator().manual_seed(pretrain.seed)
    return sorted(torch.randperm(num_train, generator=generator)[: pretrain.images].tolist())


class SkippedImage(ValueError):
    """An image that is counted as skipped (unreadable, NaN, or too small for the field)."""


def read_fittable(split: ImageSplit, i: int, field: FieldConfig) -> tuple[torch.Tensor, int]:
    """Image ``i`` of ``split`` and its label; ``SkippedImage`` when it cannot be read or fitted."""
    try:
        image, label = split[i]
        check_sample(image)
        sample_latent_count(image.shape[1:], 0, field)  # fewer points than neighbours
    except (ImageReadError, FieldInputError) as error:
        raise SkippedImage(f"{split.name} image {i}: {error}") from error
    return image, label


def pretraining_images(
    source: ImageSource, field: FieldConfig, pretrain: PretrainConfig
) -> tuple[list[torch.Tensor], list[int]]:
    """The fittable images of the seeded pretraining subset of train and their source indices."""
    train = source.split("train")
    images, indices = [], []
    for i in pretraining_indices(len(train), pretrain):
        try:
            images.append(read_fittable(train, i, field)[0])
            indices.append(i)
        except SkippedImage as error:
            log.warning("pretraining skips %s", error)
    if not images:
        raise ValueError(f"no readable train image to pretrain the decoder on in {source.spec}")
    return images, indices


def pretrain_stage(
    source: ImageSource,
    field: FieldConfig,
    pretrain: PretrainConfig,
    path: str | Path,
    device: torch.device | str = "cpu",
) -> Path:
    """Pretrain the shared decoder on seeded train images and save it to ``path``; a no-op if it exists."""
    path = Path(path)
    if path.exists():
        load_decoder(path)  # refuses a corrupt or foreign file with a clear message
        log.info("decoder %s exists; pretraining skipped", path)
        return path
    images, indices = pretraining_images(source, field, pretrain)
    bar = tqdm(total=pretrain.steps, desc="pretrain decoder", unit="step")

    def progress(step: int, loss: float) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.4f}")

    progress_file = path.with_name(path.name + ".progress")  # a killed run resumes from here
    decoder, psnr = pretrain_decoder(images, field, pretrain, "train", indices, device=device, progress=progress,
                                     checkpoint=progress_file)
    bar.close()
    return save_pretrained(path, decoder, source, psnr)


def save_pretrained(path: str | Path, decoder: Decoder, source: ImageSource, psnr: torch.Tensor) -> Path:
    """Save a decoder pretrained on ``source`` with its record: the source, the number of pretraining
    images and their mean PSNR (dB), from their [B] ``psnr``."""
    meta = DecoderMeta.of(decoder, source=source.spec, source_hash=source.identity_hash, images=len(psnr),
                          psnr_mean=psnr.mean().item())
    save_decoder(path, decoder, meta)
    log.info("pretrained decoder on %d images, mean PSNR %.2f dB -> %s", meta.images, meta.psnr_mean, path)
    return Path(path)


def store_decoder(store: CloudStore, path: Optional[str | Path] = None) -> Decoder:
    """The decoder (CPU, eval mode) the clouds of ``store`` were fitted with: ``path``, or else the manifest's
    ``decoder_path`` (relative to the store directory; stores written before that was so: to the working directory).

    Raises :class:`DecoderFileError` when it is missing or unreadable, or its content hash (or z, n) is not the store's.
    """
    given = path is not None
    path = path if given else store.decoder_path
    if path is None:
        raise DecoderFileError(f"{store.path}: the manifest names no decoder")
    candidates = [Path(path)] if given or Path(path).is_absolute() else [store.path / path, Path(path)]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise DecoderFileError(f"decoder checkpoint {path} not found{'' if given else ' (from the store manifest)'}")
    decoder, meta = load_decoder(found)
    if meta.hash != store.decoder_hash:
        raise DecoderFileError(
            f"decoder {found} (content hash {meta.hash[:12]}) is not the decoder the store {store.path} was fitted "
            f"with (hash {store.decoder_hash[:12]}); clouds decode only with their own decoder and are never mixed"
        )
    field = store.manifest.get("field", {})
    if (field.get("latent_dim"), field.get("neighbours")) not in ((None, None), (decoder.latent_dim, decoder.neighbours)):
        raise DecoderFileError(f"decoder {found} has z={decoder.latent_dim}, n={decoder.neighbours}; the store has "
                               f"z={field.get('latent_dim')}, n={field.get('neighbours')}")
    return decoder.eval()


def open_store(
    source: ImageSource, field: FieldConfig, fit: FitConfig, decoder_path: Path, store_root: str | Path, path: Optional[str | Path] = None,
    shard_size: int = 1024,
) -> CloudStore:
    """Create or reopen the store keyed by (source identity, field, fit, decoder hash); with ``fit.init: patch``
    the key holds the hash of the decoder's latent-start map too (:func:`arc.field.fitting.cloud_settings`)."""
    decoder, meta = load_decoder(decoder_path)
    if meta.dims != source.dims:
        raise DecoderFileError(f"decoder {decoder_path} decodes {meta.dims}-D samples; the source {source.spec} has "
                               f"{source.dims}-D ones: pretrain a decoder on this source")
    fit_settings = cloud_settings(fit, decoder, field)  # not pixel_budget (memory) nor engine (speed)
    key = store_key(source.identity, asdict(field), fit_settings, meta.hash, meta.dims)
    directory = Path(path) if path is not None else default_store_dir(store_root, source.spec, key)
    return CloudStore.create_or_open(directory, {
        "source": source.identity,
        "field": asdict(field),
        "fit": fit_settings,
        "spacing": field.spacing_for(meta.dims),
        "dims": meta.dims,  # the decoder's: the samples' spatial dimensions
        "decoder_hash": meta.hash,
        "decoder_path": os.path.relpath(Path(decoder_path).resolve(), directory.resolve()),  # moves with the data root
        "shard_size": shard_size,
    })


def _fit_shard(
    store: CloudStore, split_name: str, shard: int, source: ImageSource, decoder, field: FieldConfig, fit: FitConfig,
    device: torch.device, bar: tqdm, lock: threading.Lock,
) -> tuple[int, float]:
    split = source.split(split_name)
    first = shard * store.shard_size
    indices = range(first, min(first + store.shard_size, len(split)))
    images, labels, kept, skipped = [], [], [], []
    for i in indices:
        try:
            image, label = read_fittable(split, i, field)
        except SkippedImage as error:
            log.warning("skipping %s", error)
            skipped.append(i)
            continue
        images.append(image)
        labels.append(label)
        kept.append(i)
    if not kept:
        store.write_shard(split_name, shard, CloudBatch.empty(field.latent_dim, source.channels, store.dims), torch.zeros(0), skipped)
        with lock:
            bar.update(len(skipped) * fit.steps)
        return 0, 0.0

    def on_step(images: int) -> None:  # called from fitting threads: one step of a group of ``images``
        with lock:
            bar.update(images)

    def progress(images_done: int, group_psnr: torch.Tensor) -> None:
        with lock:
            bar.set_postfix(psnr=f"{float(group_psnr.mean()):.2f}")

    result = fit_clouds(images, decoder, field, fit, split_name, kept, labels, device=device, progress=progress,
                        on_step=on_step)
    with lock:
        bar.update(len(skipped) * fit.steps)
    store.write_shard(split_name, shard, result.clouds, result.psnr, skipped)
    return len(kept), float(result.psnr.sum())


def anchor_stage(
    source: ImageSource,
    field: FieldConfig,
    fit: FitConfig,
    store: CloudStore,
    splits: Sequence[str] = SPLITS,
    rank: int = 0,
    world_size: int = 1,
    barrier: Barrier = _no_barrier,
    device: torch.device | str = "cpu",
    shard_workers: Optional[int] = None,
) -> CloudStore:
    """Fit every missing shard of ``splits`` into ``store``; rank r fits shards k ≡ r (mod world_size).

    ``shard_workers`` shards are fitted at once (default: 2 on CUDA, so one shard's reading and
    CPU preparation overlap the other's device work; 1 on the CPU, whose fitting already uses
    every core; more than 1 on the CPU fits each shard single-threaded). Results do not depend on it.

    Every shard of ``splits`` (recorded or not) is checked against its checksum (once per process);
    finished shards that verify are never refitted (resume), missing or damaged ones are refitted,
    so a stage that needs only some splits (e.g. ``test`` on a new canvas) fits only those. After a
    barrier, rank 0 records the splits that are new or whose shards changed, with the train-only
    latent statistics when train is among them, and marks the store complete once every split of
    :data:`SPLITS` is recorded; a last barrier follows (every rank calls both barriers).
    """
    todo = {split_name: _shards_to_fit(store, split_name, len(source.split(split_name)), rank, world_size)
            for split_name in splits}
    if any(todo.values()):
        _fit_shards(source, field, fit, store, todo, rank, device, shard_workers)
    barrier()
    if rank == 0:
        _record(source, store, [s for s in splits if not store.has_split(s) or split_changed(store, s)])
    barrier()
    return CloudStore.open(store.path)


def _shards_to_fit(store: CloudStore, split_name: str, images: int, rank: int, world_size: int) -> list[int]:
    """The shards of ``split_name`` (for ``images`` source images) this rank fits: missing or not verifying."""
    todo = []
    for k in range(rank, store.num_shards(split_name, images), world_size):
        if not store.shard_path(split_name, k).exists():
            todo.append(k)
            continue
        try:
            verify_shard(store, split_name, k, recorded=False)
        except StoreError as error:
            log.warning("refitting %s", error)
            todo.append(k)
    return todo


def _fit_shards(source: ImageSource, field: FieldConfig, fit: FitConfig, store: CloudStore, todo: dict[str, list[int]],
                rank: int, device: torch.device | str, shard_workers: Optional[int]) -> None:
    """Fit the shards ``todo`` (split -> shard numbers) into ``store``."""
    decoder = store_decoder(store)
    if decoder.channels != source.channels:
        raise ValueError(f"decoder {store.decoder_path} outputs {decoder.channels} channels but {source.spec} has {source.channels}")
    device = torch.device(device)
    decoder = decoder.to(device)  # once, not per shard
    if shard_workers is None:
        shard_workers = 2 if device.type == "cuda" else 1
    lock = threading.Lock()  # the progress bar is shared by the shard workers
    groups = shard_workers * (2 if device.type == "cuda" else max(1, torch.get_num_threads() // shard_workers))
    for split_name, shards in todo.items():
        split = source.split(split_name)
        if shards and source.largest_pixels:
            need = fitting_memory(source.largest_pixels, store.shard_size, fit, groups)
            log.info("anchor %s: images of up to %d pixels; fitting memory about %.2f GiB (%d groups at once, %d B per "
                     "image pixel; fit.pixel_budget and the source option max_pixels bound it)", split_name,
                     source.largest_pixels, need / 2**30, groups, PIXEL_TABLE_BYTES)
        started = time.perf_counter()
        total = sum(min(store.shard_size, len(split) - k * store.shard_size) for k in shards)
        # counted in image-steps, shown in images (unit_scale), so the rate reads images/s
        bar = tqdm(total=total * fit.steps, desc=f"anchor {split_name}", unit="img", unit_scale=1 / fit.steps,
                   disable=total == 0, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")

        def fit_shard(k: int) -> tuple[int, float]:  # (images fitted, their PSNR sum)
            return _fit_shard(store, split_name, k, source, decoder, field, fit, device, bar, lock)

        if shard_workers <= 1:  # in this thread, so Ctrl-C stops at once
            done = [fit_shard(k) for k in shards]
        else:
            pool = ThreadPoolExecutor(max_workers=shard_workers)
            # on the CPU each concurrent shard fits with one intra-op thread (no thread-count races)
            try:
                with intra_op_threads(1) if device.type == "cpu" else nullcontext():
                    done = list(pool.map(fit_shard, shards))
            finally:  # on an error or Ctrl-C: finish (and write) the running shards, start no new ones
                pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        fitted, psnr_sum = sum(n for n, _ in done), sum(psnr for _, psnr in done)
        if fitted:
            log.info("rank %d fitted %d %s images, mean PSNR %.2f dB", rank, fitted, split_name, psnr_sum / fitted)
            if rank == 0:  # rank 0's own rate stands for the store's
                record_fit_time(store, split_name, fitted, time.perf_counter() - started)


def _record(source: ImageSource, store: CloudStore, splits: Sequence[str]) -> None:
    """Record ``splits`` from their shards (the counts follow the shards), with the train statistics when train is among them."""
    if not splits:
        return
    collected = {split_name: store.collect(split_name) for split_name in splits}
    mean, std = latent_statistics(store, "train") if "train" in splits else (None, None)
    complete = all(store.has_split(split_name) or split_name in splits for split_name in SPLITS)
    store.record({s: c for s, (c, _) in collected.items()}, {s: k for s, (_, k) in collected.items()}, mean, std,
                 complete=complete)
    for split_name, (count, skipped) in collected.items():
        split = source.split(split_name)
        log.info("%s: %d clouds, %d skipped, %d converted to %d channels", split_name, count, len(skipped),
                 split.converted, source.channels)
        if split.downscaled:
            log.info("%s: downscaled %d images to at most %d pixels (source option max_pixels)", split_name,
                     split.downscaled, split.max_pixels)


def fitting_memory(image_pixels: int, images: int, fit: FitConfig, groups_at_once: int) -> int:
    """Bytes the fitting engine's tables take (``PIXEL_TABLE_BYTES`` per image pixel of a group) for
    ``groups_at_once`` groups of ``images`` images of at most ``image_pixels`` pixels each."""
    group_pixels = min(images * image_pixels, max(image_pixels, int(fit.pixel_budget / fit.pixel_fraction)))
    return PIXEL_TABLE_BYTES * group_pixels * groups_at_once
