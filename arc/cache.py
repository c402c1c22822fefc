"""Fitted clouds of single images on disk, keyed by content, so predicting the same images again fits nothing.

One safetensors file per image, ``<root>/<key[:2]>/<key>.safetensors``, with the tensors of one
:class:`~arc.cloud.CloudBatch` cloud (``pos`` [k, 2], ``lat`` [k, z], ``size`` [2], ``colour_mean`` [C],
``colour_std`` [C]) and its ``psnr`` [] (dB). The key (:func:`cloud_key`) is the sha256 of the image's
content hash and every setting the cloud depends on (decoder hash, field, fit without ``pixel_budget``,
preprocessing); a file that cannot be read counts as a miss and is rewritten.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from arc.cloud import CloudBatch
from arc.files import atomic_write, canonical_json

__all__ = ["CloudCache", "cloud_key", "default_cache_dir"]

_TENSORS = ("pos", "lat", "size", "colour_mean", "colour_std", "psnr")


def default_cache_dir() -> Path:
    """``$ARC_CACHE``, else ``$XDG_CACHE_HOME/arc``, else ``~/.cache/arc``."""
    if os.environ.get("ARC_CACHE"):
        return Path(os.environ["ARC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "arc"


def cloud_key(content: str, settings: Mapping[str, Any]) -> str:
    """Hex sha256 naming the cloud of an image with content hash ``content`` fitted under ``settings``."""
    return hashlib.sha256(canonical_json({"content": content, "settings": settings}).encode()).hexdigest()


class CloudCache:
    """Clouds under ``root/clouds`` (``root`` None: a cache that stores nothing)."""

    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = None if root is None else Path(root) / "clouds"

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str, index: int) -> tuple[CloudBatch, float] | None:
        """(the cached cloud as a batch of one with ``index`` and label -1, its PSNR), or None on a miss."""
        if self.root is None or not self._path(key).is_file():
            return None
        try:
            t = load_file(str(self._path(key)))
            cloud = CloudBatch(pos=t["pos"], lat=t["lat"], offset=torch.tensor([t["pos"].shape[0]]),
                               label=torch.tensor([-1]), size=t["size"][None], index=torch.tensor([index]),
                               colour_mean=t["colour_mean"][None], colour_std=t["colour_std"][None]).validate()
            return cloud, float(t["psnr"])
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError, IndexError):
            return None  # a broken file is refitted and rewritten

    def put(self, key: str, cloud: CloudBatch, psnr: Tensor | float) -> None:
        """Store the single cloud of ``cloud`` (a batch of one) and its PSNR (atomic write)."""
        if self.root is None:
            return
        t = {"pos": cloud.pos, "lat": cloud.lat, "size": cloud.size[0], "colour_mean": cloud.colour_mean[0],
             "colour_std": cloud.colour_std[0], "psnr": torch.as_tensor(float(psnr))}
        tensors = {name: t[name].detach().cpu().contiguous() for name in _TENSORS}
        try:
            atomic_write(self._path(key), lambda tmp: save_file(tensors, tmp))
        except OSError as err:  # the cache only saves time: go on without it
            warnings.warn(f"the cloud cache {self.root} is not writable ({err}); fitted clouds are not cached")
            self.root = None
