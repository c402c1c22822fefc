"""Keys and default paths of cloud stores and decoder checkpoints.

A key is a :func:`arc.files.short_hash` of the settings that make a store (or a decoder) what it
is, so changing any of them gives a new path, and an old store is never overwritten or silently
reused.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from arc.files import short_hash


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
    """``root/stores/<source name>-<key>`` (key from :func:`store_key`)."""
    return Path(root) / "stores" / f"{source_slug(source_spec)}-{key}"


def default_decoder_path(root: str | os.PathLike, source_spec: str, key: str) -> Path:
    """``root/decoders/<source name>-<key>.safetensors`` (key from :func:`decoder_key`)."""
    return Path(root) / "decoders" / f"{source_slug(source_spec)}-{key}.safetensors"
