"""Image sources: every dataset as train / val / test sequences of (image [C, H, W] in [0, 1], label).

``open_source(spec, root, download, val_fraction=0.1, seed=0, canvas=None, **options)`` understands

==========================  =====================================================================
spec                        images
==========================  =====================================================================
``torchvision:MNIST``       torchvision MNIST (train/test), grey 28x28
``torchvision:FashionMNIST`` torchvision FashionMNIST (train/test), grey 28x28
``torchvision:CIFAR10``     torchvision CIFAR10 (train/test), colour 32x32
``torchvision:Imagenette``  torchvision Imagenette (train/val); options ``size`` = "full" | "320px" |
                            "160px" (default "320px") and ``center_crop`` (e.g. 320, the paper's setting)
``imagefolder:PATH``        PATH/train/<class>/*, optional PATH/val and PATH/test (classes from train)
``npz:PATH``                arrays x_train, y_train, x_test, y_test, optional x_val, y_val and
                            class_names; x uint8/uint16/float in [0, 1], [N, H, W] or [N, H, W, C]
``digits``                  scikit-learn's bundled 1,797 8x8 digits (0..16 -> [0, 1]) resized to
                            option ``size`` (default 16; bilinear, antialiased)
``shapes``                  seeded synthetic shapes (:mod:`arc.data.synthetic`); options ``size``
                            (default 32), ``channels`` (1 or 3, default 1), ``count`` (an int for
                            every split or a mapping split -> int; default 1000/200/200)
==========================  =====================================================================

1-D and 3-D sources (samples [C, L] and [C, D, H, W]; rules in :mod:`arc.data.signals`, splits
:class:`SignalSplit`):

==========================  =====================================================================
``npz:PATH`` + ``dims: 1``  x_* [N, C, L] or [N, L]; ``dims: 3``: [N, C, D, H, W] or [N, D, H, W]
``audio:PATH``              PATH/train/<class>/*.wav|flac|ogg (:mod:`.audio`); option ``sample_rate``
``nifti:PATH``              PATH/train/<class>/*.nii[.gz] (:mod:`.nifti`); options ``orientation``,
                            ``spacing``, ``intensity``
``waves``                   seeded 1-D signals, 6 classes (:mod:`arc.data.synthetic_signals`);
                            options ``length`` (default 128), ``channels`` (default 1), ``count``
``solids``                  seeded 3-D volumes, 6 classes; options ``size`` (default 16), ``count``
==========================  =====================================================================

Their options: ``channels`` (any count; several are mixed to 1 by their mean, 1 is repeated),
``length`` (1-D) or ``shape`` (a list of D ints) to give every sample one shape, reached as
``ragged`` says ("pad" by default when a length is given: zeros at the end, longer ones cropped;
"crop", "resample", or "refuse": a counted skip), and ``test_fraction``. Without ``length`` /
``shape`` samples keep their own lengths (the field fits each at its size). ``center_crop``,
``max_pixels`` and a canvas are image settings and are refused.

Options every source accepts: ``channels`` (force 1 or 3; otherwise grey sources are 1 and colour
sources 3), ``center_crop`` (an int: crop the centre c x c before the canvas), ``test_fraction``, and
``max_pixels`` (default 1024², the paper's largest fitted image; None for no limit): a larger image
(after the crop, before the canvas) is downscaled to at most that many pixels (bilinear, antialiased,
aspect kept; counted per split). The limit is part of the identity only when a source may hold
larger images (array shapes, file headers), so sources of small images keep their store keys.
Each kind lives in its own module (:mod:`.npz`, :mod:`.imagefolder`, :mod:`.torchvision`,
:mod:`.bundled`: digits and shapes); the split rules in :mod:`.splits`.

**Split rules.** A source's own val split is used when it has one. A source with a val but no test
split (Imagenette, or an imagefolder with train/ and val/ only) uses its official val as **test**,
and a seeded ``val_fraction`` of train becomes val. A source with no val split gets a seeded
``val_fraction`` of train as val (the rest stays train). A source with neither val nor test (digits,
an imagefolder with train/ only) gets a seeded ``test_fraction`` (0.2) as test and ``val_fraction``
as val, both fractions of the whole pool. Carving draws one permutation from
``item_seed(seed, "splits", pool size)``; each carved split keeps the pool's order, and the index of
an image is its position in its split (deterministic).

**Bad input** (see :mod:`arc.data.images`): an unusable image raises :class:`ImageReadError` on access
(the caller counts it as a skip); an image with the other channel count is converted and counted;
problems of the source as a whole (bad spec, missing files, bad arrays, labels out of range) raise
:class:`SourceError` when the source is opened.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from arc.data.canvas import CanvasConfig
from arc.data.images import ImageReadError
from arc.data.signals import RAGGED_MODES
from arc.data.sources.audio import open_audio
from arc.data.sources.bundled import open_digits, open_shapes, open_solids, open_waves
from arc.data.sources.image_split import ImageSplit
from arc.data.sources.nifti import open_nifti
from arc.data.sources.signal_split import SignalSplit
from arc.data.sources.imagefolder import IMAGE_EXTENSIONS, open_imagefolder
from arc.data.sources.npz import open_npz
from arc.data.sources.readers import DEFAULT_MAX_PIXELS, RawSource, SourceError, largest_pixels, positive_int
from arc.data.sources.splits import SPLITS, assign_splits
from arc.data.sources.torchvision import TORCHVISION, open_torchvision
from arc.files import canonical_json, short_hash

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "SPLITS",
    "TORCHVISION",
    "ImageSource",
    "ImageSplit",
    "SourceError",
    "assign_splits",
    "open_source",
]

# kind -> opener(spec, arg, *, root, download, seed, options) -> RawSource; one line per kind.
_OPENERS: dict[str, Callable[..., RawSource]] = {
    "torchvision": open_torchvision,
    "imagefolder": open_imagefolder,
    "npz": open_npz,
    "digits": open_digits,
    "shapes": open_shapes,
    "audio": open_audio,
    "nifti": open_nifti,
    "waves": open_waves,
    "solids": open_solids,
}
_PATH_KINDS = ("imagefolder", "npz", "audio", "nifti")  # their identity names the kind, not the path
_BUNDLED = ("digits", "shapes", "waves", "solids")


class ImageSource:
    """A dataset with ``splits`` ("train", "val", "test"), one channel count and its identity.

    identity: a JSON-able dict (source, name, options, split settings, canvas, content hash);
    identity_hash: its short sha256, the part of store and decoder keys that names the images;
    largest_pixels: an upper bound on H·W of the images it serves (None when unknown);
    dims: spatial axes of a sample (2: images [C, H, W]; 1: signals [C, L]; 3: volumes [C, D, H, W]).
    """

    largest_pixels: int | None = None
    dims: int = 2

    def __init__(self, spec: str, identity: dict, channels: int, class_names: Sequence[str], splits: dict[str, ImageSplit]):
        self.spec, self.identity, self.channels = spec, identity, channels
        self.class_names = tuple(str(name) for name in class_names)
        self._splits = splits

    @property
    def identity_hash(self) -> str:
        return short_hash(self.identity)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._splits)

    def split(self, name: str) -> ImageSplit | SignalSplit:
        if name not in self._splits:
            raise KeyError(f"unknown split {name!r}; {self.spec} has {self.splits}")
        return self._splits[name]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(split)}" for name, split in self._splits.items())
        return f"ImageSource({self.spec!r}, channels={self.channels}, classes={self.num_classes}, {sizes})"


def _split_spec(spec: str) -> tuple[str, str]:
    """(kind, argument) of a spec such as ``npz:PATH``, checked."""
    kind, _, arg = spec.partition(":")
    if kind == "torchvision":
        if arg not in TORCHVISION:
            raise SourceError(f"unknown torchvision dataset {arg!r}; expected one of {TORCHVISION}")
    elif kind in _PATH_KINDS:
        if not arg:
            raise SourceError(f"{kind} source needs a path: '{kind}:PATH'")
    elif kind in _BUNDLED:
        if arg:
            raise SourceError(f"source {kind!r} takes no argument, got {spec!r}")
    else:
        raise SourceError(
            f"unknown source {spec!r}; expected torchvision:MNIST|FashionMNIST|CIFAR10|Imagenette, "
            "imagefolder:PATH, npz:PATH, audio:PATH, nifti:PATH, digits, shapes, waves or solids"
        )
    return kind, arg


def open_source(
    spec: str,
    root: str | os.PathLike = "data",
    download: bool = False,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    canvas: CanvasConfig | Mapping | None = None,
    **options: Any,
) -> ImageSource:
    """Open the image source named by ``spec`` (see the module docstring for specs, options and split rules).

    root: where torchvision datasets live (and download to); relative imagefolder/npz paths are
    taken as given (relative to the working directory).
    """
    kind, arg = _split_spec(spec)
    if not 0.0 <= val_fraction < 1.0:
        raise SourceError(f"val_fraction must be in [0, 1), got {val_fraction}")
    test_fraction = float(options.pop("test_fraction", 0.2))
    if not 0.0 <= test_fraction < 1.0 or test_fraction + val_fraction >= 1.0:
        raise SourceError(f"test_fraction must be in [0, 1) with val_fraction + test_fraction < 1, got {test_fraction}")
    canvas = CanvasConfig.parse(canvas)
    max_pixels_given = options.get("max_pixels")
    max_pixels = options.pop("max_pixels", DEFAULT_MAX_PIXELS)
    if max_pixels is not None:
        max_pixels = positive_int(spec, "max_pixels", max_pixels)
    raw = _OPENERS[kind](spec, arg, root=Path(root), download=download, seed=seed, options=options)
    if raw.dims != 2:
        return _open_signals(spec, kind, raw, options, canvas, max_pixels_given, val_fraction, test_fraction, seed)
    channels = int(options.get("channels", raw.channels))
    if channels not in (1, 3):
        raise SourceError(f"{spec}: channels must be 1 or 3, got {channels}")
    center_crop = options.get("center_crop")
    if center_crop is not None:
        center_crop = positive_int(spec, "center_crop", center_crop)

    readers = assign_splits(raw.readers["train"], raw.readers.get("val"), raw.readers.get("test"), val_fraction, test_fraction, seed)
    largest = [center_crop**2 if center_crop is not None else largest_pixels(reader) for reader in readers.values()]
    if max_pixels is not None and all(pixels is not None and pixels <= max_pixels for pixels in largest):
        max_pixels = None  # changes no image: not part of the identity
    splits = {split: ImageSplit(split, reader, channels, center_crop, canvas, max_pixels) for split, reader in readers.items()}
    identity = {
        "source": kind if kind in _PATH_KINDS else spec,
        "name": raw.name,
        "options": {key: options[key] for key in sorted(options)} | ({} if max_pixels is None else {"max_pixels": max_pixels}),
        "splits": {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed},
        "canvas": asdict(canvas) if canvas is not None else None,
        "content": raw.content,
    }
    identity = _json_roundtrip(identity)
    source = ImageSource(spec, identity, channels, raw.class_names, splits)
    bounds = [pixels if max_pixels is None else min(pixels or max_pixels, max_pixels) for pixels in largest]
    source.largest_pixels = canvas.size**2 if canvas is not None else (None if None in bounds else max(bounds))
    return source


def _signal_shape(spec: str, dims: int, options: dict) -> tuple[int, ...] | None:
    """The fixed sample shape named by option ``length`` (1-D) or ``shape`` (a list of ``dims`` ints), or None."""
    if "length" in options and "shape" in options:
        raise SourceError(f"{spec}: give option length or shape, not both")
    if "length" in options:
        if dims != 1:
            raise SourceError(f"{spec}: option length is for 1-D sources; give a {dims}-D source option shape")
        return (positive_int(spec, "length", options["length"]),)
    shape = options.get("shape")
    if shape is None:
        return None
    if not isinstance(shape, (list, tuple)) or len(shape) != dims:
        raise SourceError(f"{spec}: option shape must be a list of {dims} positive integers, got {shape!r}")
    return tuple(positive_int(spec, "shape", n) for n in shape)


def _open_signals(spec: str, kind: str, raw: RawSource, options: dict, canvas: CanvasConfig | None, max_pixels: int | None,
                  val_fraction: float, test_fraction: float, seed: int) -> ImageSource:
    """The 1-D / 3-D source of ``raw``: :class:`SignalSplit` splits and an identity that names ``dims``."""
    for name, value in (("canvas", canvas), ("center_crop", options.get("center_crop")), ("max_pixels", max_pixels)):
        if value is not None:
            raise SourceError(f"{spec}: {name} is an image setting; a {raw.dims}-D source takes length/shape and ragged")
    channels = positive_int(spec, "channels", options.get("channels", raw.channels))
    shape = _signal_shape(spec, raw.dims, options)
    ragged = options.get("ragged", "pad")
    if ragged not in RAGGED_MODES:
        raise SourceError(f"{spec}: option ragged must be one of {RAGGED_MODES}, got {ragged!r}")
    if "ragged" in options and shape is None:
        raise SourceError(f"{spec}: option ragged needs option {'length' if raw.dims == 1 else 'shape'} (the shape to reach)")
    readers = assign_splits(raw.readers["train"], raw.readers.get("val"), raw.readers.get("test"), val_fraction, test_fraction, seed)
    splits = {split: SignalSplit(split, reader, channels, raw.dims, shape, ragged) for split, reader in readers.items()}
    identity = _json_roundtrip({
        "source": kind if kind in _PATH_KINDS else spec,
        "name": raw.name,
        "dims": raw.dims,
        "options": {key: options[key] for key in sorted(options)},
        "splits": {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed},
        "content": raw.content,
    })
    source = ImageSource(spec, identity, channels, raw.class_names, splits)
    source.dims = raw.dims
    largest = [largest_pixels(reader) for reader in readers.values()]
    source.largest_pixels = math.prod(shape) if shape is not None else (None if None in largest else max(largest))
    return source


def _json_roundtrip(value: Any) -> Any:
    try:
        return json.loads(canonical_json(value))
    except TypeError as err:
        raise SourceError(f"source options must be JSON-compatible values ({err})") from err
