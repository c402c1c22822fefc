"""The shared decoder: an MLP [n(z+D), n(z+D), C] with ReLU, and its safetensors checkpoint with its record.

Input per query (the layout of the original code): the n nearest latents,
nearest first (n*z values), then the n offsets (latent - query) / s of D values each (images,
D = 2: (d_row, d_col)), or standardised per image when the decoder's ``offset_scale`` is
"per_image". The checkpoint records both; the content hash covers the offset scale when it is
not the default "spacing" and D when it is not 2, so the hashes of 2-D "spacing" decoders are
those of before either option.

A decoder pretrained on images carries the map that starts its latents for ``fit.init: patch``
(``latent_start``, :class:`arc.field.latent_init.PatchInit`): the checkpoint holds it as the tensor
``latent_start.weight`` and the header entry ``latent_start``; it is outside the content hash (it is
learned from the same pretraining, and stores fitted with it record its own hash).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from safetensors.torch import save_file
from torch import Tensor, nn

from arc.field.errors import DecoderFileError
from arc.field.latent_init import PatchInit
from arc.files import atomic_write

FORMAT = "arc-decoder/1"
LATENT_START = "latent_start"  # the header entry and tensor-name prefix of the latent-start map
OFFSET_SCALES = ("spacing", "per_image")
DIMS = (1, 2, 3)


class Decoder(nn.Module):
    """Linear(F, F) -> ReLU -> Linear(F, C) with F = n * (z + D); PyTorch default init.

    ``offset_scale`` is how its input offsets are scaled: "spacing" (divided by one dataset constant s)
    or "per_image" (``FieldConfig.offset_mode``); ``dims`` is D, the spatial dimensions of the samples
    it decodes (images: 2), so each offset has D values. ``latent_start``: the map that starts latents for
    ``fit.init: patch`` (learned by pretraining on images), or None.
    """

    def __init__(self, latent_dim: int = 32, neighbours: int = 4, channels: int = 1, offset_scale: str = "spacing",
                 dims: int = 2) -> None:
        super().__init__()
        if latent_dim < 1 or neighbours < 1 or channels < 1:
            raise ValueError(f"latent_dim, neighbours and channels must be >= 1, got {latent_dim}, {neighbours}, {channels}")
        if offset_scale not in OFFSET_SCALES:
            raise ValueError(f"offset_scale must be one of {OFFSET_SCALES}, got {offset_scale!r}")
        if dims not in DIMS:
            raise ValueError(f"dims must be one of {DIMS}, got {dims!r}")
        self.offset_scale = offset_scale
        self.dims = int(dims)
        self.latent_dim = int(latent_dim)
        self.neighbours = int(neighbours)
        self.channels = int(channels)
        width = self.in_features
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, self.channels)
        self.latent_start: PatchInit | None = None

    @property
    def in_features(self) -> int:
        return self.neighbours * (self.latent_dim + self.dims)

    def forward(self, x: Tensor) -> Tensor:
        """x [..., n(z+D)] -> [..., C] (fit colour space)."""
        return self.out(torch.relu(self.hidden(x)))


def _state_bytes(decoder: Decoder) -> bytes:
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in decoder.state_dict().items()}
    return st_save(tensors)


def decoder_hash(decoder: Decoder) -> str:
    """sha256 (hex) of the decoder's float32 state dict serialised by safetensors, then of its offset
    scale when that is not "spacing" and of its D when that is not 2 (so 2-D default hashes are those of
    before these options); stable across save/load."""
    digest = hashlib.sha256(_state_bytes(decoder))
    if decoder.offset_scale != "spacing":
        digest.update(f"offset_scale={decoder.offset_scale}".encode())
    if decoder.dims != 2:
        digest.update(f"dims={decoder.dims}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class DecoderMeta:
    """The record saved next to a decoder's weights (the safetensors header) and read back by :func:`load_decoder`.

    The decoder's own description: ``latent_dim`` z, ``neighbours`` n, ``channels`` C, ``offset_scale``
    ("spacing" | "per_image"), ``hash`` (:func:`decoder_hash`) and ``dims`` D (images: 2). Where it came from (None when unknown):
    ``source`` (spec), ``source_hash`` (short hash of the source identity), ``images`` (pretraining
    images), ``psnr_mean`` (their mean PSNR after pretraining, dB, kept to 4 decimals); ``extra``: any
    other JSON values (e.g. the settings of a benchmark case).
    """

    latent_dim: int
    neighbours: int
    channels: int
    offset_scale: str
    hash: str
    source: str | None = None
    source_hash: str | None = None
    images: int | None = None
    psnr_mean: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    dims: int = 2

    @classmethod
    def of(cls, decoder: Decoder, **provenance: Any) -> "DecoderMeta":
        """The record of ``decoder`` (its sizes, D and hash) with the given provenance fields."""
        return cls(decoder.latent_dim, decoder.neighbours, decoder.channels, decoder.offset_scale,
                   decoder_hash(decoder), dims=decoder.dims, **provenance)

    def describes(self, decoder: Decoder) -> bool:
        """Whether this record's sizes, offset scale, D and hash are those of ``decoder``."""
        mine = DecoderMeta.of(decoder)
        return astuple(mine)[:5] == astuple(self)[:5] and mine.dims == self.dims

    def to_json(self) -> dict[str, str]:
        """The safetensors header: format, sizes, offset scale, D and hash as strings, the provenance as one JSON
        string under "meta" (sorted keys; ``psnr_mean`` as "%.4f"; unknown fields left out)."""
        provenance = {"source": self.source, "source_hash": self.source_hash, "images": self.images,
                      "psnr_mean": None if self.psnr_mean is None else f"{self.psnr_mean:.4f}"}
        provenance = {**self.extra, **{k: v for k, v in provenance.items() if v is not None}}
        return {
            "format": FORMAT,
            "latent_dim": str(self.latent_dim),
            "neighbours": str(self.neighbours),
            "channels": str(self.channels),
            "offset_scale": self.offset_scale,
            "dims": str(self.dims),
            "hash": self.hash,
            "meta": json.dumps(provenance, sort_keys=True),
        }

    @classmethod
    def from_json(cls, header: Mapping[str, str]) -> "DecoderMeta":
        """Inverse of :meth:`to_json`. Headers written before ``offset_scale`` existed are "spacing", before
        ``dims`` 2 (images); the
        provenance of files written by the former Lightning pretraining (images and PSNR as strings, a
        "pretrain" string) is read too, unknown keys go to ``extra``. KeyError/ValueError on a broken header."""
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')!r} is not {FORMAT!r}")
        extra = json.loads(header["meta"])
        images, psnr_mean = extra.pop("images", None), extra.pop("psnr_mean", None)
        return cls(
            int(header["latent_dim"]), int(header["neighbours"]), int(header["channels"]),
            header.get("offset_scale", "spacing"), header["hash"], source=extra.pop("source", None),
            source_hash=extra.pop("source_hash", None), images=None if images is None else int(images),
            psnr_mean=None if psnr_mean is None else float(psnr_mean), extra=extra, dims=int(header.get("dims", "2")),
        )


