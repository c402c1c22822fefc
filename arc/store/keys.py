"""Keys and default paths of cloud stores and decoder checkpoints.

A key is a :func:`arc.files.short_hash` of the settings that make a store (or a decoder) what it
is, so changing any of them gives a new path, and an old store is never overwritten or silently
reused. D, the samples' spatial dimensions, enters a key only when it is not 2, so the keys of
image stores and decoders are those of before samples had a D.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from arc.files import short_hash


def _with_dims(settings: dict, dims: int) -> dict:
    if dims not in (1, 2, 3):
        raise ValueError(f"a sample has 1, 2 or 3 spatial dimensions, got {dims!r}")
    return settings if dims == 2 else {**settings, "dims": dims}


def store_key(source_identity: Mapping | str, field: Mapping | Any, fit: Mapping | Any, decoder_hash: str, dims: int = 2) -> str:
    """Key of a cloud store: a hash of (source identity, field settings, fit settings, decoder hash, and D when not 2)."""
    return short_hash(_with_dims({"kind": "store", "source": source_identity, "field": field, "fit": fit,
                                  "decoder": decoder_hash}, dims))


def decoder_key(source_identity: Mapping | str, field: Mapping | Any, pretrain: Mapping | Any, dims: int = 2) -> str:
    """Key of a pretrained decoder checkpoint: a hash of (source identity, field settings, pretrain settings, and D
    when not 2)."""
    return short_hash(_with_dims({"kind": "decoder", "source": source_identity, "field": field, "pretrain": pretrain}, dims))


def source_slug(source_spec: str) -> str:
    """A short file-name-safe name of a source spec: ``torchvision:MNIST`` -> ``MNIST``, ``npz:a/b.npz`` -> ``b``."""
    kind, _, arg = source_spec.partition(":")
    name = kind if not arg else (arg if kind == "torchvision" else Path(arg.rstrip("/\\")).stem or kind)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "source"


def default_store_dir(root: str | os.PathLike, source_spec: str, key: str) -> Path:
    """``root/stores/<source name>-<key>`` (key from :func:`store_key`)."""
    return Path(root) / "stores" / f"{source_slug(source_spec)}-{key}"


def default_decoder_path(root: str | os.PathLike, source_spec: str, key: str) -> Path:
    """``root/decoders/<source name>-<key>.safetensors`` (key from :func:`decoder_key`)."""
    return Path(root) / "decoders" / f"{source_slug(source_spec)}-{key}.safetensors"
