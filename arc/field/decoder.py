"""The shared decoder: an MLP [n(z+2), n(z+2), C] with ReLU, and its safetensors checkpoint.

Input per query (the layout of the original code): the n nearest latents,
nearest first (n*z values), then the n offsets (d_row, d_col) = (latent - query) / s, or
standardised per image when the decoder's ``offset_scale`` is "per_image" (the checkpoint
records it; the content hash covers it when it is not the default "spacing").
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from safetensors.torch import save_file
from torch import Tensor, nn

from arc.field.errors import DecoderFileError

FORMAT = "arc-decoder/1"
OFFSET_SCALES = ("spacing", "per_image")


class Decoder(nn.Module):
    """Linear(F, F) -> ReLU -> Linear(F, C) with F = n * (z + 2); PyTorch default init.

    ``offset_scale`` is how its input offsets are scaled: "spacing" (divided by one dataset constant s)
    or "per_image" (``FieldConfig.offset_mode``).
    """

    def __init__(self, latent_dim: int = 32, neighbours: int = 4, channels: int = 1, offset_scale: str = "spacing") -> None:
        super().__init__()
        if latent_dim < 1 or neighbours < 1 or channels < 1:
            raise ValueError(f"latent_dim, neighbours and channels must be >= 1, got {latent_dim}, {neighbours}, {channels}")
        if offset_scale not in OFFSET_SCALES:
            raise ValueError(f"offset_scale must be one of {OFFSET_SCALES}, got {offset_scale!r}")
        self.offset_scale = offset_scale
        self.latent_dim = int(latent_dim)
        self.neighbours = int(neighbours)
        self.channels = int(channels)
        width = self.in_features
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, self.channels)

    @property
    def in_features(self) -> int:
        return self.neighbours * (self.latent_dim + 2)

    def forward(self, x: Tensor) -> Tensor:
        """x [..., n(z+2)] -> [..., C] (fit colour space)."""
        return self.out(torch.relu(self.hidden(x)))


def _state_bytes(decoder: Decoder) -> bytes:
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in decoder.state_dict().items()}
    return st_save(tensors)


def decoder_hash(decoder: Decoder) -> str:
    """sha256 (hex) of the decoder's float32 state dict serialised by safetensors, then of its offset
    scale when that is not "spacing" (so default hashes are those of before the option); stable across save/load."""
    digest = hashlib.sha256(_state_bytes(decoder))
    if decoder.offset_scale != "spacing":
        digest.update(f"offset_scale={decoder.offset_scale}".encode())
    return digest.hexdigest()


def save_decoder(path: str | os.PathLike, decoder: Decoder, meta: dict[str, Any] | None = None) -> str:
    """Write ``decoder`` atomically to ``path`` (safetensors) with its sizes, hash and ``meta``; return the hash.

    ``meta`` must be JSON-serialisable (e.g. the source identity and the settings).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = decoder_hash(decoder)
    metadata = {
        "format": FORMAT,
        "latent_dim": str(decoder.latent_dim),
        "neighbours": str(decoder.neighbours),
        "channels": str(decoder.channels),
        "offset_scale": decoder.offset_scale,
        "hash": digest,
        "meta": json.dumps(meta or {}, sort_keys=True),
    }
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in decoder.state_dict().items()}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return digest


def load_decoder(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[Decoder, dict[str, Any]]:
    """Read a decoder written by :func:`save_decoder` -> (Decoder, meta).

    meta holds the caller's meta plus latent_dim, neighbours, channels, offset_scale (checkpoints
    written before the option hold none and are "spacing") and hash. Raises
    :class:`DecoderFileError` for a missing, corrupt or foreign file or a hash mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise DecoderFileError(f"decoder checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise DecoderFileError(f"{path} is not a readable safetensors decoder checkpoint: {err}") from err
    if metadata.get("format") != FORMAT:
        raise DecoderFileError(f"{path} is not an arc decoder checkpoint (format {metadata.get('format')!r})")
    try:
        decoder = Decoder(int(metadata["latent_dim"]), int(metadata["neighbours"]), int(metadata["channels"]),
                          metadata.get("offset_scale", "spacing"))
        decoder.load_state_dict(tensors, strict=True)
        meta = json.loads(metadata["meta"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise DecoderFileError(f"{path} has inconsistent decoder metadata or tensors: {err}") from err
    digest = decoder_hash(decoder)
    if digest != metadata.get("hash"):
        raise DecoderFileError(f"{path} is corrupt: content hash {digest[:12]} does not match the recorded {metadata.get('hash', '')[:12]}")
    meta.update(latent_dim=decoder.latent_dim, neighbours=decoder.neighbours, channels=decoder.channels,
                offset_scale=decoder.offset_scale, hash=digest)
    return decoder.to(device), meta
