"""What every source kind builds on: :class:`SourceError`, the :class:`Reader` protocol (one pool of
raw images), array-backed readers and subsets, the option checks, and :class:`RawSource` (what a
kind's opener returns)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from arc.data.images import array_to_image

COMMON_OPTIONS = {"channels", "center_crop", "test_fraction", "max_pixels"}
SIGNAL_OPTIONS = {"length", "shape", "ragged"}  # 1-D / 3-D sources: a fixed length or shape, and how to reach it
DEFAULT_MAX_PIXELS = 1024 * 1024  # the paper's largest fitted image (the 1024² canvas of padded FMNIST)


class SourceError(ValueError):
    """A source cannot be opened: bad spec or option, missing files, bad arrays, labels out of range."""


class Reader(Protocol):
    """One pool of raw images: ``read(i)`` -> [c, H, W] float in [0, 1] with c in 1..4 (alpha kept)."""

    def __len__(self) -> int: ...

    def read(self, i: int) -> Tensor: ...

    def labels(self) -> Tensor: ...

    def describe(self, i: int) -> str: ...

    # optional: ``largest_pixels() -> int | None``, an upper bound on H·W of its images (None: unknown)


@dataclass
class RawSource:
    """What a kind's opener finds: readers for the splits it has (train always, val and test when
    present), class names, the native channel count (1 or 3), a name and a content hash (or None)."""

    readers: dict[str, Reader]
    class_names: list[str]
    channels: int
    name: str
    content: str | None
    dims: int = 2  # spatial axes of a sample: 2 for images [C, H, W], 1 for signals [C, L], 3 for volumes [C, D, H, W]


class ArrayReader:
    """Images held as one array [N, H, W] or [N, H, W, C] (uint8, or float divided by ``divisor``),
    optionally resized to ``resize`` x ``resize`` pixels (bilinear, antialiased)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, what: str, divisor: float = 1.0, resize: int | None = None):
        self.images, self._labels, self.what = images, torch.as_tensor(np.asarray(labels), dtype=torch.long), what
        self.divisor, self.resize = divisor, resize

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def read(self, i: int) -> Tensor:
        array = self.images[i]
        if self.divisor != 1.0:
            array = (array / self.divisor).astype(np.float32)
        image = array_to_image(array, self.describe(i))
        if self.resize is not None and tuple(image.shape[1:]) != (self.resize, self.resize):
            image = F.interpolate(image[None], size=(self.resize, self.resize), mode="bilinear", antialias=True, align_corners=False)[0]
            image = image.clamp_(0.0, 1.0)
        return image

    def labels(self) -> Tensor:
        return self._labels

    def describe(self, i: int) -> str:
        return f"{self.what}[{i}]"

    def largest_pixels(self) -> int:
        return self.resize**2 if self.resize is not None else int(np.prod(self.images.shape[1:3]))


class SignalArrayReader:
    """1-D or 3-D samples held as one array [N, C, *S] or [N, *S] (one channel); uint8 / uint16 scaled to
    [0, 1], floats as they are or, with ``value_range`` (low, high), mapped by (x - low) / (high - low) and
    clipped to [0, 1]."""

    def __init__(self, samples: np.ndarray, labels: np.ndarray, what: str, dims: int, value_range: tuple[float, float] | None = None):
        self.samples, self._labels, self.what, self.dims = samples, torch.as_tensor(np.asarray(labels), dtype=torch.long), what, dims
        self.channels = int(samples.shape[1]) if samples.ndim == dims + 2 else 1
        self.value_range = value_range

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    def read(self, i: int) -> Tensor:
        array = np.asarray(self.samples[i])
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype, 1.0)
        sample = torch.from_numpy(array.astype(np.float32)) / scale
        if self.value_range is not None:
            low, high = self.value_range
            sample = ((sample - low) / max(high - low, 1e-12)).clamp_(0.0, 1.0)
        return sample if array.ndim == self.dims + 1 else sample[None]

    def labels(self) -> Tensor:
        return self._labels

    def describe(self, i: int) -> str:
        return f"{self.what}[{i}]"

    def largest_pixels(self) -> int:
        return int(np.prod(self.samples.shape[-self.dims :]))


class Subset:
    """The images ``indices`` (ascending) of another reader."""

    def __init__(self, reader: Reader, indices: Tensor):
        self.reader, self.indices = reader, indices
        self.fill = getattr(reader, "fill", 0.0)  # a signal reader's padding value
        self._labels = reader.labels()[indices]

    def __len__(self) -> int:
        return int(self.indices.numel())

    def read(self, i: int) -> Tensor:
        return self.reader.read(int(self.indices[i]))

    def labels(self) -> Tensor:
        return self._labels

    def describe(self, i: int) -> str:
        return self.reader.describe(int(self.indices[i]))

    def largest_pixels(self) -> int | None:
        return largest_pixels(self.reader)


def largest_pixels(reader: Reader) -> int | None:
    """An upper bound on H·W of ``reader``'s images (None when the reader cannot tell without decoding)."""
    bound = getattr(reader, "largest_pixels", None)
    return None if bound is None else bound()


def signals_package(name: str, what: str) -> Any:
    """The optional package ``name`` of the extra ``arc[signals]`` (soundfile, nibabel), or one
    :class:`SourceError` saying what needs it and how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise SourceError(f"{what} need the {name} package: pip install 'arc[signals]'") from err


def check_options(spec: str, options: dict, allowed: set[str]) -> None:
    """Raise :class:`SourceError` for an option neither in ``allowed`` nor one every source accepts."""
    unknown = set(options) - allowed - COMMON_OPTIONS
    if unknown:
        raise SourceError(f"{spec}: unknown options {sorted(unknown)}; accepted: {sorted(allowed | COMMON_OPTIONS)}")


def positive_int(spec: str, key: str, value: Any) -> int:
    """``value`` as an int, or :class:`SourceError` unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SourceError(f"{spec}: option {key} must be a positive integer, got {value!r}")
    return int(value)