def save_decoder(path: str | os.PathLike, decoder: Decoder, meta: DecoderMeta | None = None) -> str:
    """Write ``decoder`` atomically to ``path`` (safetensors) with its record ``meta``; return its hash.

    ``meta`` defaults to ``DecoderMeta.of(decoder)`` (no provenance); a record of another decoder is refused.
    """
    meta = DecoderMeta.of(decoder) if meta is None else meta
    if not meta.describes(decoder):
        raise ValueError(f"the record (hash {meta.hash[:12]}) does not describe the decoder being saved")
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in decoder.state_dict().items()}
    header = meta.to_json()
    if decoder.latent_start is not None:
        tensors[f"{LATENT_START}.weight"] = decoder.latent_start.weight.detach().to("cpu", torch.float32).contiguous()
        header[LATENT_START] = latent_start_header(decoder.latent_start)
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=header))
    return meta.hash


def latent_start_header(start: PatchInit) -> str:
    """The JSON header entry of a latent-start map (what its weight alone does not say)."""
    return json.dumps({"radius": start.radius, "colour": start.colour})


def read_latent_start(weight: Tensor | None, header: str | None) -> PatchInit | None:
    """The latent-start map from its saved ``weight`` and JSON ``header`` entry (None when neither is there);
    ValueError when only one of them is, or the entry is broken."""
    if weight is None and header is None:
        return None
    if weight is None or header is None:
        raise ValueError(f"the latent-start map is incomplete (weight {'missing' if weight is None else 'present'}, "
                         f"header entry {'missing' if header is None else 'present'})")
    entry = json.loads(header)
    return PatchInit(weight.float(), int(entry["radius"]), str(entry["colour"]))


def load_decoder(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[Decoder, DecoderMeta]:
    """Read a decoder written by :func:`save_decoder` -> (Decoder on ``device``, its record).

    Raises :class:`DecoderFileError` for a missing, corrupt or foreign file or a hash mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise DecoderFileError(f"decoder checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise DecoderFileError(f"{path} is not a readable safetensors decoder checkpoint: {err}") from err
    if header.get("format") != FORMAT:
        raise DecoderFileError(f"{path} is not an arc decoder checkpoint (format {header.get('format')!r})")
    try:
        meta = DecoderMeta.from_json(header)
        decoder = Decoder(meta.latent_dim, meta.neighbours, meta.channels, meta.offset_scale, meta.dims)
        start = tensors.pop(f"{LATENT_START}.weight", None)
        decoder.load_state_dict(tensors, strict=True)
        decoder.latent_start = read_latent_start(start, header.get(LATENT_START))
    except (KeyError, ValueError, RuntimeError) as err:
        raise DecoderFileError(f"{path} has inconsistent decoder metadata or tensors: {err}") from err
    digest = decoder_hash(decoder)
    if digest != meta.hash:
        raise DecoderFileError(f"{path} is corrupt: content hash {digest[:12]} does not match the recorded {meta.hash[:12]}")
    return decoder.to(device), meta
