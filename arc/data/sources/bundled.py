"""The offline sources: ``digits`` (scikit-learn's bundled 1,797 8x8 digits) and ``shapes`` (seeded
synthetic shapes, :mod:`arc.data.synthetic`). Neither has a content hash: the spec and options
name the images."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from arc.data.sources.readers import ArrayReader, RawSource, SourceError, check_options, positive_int
from arc.data.sources.splits import SPLITS
from arc.data.synthetic import SHAPES, render_shape


class ShapesReader:
    """Synthetic shapes, rendered on access (see :mod:`arc.data.synthetic`)."""

    def __init__(self, seed: int, split: str, count: int, size: int, channels: int):
        self.seed, self.split, self.count, self.size, self.channels = seed, split, count, size, channels

    def __len__(self) -> int:
        return self.count

    def read(self, i: int) -> Tensor:
        return render_shape(self.seed, self.split, i, self.size, self.channels)

    def labels(self) -> Tensor:
        return torch.arange(self.count) % len(SHAPES)

    def describe(self, i: int) -> str:
        return f"shapes/{self.split}[{i}]"

    def largest_pixels(self) -> int:
        return self.size**2


def open_digits(spec: str, arg: str, *, root: Path, download: bool, seed: int, options: dict) -> RawSource:
    """The digits (0..16 -> [0, 1]) resized to option ``size`` (default 16; bilinear, antialiased); train only."""
    from sklearn.datasets import load_digits

    check_options(spec, options, {"size"})
    size = positive_int(spec, "size", options.setdefault("size", 16))
    digits = load_digits()
    readers = {"train": ArrayReader(digits.images.astype(np.float32), digits.target, "digits", divisor=16.0, resize=size)}
    return RawSource(readers, [str(i) for i in range(10)], 1, "digits", None)


def open_shapes(spec: str, arg: str, *, root: Path, download: bool, seed: int, options: dict) -> RawSource:
    """Shapes drawn from ``seed``; options ``size`` (default 32), ``channels`` (1 or 3, default 1),
    ``count`` (an int for every split or a mapping split -> int; default 1000/200/200)."""
    check_options(spec, options, {"size", "count"})
    size = positive_int(spec, "size", options.setdefault("size", 32))
    native = int(options.setdefault("channels", 1))
    if native not in (1, 3):
        raise SourceError(f"{spec}: channels must be 1 or 3, got {native}")
    count = options.setdefault("count", {"train": 1000, "val": 200, "test": 200})
    counts = dict(count) if isinstance(count, Mapping) else {split: count for split in SPLITS}
    if set(counts) != set(SPLITS):
        raise SourceError(f"{spec}: count must be an int or a mapping with keys {SPLITS}, got {count!r}")
    readers = {split: ShapesReader(seed, split, positive_int(spec, "count", counts[split]), size, native) for split in SPLITS}
    return RawSource(readers, list(SHAPES), native, "shapes", None)
