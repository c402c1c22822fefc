"""The on-disk layout of a cloud store: ``STORE/manifest.json`` + ``STORE/<split>/shard-<k>.safetensors``
(k zero-padded to 5 digits, e.g. ``train/shard-00003.safetensors``).

Shard k of a split holds the clouds of the source indices [k·shard_size, (k+1)·shard_size)
(the same ranges whatever the number of ranks), as safetensors tensors

    pos [N, 2] f32, lat [N, z] f32, offset [B] i64 (cumulative), label [B] i64, size [B, 2] i64,
    index [B] i64 (source index, ascending), psnr [B] f32, colour_mean / colour_std [B, C] f32,

and string metadata: format and version, store key, split, shard number, shard size, decoder
hash, number of clouds, the skipped source indices of that range (JSON), so a resumed run
keeps its skip counts, and ``checksum``: the content hash of the tensors (:func:`tensor_checksum`;
shards written before checksums lack it, see :mod:`arc.store.integrity`). Shards are written atomically (:func:`arc.files.atomic_write`) and never
rewritten; a truncated, corrupt or foreign shard raises :class:`StoreError` naming the file. The
manifest holds the settings (format version, source identity, field and fit settings, spacing s,
``dims`` D (the samples' spatial dimensions: ``pos`` is [N, D] and ``size`` [B, D]; a manifest
without it is a store of images, D = 2), decoder hash and path, shard size), counts, skips and shard checksums per split, the train-only
per-dimension latent mean/std, and the status ("incomplete" until the store is finalised). No pickle anywhere.

This module reads, writes and checks single files; :class:`arc.store.CloudStore` ties them into a
store directory.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from arc.cloud import CloudBatch, CloudError
from arc.files import atomic_write, canonical_json
from arc.store.keys import store_key

FORMAT_VERSION = 1
STORE_FORMAT = "arc-cloud-store"
SHARD_FORMAT = "arc-cloud-shard"
MANIFEST = "manifest.json"
DEFAULT_SHARD_SIZE = 1024
REQUIRED_FIELDS = ("source", "field", "fit", "spacing", "decoder_hash")
RESULT_FIELDS = ("status", "counts", "skipped", "latent_mean", "latent_std", "checksums", "fit_time")
UNCOMPARED = ("decoder_path",)
DEFAULTS = {"dims": 2}  # settings added since stores were first written, and their value in older manifests
_RESERVED = ("format", "format_version", "key", *RESULT_FIELDS)
_FLOAT = {"pos", "lat", "psnr", "colour_mean", "colour_std"}
TENSORS = ("pos", "lat", "offset", "label", "size", "index", "psnr", "colour_mean", "colour_std")
PER_CLOUD = ("offset", "label", "size", "index", "psnr", "colour_mean", "colour_std")


class StoreError(ValueError):
    """A store or shard is unusable: other settings, truncated, corrupt or foreign files, bad input."""


# -- manifest --------------------------------------------------------------------------------


def manifest_settings(manifest_fields: Mapping[str, Any]) -> dict:
    """The settings part of a manifest: ``manifest_fields`` checked, with the default shard size, as
    plain JSON values, plus format, version and store key (see :meth:`arc.store.CloudStore.create_or_open`)."""
    missing = [key for key in REQUIRED_FIELDS if key not in manifest_fields]
    if missing:
        raise StoreError(f"manifest fields {missing} are required (need {list(REQUIRED_FIELDS)})")
    reserved = [key for key in manifest_fields if key in _RESERVED]
    if reserved:
        raise StoreError(f"manifest fields {reserved} are set by the store itself")
    fields = dict(manifest_fields)
    fields.setdefault("shard_size", DEFAULT_SHARD_SIZE)
    if not isinstance(fields["shard_size"], int) or fields["shard_size"] < 1:
        raise StoreError(f"shard_size must be a positive integer, got {fields['shard_size']!r}")
    if fields.get("dims", 2) not in (1, 2, 3) or isinstance(fields.get("dims"), bool):
        raise StoreError(f"dims must be 1, 2 or 3 (the samples' spatial dimensions), got {fields['dims']!r}")
    try:
        settings = json.loads(canonical_json(fields))
    except (TypeError, ValueError) as err:
        raise StoreError(f"manifest fields must be JSON-compatible ({err})") from err
    key = store_key(settings["source"], settings["field"], settings["fit"], settings["decoder_hash"], store_dims(settings))
    settings.update(format=STORE_FORMAT, format_version=FORMAT_VERSION, key=key)
    return settings


def differing_settings(settings: Mapping[str, Any], manifest: Mapping[str, Any]) -> list[str]:
    """Names of the settings (not results, not the decoder path) on which ``settings`` and ``manifest`` differ
    (a setting of :data:`DEFAULTS` that one of them lacks counts as its default)."""
    return sorted(
        name
        for name in set(settings) | set(manifest)
        if name not in RESULT_FIELDS + UNCOMPARED and settings.get(name, DEFAULTS.get(name)) != manifest.get(name, DEFAULTS.get(name))
    )


def store_dims(manifest: Mapping[str, Any]) -> int:
    """D of a store's samples from its manifest (or settings); 2 when it does not say (stores of images)."""
    return int(manifest.get("dims", DEFAULTS["dims"]))


