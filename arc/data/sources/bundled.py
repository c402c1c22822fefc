"""The offline sources: ``digits`` (scikit-learn's bundled 1,797 8x8 digits), ``shapes`` (seeded
synthetic shapes, :mod:`arc.data.synthetic`), and the 1-D ``waves`` and 3-D ``solids``
(:mod:`arc.data.synthetic_signals`). None has a content hash: the spec and options name the samples."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from arc.data.sources.readers import SIGNAL_OPTIONS, ArrayReader, RawSource, SourceError, check_options, positive_int
from arc.data.sources.splits import SPLITS
from arc.data.synthetic import SHAPES, render_shape
from arc.data.synthetic_signals import SOLIDS, WAVES, render_solid, render_wave


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


class GeneratedReader:
    """Seeded generated samples of one split, rendered on access by ``render(seed, split, index)``."""

    def __init__(self, render, kind: str, split: str, count: int, classes: int, largest: int):
        self.render, self.kind, self.split, self.count = render, kind, split, count
        self.classes, self.largest = classes, largest

    def __len__(self) -> int:
        return self.count

    def read(self, i: int) -> Tensor:
        return self.render(self.split, i)

    def labels(self) -> Tensor:
        return torch.arange(self.count) % self.classes

    def describe(self, i: int) -> str:
        return f"{self.kind}/{self.split}[{i}]"

    def largest_pixels(self) -> int:
        return self.largest


def _counts(spec: str, options: dict, default: dict[str, int]) -> dict[str, int]:
    count = options.setdefault("count", default)
    counts = dict(count) if isinstance(count, Mapping) else {split: count for split in SPLITS}
    if set(counts) != set(SPLITS):
        raise SourceError(f"{spec}: count must be an int or a mapping with keys {SPLITS}, got {count!r}")
    return {split: positive_int(spec, "count", counts[split]) for split in SPLITS}


def open_waves(spec: str, arg: str, *, root: Path, download: bool, seed: int, options: dict) -> RawSource:
    """1-D signals drawn from ``seed`` (:func:`arc.data.synthetic_signals.render_wave`); options ``length``
    (default 128), ``channels`` (default 1), ``count`` (default 600/120/240)."""
    check_options(spec, options, {"count"} | SIGNAL_OPTIONS)
    length = positive_int(spec, "length", options.setdefault("length", 128))
    channels = positive_int(spec, "channels", options.setdefault("channels", 1))
    readers = {split: GeneratedReader(lambda split, i: render_wave(seed, split, i, length, channels), "waves", split, n, len(WAVES), length)
               for split, n in _counts(spec, options, {"train": 600, "val": 120, "test": 240}).items()}
    return RawSource(readers, list(WAVES), channels, "waves", None, dims=1)


def open_solids(spec: str, arg: str, *, root: Path, download: bool, seed: int, options: dict) -> RawSource:
    """3-D volumes [1, S, S, S] drawn from ``seed`` (:func:`arc.data.synthetic_signals.render_solid`); options
    ``size`` (default 16), ``count`` (default 600/120/240)."""
    check_options(spec, options, {"size", "count"} | SIGNAL_OPTIONS)
    size = positive_int(spec, "size", options.setdefault("size", 16))
    readers = {split: GeneratedReader(lambda split, i: render_solid(seed, split, i, size), "solids", split, n, len(SOLIDS), size**3)
               for split, n in _counts(spec, options, {"train": 600, "val": 120, "test": 240}).items()}
    return RawSource(readers, list(SOLIDS), 1, "solids", None, dims=3)
