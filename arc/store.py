"""The sharded cloud store on disk: ``STORE/manifest.json`` + ``STORE/<split>/shard-<k>.safetensors``
(k zero-padded to 5 digits, e.g. ``train/shard-00003.safetensors``).

Shard k of a split holds the clouds of the source indices [k·shard_size, (k+1)·shard_size)
(the same ranges whatever the number of ranks), as safetensors tensors

    pos [N, 2] f32, lat [N, z] f32, offset [B] i64 (cumulative), label [B] i64, size [B, 2] i64,
    index [B] i64 (source index, ascending), psnr [B] f32, colour_mean / colour_std [B, C] f32,

and string metadata: format and version, store key, split, shard number, shard size, decoder
hash, number of clouds, and the skipped source indices of that range (JSON), so a resumed run
keeps its skip counts. Shards are written atomically (temporary file in the same folder, fsync,
``os.replace``) and never rewritten; a truncated, corrupt or foreign shard raises
:class:`StoreError` naming the file. The manifest holds the settings (format version, source
identity, field and fit settings, spacing s, decoder hash and path, shard size), counts and skips
per split, the train-only per-dimension latent mean/std, and the status ("incomplete" until
:meth:`CloudStore.finalize`). A store directory whose manifest has other settings is never
written to. No pickle anywhere.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import Dataset

from arc.cloud import CloudBatch, CloudError

FORMAT_VERSION = 1
STORE_FORMAT = "arc-cloud-store"
SHARD_FORMAT = "arc-cloud-shard"
MANIFEST = "manifest.json"
DEFAULT_SHARD_SIZE = 1024
REQUIRED_FIELDS = ("source", "field", "fit", "spacing", "decoder_hash")
_RESULT_FIELDS = ("status", "counts", "skipped", "latent_mean", "latent_std")
_RESERVED = ("format", "format_version", "key", *_RESULT_FIELDS)
_UNCOMPARED = ("decoder_path",)
_FLOAT = {"pos", "lat", "psnr", "colour_mean", "colour_std"}
_TENSORS = ("pos", "lat", "offset", "label", "size", "index", "psnr", "colour_mean", "colour_std")
_PER_CLOUD = ("offset", "label", "size", "index", "psnr", "colour_mean", "colour_std")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class StoreError(ValueError):
    """A store or shard is unusable: other settings, truncated, corrupt or foreign files, bad input."""


def _jsonable(value: Any) -> Any:
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


def store_key(source_identity: Mapping | str, field: Mapping | Any, fit: Mapping | Any, decoder_hash: str) -> str:
    """Key of a cloud store: a hash of (source identity, field settings, fit settings, decoder hash)."""
    return short_hash({"kind": "store", "source": source_identity, "field": field, "fit": fit, "decoder": decoder_hash})


def decoder_key(source_identity: Mapping | str, field: Mapping | Any, pretrain: Mapping | Any) -> str:
    """Key of a pretrained decoder checkpoint: a hash of (source identity, field settings, pretrain settings)."""
    return short_hash({"kind": "decoder", "source": source_identity, "field": field, "pretrain": pretrain})


def source_slug(source_spec: str) -> str:
    """A short file-name-safe name of a source spec: ``torchvision:MNIST`` -> ``MNIST``, ``npz:a/b.npz`` -> ``b``."""
    kind, _, arg = source_spec.partition(":")
    name = kind if not arg else (arg if kind == "torchvision" else Path(arg.rstrip("/\\")).stem or kind)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "source"


def default_store_dir(root: str | os.PathLike, source_spec: str, key: str) -> Path:
    """``root/stores/<source name>-<key>``."""
    return Path(root) / "stores" / f"{source_slug(source_spec)}-{key}"


def default_decoder_path(root: str | os.PathLike, source_spec: str, key: str) -> Path:
    """``root/decoders/<source name>-<key>.safetensors`` (key from :func:`decoder_key`)."""
    return Path(root) / "decoders" / f"{source_slug(source_spec)}-{key}.safetensors"


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


def _write_json(path: Path, value: Mapping, overwrite: bool = True) -> None:
    text = json.dumps(value, indent=1, sort_keys=True, default=_jsonable, allow_nan=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"), overwrite)


class CloudStore:
    """A cloud store directory: its manifest and shards. Make one with :meth:`create_or_open` or :meth:`open`."""

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
        try:
            settings = json.loads(canonical_json(fields))
        except (TypeError, ValueError) as err:
            raise StoreError(f"manifest fields must be JSON-compatible ({err})") from err
        key = store_key(settings["source"], settings["field"], settings["fit"], settings["decoder_hash"])
        settings.update(format=STORE_FORMAT, format_version=FORMAT_VERSION, key=key)
        if not (path / MANIFEST).exists():
            busy = path.exists() and any(not name.startswith(f".{MANIFEST}.") for name in os.listdir(path))
            if busy and not (path / MANIFEST).exists():  # re-check: another rank may have just created it
                raise StoreError(f"{path} exists, is not empty and has no {MANIFEST}; refusing to write a store there")
            manifest = {**settings, "status": "incomplete", "counts": {}, "skipped": {}, "latent_mean": None, "latent_std": None}
            try:
                _write_json(path / MANIFEST, manifest, overwrite=False)
                return cls(path, manifest)
            except FileExistsError:  # another process created it meanwhile: compare below
                pass
        store = cls.open(path)
        differ = sorted(
            name
            for name in set(settings) | set(store.manifest)
            if name not in _RESULT_FIELDS + _UNCOMPARED and settings.get(name) != store.manifest.get(name)
        )
        if differ:
            raise StoreError(
                f"{path} holds a store with other settings (differing: {', '.join(differ)}); it is never "
                "overwritten: use another directory (the default one is derived from the settings) or delete it"
            )
        moved = {name: settings[name] for name in _UNCOMPARED if name in settings and settings[name] != store.manifest.get(name)}
        if moved:
            store.manifest = {**store.manifest, **moved}
            _write_json(path / MANIFEST, store.manifest)
        return store

    @classmethod
    def open(cls, path: str | os.PathLike) -> "CloudStore":
        """Open an existing store (complete or not) for reading or resume."""
        path = Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError as err:
            raise StoreError(f"{path}: no {MANIFEST}; not a cloud store (run anchoring to create it)") from err
        except (OSError, ValueError) as err:
            raise StoreError(f"{path / MANIFEST}: unreadable manifest ({err}); delete the store and refit") from err
        if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
            raise StoreError(f"{path / MANIFEST}: not an arc cloud store manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{path / MANIFEST}: store format version {manifest.get('format_version')}, this code reads "
                f"{FORMAT_VERSION}; refit into a new store"
            )
        return cls(path, manifest)

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

    def _check_header(self, path: Path, metadata: Mapping[str, str] | None, split: str, k: int) -> dict:
        metadata = dict(metadata or {})
        if metadata.get("format") != SHARD_FORMAT:
            raise StoreError(f"{path}: not an arc cloud shard; delete it to refit this shard")
        expected = self._shard_identity(split, k)
        wrong = [name for name, value in expected.items() if metadata.get(name) != value]
        if wrong:
            details = ", ".join(f"{name} {metadata.get(name)!r} (expected {expected[name]!r})" for name in wrong)
            raise StoreError(f"{path}: foreign shard ({details}); it belongs to another store, decoder or place: delete it to refit")
        return metadata

    def _open(self, split: str, k: int):
        """(safe_open handle, metadata) of a shard with a valid header."""
        path = self.shard_path(split, k)
        if not path.exists():
            raise StoreError(f"{path}: shard missing; run anchoring to fit it")
        try:
            handle = safe_open(str(path), framework="pt")
        except (SafetensorError, OSError) as err:
            raise StoreError(f"{path}: truncated or corrupt shard ({err}); delete it to refit") from err
        metadata = self._check_header(path, handle.metadata(), split, k)
        missing = [name for name in _TENSORS if name not in handle.keys()]
        if missing:
            raise StoreError(f"{path}: shard lacks tensors {missing}; delete it to refit")
        return handle, metadata

    def has_shard(self, split: str, k: int) -> bool:
        """True when shard k of ``split`` exists with a complete, valid header of this store."""
        try:
            self._open(split, k)
        except StoreError:
            return False
        return True

    def shard_skipped(self, split: str, k: int) -> list[int]:
        """Source indices skipped in shard k (from its header)."""
        _, metadata = self._open(split, k)
        return _skipped_list(self.shard_path(split, k), metadata)

    def collect(self, split: str) -> tuple[int, list[int]]:
        """(number of clouds, skipped source indices) over the shards present for ``split`` (headers only)."""
        count, skipped = 0, []
        for k in self.shard_numbers(split):
            handle, metadata = self._open(split, k)
            count += handle.get_slice("offset").get_shape()[0]
            skipped.extend(_skipped_list(self.shard_path(split, k), metadata))
        return count, sorted(skipped)

    def write_shard(self, split: str, k: int, clouds: CloudBatch, psnr: Tensor, skipped: Sequence[int] = ()) -> Path:
        """Write shard k of ``split`` atomically: ``clouds`` (index ascending, inside the shard's range),
        ``psnr`` [B], and the ``skipped`` source indices of the range.

        A finished (valid) shard is never rewritten; a truncated or corrupt one is replaced.
        """
        path = self.shard_path(split, k)
        start, stop = self.shard_range(k)
        if self.has_shard(split, k):
            raise StoreError(f"refusing to write {path}: the shard is already finished (delete it to refit)")
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
        latent_dim = self.manifest["field"].get("latent_dim") if isinstance(self.manifest["field"], dict) else None
        if latent_dim is not None and clouds.lat.shape[1] != latent_dim:
            raise StoreError(f"refusing to write {path}: latents have {clouds.lat.shape[1]} dims, the store {latent_dim}")
        index = clouds.index.cpu()
        if b and (int(index.min()) < start or int(index.max()) >= stop or bool((index.diff() <= 0).any())):
            raise StoreError(f"refusing to write {path}: indices must be ascending within [{start}, {stop})")
        skipped = sorted(int(i) for i in skipped)
        if any(i < start or i >= stop for i in skipped) or len(set(skipped)) != len(skipped):
            raise StoreError(f"refusing to write {path}: skipped indices must be distinct and within [{start}, {stop})")
        if set(skipped) & set(index.tolist()):
            raise StoreError(f"refusing to write {path}: indices both stored and skipped")
        tensors = {name: getattr(clouds, name) for name in _TENSORS if name != "psnr"}
        tensors["psnr"] = psnr
        tensors = {
            name: value.detach().to("cpu", torch.float32 if name in _FLOAT else torch.int64).contiguous()
            for name, value in tensors.items()
        }
        metadata = {
            "format": SHARD_FORMAT,
            **self._shard_identity(split, k),
            "clouds": str(b),
            "skipped": str(len(skipped)),
            "skipped_indices": json.dumps(skipped),
        }
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
        return path

    def read_shard(self, split: str, k: int) -> tuple[CloudBatch, Tensor]:
        """(clouds, psnr [B]) of shard k; :class:`StoreError` for a missing, truncated, corrupt or foreign shard."""
        path = self.shard_path(split, k)
        handle, metadata = self._open(split, k)
        try:
            tensors = {name: handle.get_tensor(name) for name in _TENSORS}
        except (SafetensorError, OSError) as err:
            raise StoreError(f"{path}: corrupt shard ({err}); delete it to refit") from err
        psnr = tensors.pop("psnr")
        clouds = CloudBatch(**tensors)
        try:
            clouds.validate()
        except CloudError as err:
            raise StoreError(f"{path}: corrupt shard ({err}); delete it to refit") from err
        start, stop = self.shard_range(k)
        if str(len(clouds)) != metadata.get("clouds") or psnr.numel() != len(clouds):
            raise StoreError(f"{path}: corrupt shard (cloud count does not match its header); delete it to refit")
        if len(clouds) and (int(clouds.index.min()) < start or int(clouds.index.max()) >= stop):
            raise StoreError(f"{path}: corrupt shard (source indices outside [{start}, {stop})); delete it to refit")
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
        and record those splits in the manifest, keeping the splits recorded before; also record the
        train-only latent statistics when given. ``complete`` sets status "complete" (statistics required)."""
        result_counts, result_skips = dict(self.manifest.get("counts", {})), dict(self.manifest.get("skipped", {}))
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
        manifest = {**self.manifest, "counts": result_counts, "skipped": result_skips}
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
        _write_json(self.path / MANIFEST, manifest)
        self.manifest = manifest

    def finalize(
        self,
        counts: Mapping[str, int],
        skips: Mapping[str, Sequence[int]],
        latent_mean: Tensor,
        latent_std: Tensor,
    ) -> None:
        """:meth:`record` the splits and the train-only latent statistics, and mark the store complete."""
        self.record(counts, skips, latent_mean, latent_std, complete=True)

    def has_split(self, split: str) -> bool:
        """Whether every shard of ``split`` is fitted and recorded (the split is readable)."""
        return split in self.manifest.get("counts", {})

    @property
    def has_statistics(self) -> bool:
        return self.manifest.get("latent_mean") is not None


def _skipped_list(path: Path, metadata: Mapping[str, str]) -> list[int]:
    try:
        skipped = json.loads(metadata.get("skipped_indices", "[]"))
    except ValueError as err:
        raise StoreError(f"{path}: corrupt skipped_indices in the header; delete it to refit") from err
    return [int(i) for i in skipped]


def _as_store(store: "CloudStore | str | os.PathLike") -> CloudStore:
    return store if isinstance(store, CloudStore) else CloudStore.open(store)


def latent_statistics(store: "CloudStore | str | os.PathLike", split: str = "train", chunk_rows: int = 1 << 18) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and std (unbiased, like ``torch.std``) of all latents of ``split``: ([z], [z]) float32.

    Streams over the shards in chunks of ``chunk_rows`` latents (float64 accumulation, Chan's
    parallel merge), so memory stays bounded; meant for train only.
    """
    store = _as_store(store)
    total, mean, m2 = 0, None, None
    for k in store.shard_numbers(split):
        handle, _ = store._open(split, k)
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


def _range_indices(starts: Tensor, counts: Tensor) -> Tensor:
    """Concatenated aranges [starts[j], starts[j] + counts[j]) as one int64 index tensor."""
    total = int(counts.sum())
    shifts = torch.repeat_interleave(starts - torch.cumsum(counts, 0) + counts, counts)
    return shifts + torch.arange(total, dtype=torch.long)


class CloudDataset(Dataset):
    """Map-style dataset over the clouds of one recorded split of a store, in source-index order.

    ``dataset[i]`` is a one-cloud :class:`CloudBatch`. Per-cloud fields (labels, sizes, indices,
    colour transforms, PSNR) are loaded at construction; points are read lazily. Each process keeps
    an LRU of whole shards' points up to ``cache_bytes`` (a shard larger than that is read slice by
    slice instead), so memory stays bounded. ``__getitems__`` (used by DataLoader with a batch
    sampler) gathers a whole batch with vectorised indexing and returns it as a one-element list
    holding the collated batch, which :func:`collate_clouds` passes through.
    """

    def __init__(self, store: "CloudStore | str | os.PathLike", split: str, cache_bytes: int = 1 << 30):
        self.store = _as_store(store)
        if not self.store.has_split(split):
            raise StoreError(f"{self.store.path}: split {split!r} is not fitted yet (anchoring did not finish it); run anchoring again")
        self.split, self.cache_bytes = split, int(cache_bytes)
        per_cloud: dict[str, list[Tensor]] = {name: [] for name in _PER_CLOUD}
        shard_of, starts, self._shard_bytes = [], [], {}
        for k in self.store.shard_numbers(split):
            handle, _ = self.store._open(split, k)
            if handle.get_slice("offset").get_shape()[0] == 0:  # every image of the shard was skipped
                continue
            for name in _PER_CLOUD:
                per_cloud[name].append(handle.get_tensor(name))
            ends = per_cloud["offset"][-1]
            shard_of.append(torch.full_like(ends, k))
            starts.append(torch.cat([ends.new_zeros(1), ends[:-1]]))
            self._shard_bytes[k] = sum(4 * math.prod(handle.get_slice(name).get_shape()) for name in ("pos", "lat"))
        expected = self.store.counts.get(split)
        found = sum(int(ends.numel()) for ends in per_cloud["offset"])
        if expected is None or found != expected:
            raise StoreError(f"{self.store.path / split}: {found} clouds on disk, the manifest says {expected}")
        empty = {"size": torch.zeros(0, 2, dtype=torch.long), "psnr": torch.zeros(0), "colour_mean": torch.zeros(0, 0), "colour_std": torch.zeros(0, 0)}
        fields = {name: torch.cat(values) if values else empty.get(name, torch.zeros(0, dtype=torch.long)) for name, values in per_cloud.items()}
        self._shard = torch.cat(shard_of) if shard_of else torch.zeros(0, dtype=torch.long)
        self._start = torch.cat(starts) if starts else torch.zeros(0, dtype=torch.long)
        self._count = fields["offset"] - self._start
        self.labels: Tensor = fields["label"]
        self.sizes: Tensor = fields["size"]
        self.indices: Tensor = fields["index"]
        self.psnr: Tensor = fields["psnr"]
        self._colour_mean, self._colour_std = fields["colour_mean"], fields["colour_std"]
        self._cache: OrderedDict[int, tuple[Tensor, Tensor]] = OrderedDict()
        self._cached_bytes, self._pid = 0, os.getpid()

    def __len__(self) -> int:
        return int(self.labels.numel())

    def _points(self, k: int) -> tuple[Tensor, Tensor] | None:
        """(pos, lat) of shard k from the per-process cache, or None when the shard exceeds the budget."""
        if self._pid != os.getpid():
            self._cache, self._cached_bytes, self._pid = OrderedDict(), 0, os.getpid()
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        size = self._shard_bytes[k]
        if size > self.cache_bytes:
            return None
        while self._cache and self._cached_bytes + size > self.cache_bytes:
            self._cached_bytes -= self._shard_bytes[self._cache.popitem(last=False)[0]]
        handle, _ = self.store._open(self.split, k)
        self._cache[k] = (handle.get_tensor("pos"), handle.get_tensor("lat"))
        self._cached_bytes += size
        return self._cache[k]

    def _check_index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.split} has {len(self)} clouds, index {i} is out of range")
        return int(i) % len(self)

    def __getitem__(self, i: int) -> CloudBatch:
        i = self._check_index(i)
        k, start, end = int(self._shard[i]), int(self._start[i]), int(self._start[i] + self._count[i])
        points = self._points(k)
        if points is None:
            handle, _ = self.store._open(self.split, k)
            pos, lat = handle.get_slice("pos")[start:end], handle.get_slice("lat")[start:end]
        else:
            pos, lat = points[0][start:end].clone(), points[1][start:end].clone()  # never hand out views of the cache
        return self._batch(torch.tensor([i]), pos, lat)

    def __getitems__(self, indices: Sequence[int]) -> list[CloudBatch]:
        """The clouds ``indices`` (in that order), gathered and collated: a list holding one batch."""
        ids = torch.tensor([self._check_index(i) for i in indices], dtype=torch.long)
        shards = self._shard[ids]
        order = torch.argsort(shards, stable=True)
        pos_parts, lat_parts = [], []
        for k in torch.unique_consecutive(shards[order]).tolist():
            members = ids[order[shards[order] == k]]
            points = self._points(k)
            if points is None:
                items = [self[int(i)] for i in members]
                pos_parts += [item.pos for item in items]
                lat_parts += [item.lat for item in items]
            else:
                rows = _range_indices(self._start[members], self._count[members])
                pos_parts.append(points[0][rows])
                lat_parts.append(points[1][rows])
        grouped = self._batch(ids[order], torch.cat(pos_parts), torch.cat(lat_parts))
        return [grouped.select(torch.argsort(order))]

    def _batch(self, ids: Tensor, pos: Tensor, lat: Tensor) -> CloudBatch:
        return CloudBatch(
            pos=pos,
            lat=lat,
            offset=torch.cumsum(self._count[ids], 0),
            label=self.labels[ids],
            size=self.sizes[ids],
            index=self.indices[ids],
            colour_mean=self._colour_mean[ids],
            colour_std=self._colour_std[ids],
        )

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"], state["_cached_bytes"] = OrderedDict(), 0
        return state


def collate_clouds(items: Sequence[CloudBatch]) -> CloudBatch:
    """Join single- or multi-cloud batches into one :class:`CloudBatch` (clouds keep their order).

    A one-element list is returned as is (what :meth:`CloudDataset.__getitems__` hands over).
    """
    if not items:
        raise CloudError("cannot collate an empty list of clouds")
    if len(items) == 1:
        return items[0]
    if all(len(item) == 1 for item in items):
        counts = torch.tensor([item.pos.shape[0] for item in items], dtype=torch.long)
    else:
        counts = torch.cat([item.counts() for item in items])
    return CloudBatch(
        pos=torch.cat([item.pos for item in items]),
        lat=torch.cat([item.lat for item in items]),
        offset=torch.cumsum(counts, 0),
        label=torch.cat([item.label for item in items]),
        size=torch.cat([item.size for item in items]),
        index=torch.cat([item.index for item in items]),
        colour_mean=torch.cat([item.colour_mean for item in items]),
        colour_std=torch.cat([item.colour_std for item in items]),
    )