def read_manifest(directory: Path, store_format: str = STORE_FORMAT, version: int = FORMAT_VERSION,
                  kind: str = "cloud store", create: str = "run anchoring to create it") -> dict:
    """The manifest of the store ``directory``, checked for format and version (``kind`` and ``create``
    name the store and how to make one in the messages; the weight store of the baselines shares this)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError as err:
        raise StoreError(f"{directory}: no {MANIFEST}; not a {kind} ({create})") from err
    except (OSError, ValueError) as err:
        raise StoreError(f"{directory / MANIFEST}: unreadable manifest ({err}); delete the store and refit") from err
    if not isinstance(manifest, dict) or manifest.get("format") != store_format:
        raise StoreError(f"{directory / MANIFEST}: not an arc {kind} manifest")
    if manifest.get("format_version") != version:
        raise StoreError(
            f"{directory / MANIFEST}: {kind} format version {manifest.get('format_version')}, this code reads "
            f"{version}; refit into a new store"
        )
    return manifest


# -- shard files -----------------------------------------------------------------------------


def open_shard_file(path: Path, identity: Mapping[str, str]):
    """(safe_open handle, metadata) of the shard file ``path``, whose header must carry ``identity``
    (format version, store key, decoder hash, split, shard number, shard size) and every tensor."""
    if not path.exists():
        raise StoreError(f"{path}: shard missing; run anchoring to fit it")
    try:
        handle = safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as err:
        raise StoreError(f"{path}: truncated or corrupt shard ({err}); delete it to refit") from err
    metadata = dict(handle.metadata() or {})
    if metadata.get("format") != SHARD_FORMAT:
        raise StoreError(f"{path}: not an arc cloud shard; delete it to refit this shard")
    wrong = [name for name, value in identity.items() if metadata.get(name) != value]
    if wrong:
        details = ", ".join(f"{name} {metadata.get(name)!r} (expected {identity[name]!r})" for name in wrong)
        raise StoreError(f"{path}: foreign shard ({details}); it belongs to another store, decoder or place: delete it to refit")
    missing = [name for name in TENSORS if name not in handle.keys()]
    if missing:
        raise StoreError(f"{path}: shard lacks tensors {missing}; delete it to refit")
    return handle, metadata


def skipped_indices(path: Path, metadata: Mapping[str, str]) -> list[int]:
    """The skipped source indices recorded in the header ``metadata`` of the shard file ``path``."""
    try:
        skipped = json.loads(metadata.get("skipped_indices", "[]"))
    except ValueError as err:
        raise StoreError(f"{path}: corrupt skipped_indices in the header; delete it to refit") from err
    return [int(i) for i in skipped]


def write_shard_file(
    path: Path,
    clouds: CloudBatch,
    psnr: Tensor,
    skipped: Sequence[int],
    identity: Mapping[str, str],
    index_range: tuple[int, int],
    manifest: Mapping[str, Any],
) -> None:
    """Check and atomically write one shard file of the store with ``manifest``: ``clouds`` (index ascending,
    inside ``index_range`` = [start, stop), of the store's z and D), ``psnr`` [B], the ``skipped`` source indices
    of the range, ``identity`` in the header."""
    start, stop = index_range
    field, dims = manifest.get("field"), store_dims(manifest)
    latent_dim = field.get("latent_dim") if isinstance(field, dict) else None
    try:
        clouds.validate()
    except CloudError as err:
        raise StoreError(f"refusing to write {path}: {err}") from err
    b = len(clouds)
    if clouds.label.ndim != 1 or clouds.label.dtype.is_floating_point:
        raise StoreError(f"refusing to write {path}: labels must be [B] integers, got {clouds.label.dtype} {tuple(clouds.label.shape)}")
    psnr = torch.as_tensor(psnr, dtype=torch.float32).reshape(-1)
    if psnr.numel() != b:
        raise StoreError(f"refusing to write {path}: {psnr.numel()} PSNR values for {b} clouds")
    if latent_dim is not None and clouds.lat.shape[1] != latent_dim:
        raise StoreError(f"refusing to write {path}: latents have {clouds.lat.shape[1]} dims, the store {latent_dim}")
    if clouds.dims != dims:
        raise StoreError(f"refusing to write {path}: clouds of {clouds.dims}-D samples (pos {tuple(clouds.pos.shape)}), "
                         f"the store holds {dims}-D ones")
    index = clouds.index.cpu()
    if b and (int(index.min()) < start or int(index.max()) >= stop or bool((index.diff() <= 0).any())):
        raise StoreError(f"refusing to write {path}: indices must be ascending within [{start}, {stop})")
    skipped = sorted(int(i) for i in skipped)
    if any(i < start or i >= stop for i in skipped) or len(set(skipped)) != len(skipped):
        raise StoreError(f"refusing to write {path}: skipped indices must be distinct and within [{start}, {stop})")
    if set(skipped) & set(index.tolist()):
        raise StoreError(f"refusing to write {path}: indices both stored and skipped")
    tensors = shard_tensors(clouds, psnr)
    metadata = {
        "format": SHARD_FORMAT,
        **identity,
        "clouds": str(b),
        "skipped": str(len(skipped)),
        "skipped_indices": json.dumps(skipped),
        "checksum": tensor_checksum(tensors),
    }
    try:
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    except OSError as err:  # a full disk, a lost mount: the finished shards stay, the next run resumes
        raise StoreError(f"cannot write {path}: {err.strerror or err}; free space (or move data.root / ARC_DATA) "
                         "and run again: finished shards are kept and only the rest is fitted") from err


def shard_tensors(clouds: CloudBatch, psnr: Tensor) -> dict[str, Tensor]:
    """The tensors of a shard file (:data:`TENSORS`), on the CPU, contiguous, in the stored dtypes."""
    tensors = {name: getattr(clouds, name) for name in TENSORS if name != "psnr"}
    tensors["psnr"] = psnr
    return {
        name: value.detach().to("cpu", torch.float32 if name in _FLOAT else torch.int64).contiguous()
        for name, value in tensors.items()
    }


def _digest_header(digest, name: str, dtype: torch.dtype, shape: Sequence[int]) -> None:
    digest.update(f"{name}:{str(dtype).removeprefix('torch.')}:{list(shape)};".encode())


def tensor_checksum(tensors: Mapping[str, Tensor], names: Sequence[str] = TENSORS) -> str:
    """Hex sha256 of a shard's content: per tensor of ``names`` (a store's shard tensors, default a cloud
    shard's :data:`TENSORS`) in that order, its name, dtype, shape and raw bytes (of the tensors, not the
    file: safetensors orders its header differently per process)."""
    digest = hashlib.sha256()
    for name in names:
        tensor = tensors[name].detach().cpu().contiguous()
        _digest_header(digest, name, tensor.dtype, tensor.shape)
        if tensor.numel():
            digest.update(tensor.numpy().data)
    return digest.hexdigest()


def file_checksum(handle, chunk_rows: int = 1 << 18, names: Sequence[str] = TENSORS) -> str:
    """:func:`tensor_checksum` of an opened shard file, read in blocks of ``chunk_rows`` rows (bounded memory)."""
    digest = hashlib.sha256()
    for name in names:
        part = handle.get_slice(name)
        shape = part.get_shape()
        _digest_header(digest, name, part[0:0].dtype, shape)
        for first in range(0, shape[0], chunk_rows):
            block = part[first : first + chunk_rows].contiguous()
            if block.numel():
                digest.update(block.numpy().data)
    return digest.hexdigest()


def read_shard_file(path: Path, handle, metadata: Mapping[str, str], index_range: tuple[int, int]) -> tuple[CloudBatch, Tensor]:
    """(clouds, psnr [B]) from an opened shard file (:func:`open_shard_file`), checked against its
    header and its source-index range [start, stop)."""
    try:
        tensors = {name: handle.get_tensor(name) for name in TENSORS}
    except (SafetensorError, OSError) as err:
        raise StoreError(f"{path}: corrupt shard ({err}); delete it to refit") from err
    psnr = tensors.pop("psnr")
    clouds = CloudBatch(**tensors)
    try:
        clouds.validate()
    except CloudError as err:
        raise StoreError(f"{path}: corrupt shard ({err}); delete it to refit") from err
    start, stop = index_range
    if str(len(clouds)) != metadata.get("clouds") or psnr.numel() != len(clouds):
        raise StoreError(f"{path}: corrupt shard (cloud count does not match its header); delete it to refit")
    if len(clouds) and (int(clouds.index.min()) < start or int(clouds.index.max()) >= stop):
        raise StoreError(f"{path}: corrupt shard (source indices outside [{start}, {stop})); delete it to refit")
    return clouds, psnr
