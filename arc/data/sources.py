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

Options every source accepts: ``channels`` (force 1 or 3; otherwise grey sources are 1 and colour
sources 3), ``center_crop`` (an int: crop the centre c x c before the canvas), and ``test_fraction``.

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

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from arc.data.canvas import CanvasConfig, apply_canvas
from arc.data.images import ImageReadError, array_to_image, check_image, conform_channels, read_image_file
from arc.data.synthetic import SHAPES, render_shape
from arc.seeding import item_seed
from arc.store import canonical_json, short_hash

SPLITS = ("train", "val", "test")
TORCHVISION = ("MNIST", "FashionMNIST", "CIFAR10", "Imagenette")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_GREY_MODES = ("1", "L", "LA", "La", "I", "F")
_IMAGENETTE_DIRS = {"full": "imagenette2", "320px": "imagenette2-320", "160px": "imagenette2-160"}
_COMMON_OPTIONS = {"channels", "center_crop", "test_fraction"}


class SourceError(ValueError):
    """A source cannot be opened: bad spec or option, missing files, bad arrays, labels out of range."""


class _Reader(Protocol):
    """One pool of raw images: ``read(i)`` -> [c, H, W] float in [0, 1] with c in 1..4 (alpha kept)."""

    def __len__(self) -> int: ...

    def read(self, i: int) -> Tensor: ...

    def labels(self) -> Tensor: ...

    def describe(self, i: int) -> str: ...


class _ArrayReader:
    """Images held as one array [N, H, W] or [N, H, W, C] (uint8, or float divided by ``divisor``)."""

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


class _FileReader:
    """Image files decoded on access."""

    def __init__(self, files: Sequence[tuple[str, int]]):
        self.paths = [path for path, _ in files]
        self._labels = torch.tensor([label for _, label in files], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> Tensor:
        return read_image_file(self.paths[i])

    def labels(self) -> Tensor:
        return self._labels

    def describe(self, i: int) -> str:
        return self.paths[i]


class _ShapesReader:
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


class _Subset:
    """The images ``indices`` (ascending) of another reader."""

    def __init__(self, reader: _Reader, indices: Tensor):
        self.reader, self.indices = reader, indices
        self._labels = reader.labels()[indices]

    def __len__(self) -> int:
        return int(self.indices.numel())

    def read(self, i: int) -> Tensor:
        return self.reader.read(int(self.indices[i]))

    def labels(self) -> Tensor:
        return self._labels

    def describe(self, i: int) -> str:
        return self.reader.describe(int(self.indices[i]))


class ImageSplit(Sequence):
    """One split: ``split[i]`` -> (image float32 [C, H, W] in [0, 1], label int), decoded lazily.

    The image is read, alpha-composited on black, converted to the dataset's ``channels``
    (counted in ``converted``), checked (:class:`ImageReadError` on failure, counted in
    ``skipped``), centre-cropped (``center_crop``) and placed on the canvas (``canvas``).
    The counters are per process (DataLoader workers keep their own).
    """

    def __init__(self, name: str, reader: _Reader, channels: int, center_crop: int | None = None, canvas: CanvasConfig | None = None):
        self.name, self.reader, self.channels = name, reader, channels
        self.center_crop, self.canvas = center_crop, canvas
        self._skipped: set[int] = set()
        self._converted: set[int] = set()

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name} split has {n} images, index {index} is out of range")
        index = int(index) % n
        try:
            image, converted = conform_channels(self.reader.read(index), self.channels)
            image = check_image(image, self._what(index))
            if self.center_crop is not None:
                image = self._crop(image, index)
        except ImageReadError:
            self._skipped.add(index)
            raise
        if converted:
            self._converted.add(index)
        if self.canvas is not None:
            image = apply_canvas(image, self.canvas, self.name, index)
        return image, int(self.reader.labels()[index])

    def describe(self, index: int) -> str:
        """Where image ``index`` comes from: its file path, or its array and position."""
        return self.reader.describe(int(index))

    def _what(self, index: int) -> str:
        return f"{self.name}[{index}] ({self.describe(index)})"

    def _crop(self, image: Tensor, index: int) -> Tensor:
        crop, (height, width) = self.center_crop, image.shape[1:]
        if height < crop or width < crop:
            raise ImageReadError(f"{self._what(index)}: image {height}x{width} is smaller than center_crop {crop}")
        top, left = (height - crop) // 2, (width - crop) // 2
        return image[:, top : top + crop, left : left + crop]

    @property
    def labels(self) -> Tensor:
        """[len] int64 labels (no image is decoded)."""
        return self.reader.labels()

    @property
    def skipped(self) -> int:
        """Number of distinct images that raised :class:`ImageReadError` in this process."""
        return len(self._skipped)

    @property
    def skipped_indices(self) -> list[int]:
        return sorted(self._skipped)

    @property
    def converted(self) -> int:
        """Number of distinct images converted to the dataset's channel count in this process."""
        return len(self._converted)


class ImageSource:
    """A dataset with ``splits`` ("train", "val", "test"), one channel count and its identity.

    identity: a JSON-able dict (source, name, options, split settings, canvas, content hash);
    identity_hash: its short sha256, the part of store and decoder keys that names the images.
    """

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

    def split(self, name: str) -> ImageSplit:
        if name not in self._splits:
            raise KeyError(f"unknown split {name!r}; {self.spec} has {self.splits}")
        return self._splits[name]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(split)}" for name, split in self._splits.items())
        return f"ImageSource({self.spec!r}, channels={self.channels}, classes={self.num_classes}, {sizes})"


def _carve(pool: _Reader, fractions: dict[str, float], seed: int) -> dict[str, _Reader]:
    """Split a pool: each named split gets round(fraction * N) images from one seeded permutation, "train" the rest."""
    n = len(pool)
    generator = torch.Generator().manual_seed(item_seed(seed, "splits", n))
    order = torch.randperm(n, generator=generator)
    parts, start = {}, 0
    for name, fraction in fractions.items():
        take = int(round(fraction * n))
        if fraction > 0 and take == 0 and n > len(fractions):
            take = 1
        parts[name] = order[start : start + take]
        start += take
    if start >= n:
        raise SourceError(f"fractions {fractions} leave no training images out of {n}")
    parts["train"] = order[start:]
    return {name: _Subset(pool, indices.sort().values) for name, indices in parts.items()}


def assign_splits(
    train: _Reader, val: _Reader | None, test: _Reader | None, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, _Reader]:
    """Apply the split rules of this module's docstring; returns readers for train, val, test."""
    if test is None and val is not None:
        test, val = val, None
    if val is not None:
        return {"train": train, "val": val, "test": test}
    if test is None:
        carved = _carve(train, {"test": test_fraction, "val": val_fraction}, seed)
        return {"train": carved["train"], "val": carved["val"], "test": carved["test"]}
    carved = _carve(train, {"val": val_fraction}, seed)
    return {"train": carved["train"], "val": carved["val"], "test": test}


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_list_hash(root: str | Path, files: Sequence[str | Path] | None = None) -> str:
    """Hex sha256 of the sorted (relative path, size) of ``files`` (default: every file under ``root``)."""
    root = Path(root)
    if files is None:
        files = [Path(dirpath) / name for dirpath, _, names in os.walk(root) for name in names]
    entries = sorted((Path(path).relative_to(root).as_posix(), os.path.getsize(path)) for path in files)
    return hashlib.sha256(canonical_json(entries).encode()).hexdigest()


def _image_channels(mode: str) -> int:
    return 1 if mode in _GREY_MODES or mode.startswith("I;16") else 3


def _majority_channels(paths: Sequence[str], samples: int = 64) -> int:
    """Channel count (1 or 3) of most of up to ``samples`` evenly spaced files (headers only; ties -> 3)."""
    picks = sorted({int(i) for i in np.linspace(0, len(paths) - 1, num=min(samples, len(paths)))})
    votes = []
    for i in picks:
        try:
            with Image.open(paths[i]) as image:
                votes.append(_image_channels(image.mode))
        except (OSError, ValueError, SyntaxError):
            continue
    return 1 if votes and 2 * votes.count(1) > len(votes) else 3


def _scan_folder(directory: Path, class_to_idx: dict[str, int], extensions: tuple[str, ...]) -> list[tuple[str, int]]:
    """Sorted (path, label) of the image files under directory/<class>/ (recursively)."""
    files = []
    for name in sorted(os.listdir(directory)):
        if not (directory / name).is_dir():
            continue
        if name not in class_to_idx:
            raise SourceError(f"{directory / name}: class folder not present in the train split {sorted(class_to_idx)}")
        for dirpath, dirnames, filenames in os.walk(directory / name, followlinks=True):
            dirnames.sort()
            for filename in sorted(filenames):
                if filename.lower().endswith(extensions):
                    files.append((os.path.join(dirpath, filename), class_to_idx[name]))
    return files


def _open_folders(root: Path, class_to_idx: dict[str, int] | None, extensions: tuple[str, ...]) -> tuple[dict, dict, list[str]]:
    """Readers for root/{train,val,test} (present ones), class_to_idx, and all files for hashing."""
    if not (root / "train").is_dir():
        raise SourceError(f"{root}: expected a folder 'train' with one sub-folder per class (and optional 'val', 'test')")
    if class_to_idx is None:
        classes = sorted(entry.name for entry in os.scandir(root / "train") if entry.is_dir())
        if not classes:
            raise SourceError(f"{root / 'train'}: no class sub-folders")
        class_to_idx = {name: i for i, name in enumerate(classes)}
    readers, every = {}, []
    for split in SPLITS:
        if (root / split).is_dir():
            files = _scan_folder(root / split, class_to_idx, extensions)
            if not files:
                raise SourceError(f"{root / split}: no image files with extensions {extensions}")
            readers[split] = _FileReader(files)
            every.extend(path for path, _ in files)
    return readers, class_to_idx, every


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError as err:
        raise SourceError(f"{path}: file not found") from err
    except (OSError, ValueError, EOFError) as err:
        raise SourceError(f"{path}: not a readable .npz of plain arrays ({err})") from err


def _check_npz(path: Path, arrays: dict[str, np.ndarray]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Validate the arrays of an npz source; returns {split: (x, y)} and the class names."""
    for key in ("x_train", "y_train", "x_test", "y_test"):
        if key not in arrays:
            raise SourceError(f"{path}: missing array {key!r} (has {sorted(arrays)})")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise SourceError(f"{path}: x_val and y_val must be given together")
    pairs = {split: (arrays[f"x_{split}"], arrays[f"y_{split}"]) for split in SPLITS if f"x_{split}" in arrays}
    for split, (x, y) in pairs.items():
        if not (x.dtype in (np.uint8, np.uint16) or np.issubdtype(x.dtype, np.floating)):
            raise SourceError(f"{path}: x_{split} has dtype {x.dtype}; use uint8 (0..255), uint16 or float in [0, 1]")
        if not (x.ndim == 3 or (x.ndim == 4 and x.shape[3] in (1, 2, 3, 4))):
            raise SourceError(f"{path}: x_{split} has shape {x.shape}; expected [N, H, W] or [N, H, W, C] with C in 1..4")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise SourceError(f"{path}: y_{split} must be a 1-D integer array, got {y.dtype} {y.shape}")
        if len(x) != len(y):
            raise SourceError(f"{path}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
        if len(x) == 0:
            raise SourceError(f"{path}: x_{split} is empty")
    if "class_names" in arrays:
        class_names = [str(name) for name in arrays["class_names"].reshape(-1)]
    else:
        class_names = [str(i) for i in range(max(int(y.max()) for _, y in pairs.values()) + 1)]
    for split, (_, y) in pairs.items():
        if int(y.min()) < 0 or int(y.max()) >= len(class_names):
            raise SourceError(f"{path}: y_{split} has labels in [{int(y.min())}, {int(y.max())}], outside [0, {len(class_names) - 1}]")
    return pairs, class_names


def _pool_channels(shape: tuple[int, ...]) -> int:
    return 1 if len(shape) == 3 or shape[3] in (1, 2) else 3


def _check_options(spec: str, options: dict, allowed: set[str]) -> None:
    unknown = set(options) - allowed - _COMMON_OPTIONS
    if unknown:
        raise SourceError(f"{spec}: unknown options {sorted(unknown)}; accepted: {sorted(allowed | _COMMON_OPTIONS)}")


def _torchvision(name: str, root: Path, download: bool, options: dict) -> tuple[dict, list[str], int, str]:
    """Readers, class names, native channels and content hash of a torchvision dataset."""
    import torchvision.datasets as tvd

    spec = f"torchvision:{name}"

    def build(factory: Callable[[], Any]) -> Any:
        try:
            return factory()
        except RuntimeError as err:
            if download:
                raise SourceError(f"{spec}: download or check under {root} failed ({err})") from err
            raise SourceError(
                f"{spec}: dataset files not found under {root} ({err}); pass download=True on a machine with "
                f"internet, or copy the files there"
            ) from err
        except OSError as err:
            raise SourceError(f"{spec}: cannot download or read under {root} ({err})") from err

    if name == "Imagenette":
        size = options.setdefault("size", "320px")
        if size not in _IMAGENETTE_DIRS:
            raise SourceError(f"{spec}: size must be one of {sorted(_IMAGENETTE_DIRS)}, got {size!r}")
        dataset = build(lambda: tvd.Imagenette(str(root), split="train", size=size, download=download))
        folder = root / _IMAGENETTE_DIRS[size]
        readers, _, every = _open_folders(folder, dict(dataset.wnid_to_idx), (".jpeg",))
        class_names = [names[0] for names in dataset.classes]
        return readers, class_names, 3, file_list_hash(folder, every)
    factory = {"MNIST": tvd.MNIST, "FashionMNIST": tvd.FashionMNIST, "CIFAR10": tvd.CIFAR10}[name]
    train = build(lambda: factory(str(root), train=True, download=download))
    test = build(lambda: factory(str(root), train=False, download=download))
    readers = {}
    for split, dataset in (("train", train), ("test", test)):
        data = dataset.data.numpy() if isinstance(dataset.data, Tensor) else np.asarray(dataset.data)
        readers[split] = _ArrayReader(data, np.asarray(dataset.targets), f"{spec} {split}")
    folder = Path(train.raw_folder) if hasattr(train, "raw_folder") else root / train.base_folder
    return readers, list(train.classes), 1 if train.data.ndim == 3 else 3, file_list_hash(folder)


def _split_spec(spec: str) -> tuple[str, str]:
    kind, _, arg = spec.partition(":")
    if kind == "torchvision":
        if arg not in TORCHVISION:
            raise SourceError(f"unknown torchvision dataset {arg!r}; expected one of {TORCHVISION}")
    elif kind in ("imagefolder", "npz"):
        if not arg:
            raise SourceError(f"{kind} source needs a path: '{kind}:PATH'")
    elif kind in ("digits", "shapes"):
        if arg:
            raise SourceError(f"source {kind!r} takes no argument, got {spec!r}")
    else:
        raise SourceError(
            f"unknown source {spec!r}; expected torchvision:MNIST|FashionMNIST|CIFAR10|Imagenette, "
            "imagefolder:PATH, npz:PATH, digits or shapes"
        )
    return kind, arg


def _positive_int(spec: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SourceError(f"{spec}: option {key} must be a positive integer, got {value!r}")
    return int(value)


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
    root = Path(root)
    name, content = kind, None

    if kind == "torchvision":
        _check_options(spec, options, {"size"} if arg == "Imagenette" else set())
        readers, class_names, native, content = _torchvision(arg, root, download, options)
        name = arg
    elif kind == "imagefolder":
        _check_options(spec, options, {"extensions"})
        folder = Path(arg)
        extensions = tuple(ext.lower() for ext in options.get("extensions", IMAGE_EXTENSIONS))
        readers, class_to_idx, every = _open_folders(folder, None, extensions)
        class_names = list(class_to_idx)
        native = _majority_channels(readers["train"].paths) if "channels" not in options else int(options["channels"])
        name, content = folder.resolve().name, file_list_hash(folder, every)
    elif kind == "npz":
        _check_options(spec, options, set())
        path = Path(arg)
        pairs, class_names = _check_npz(path, _npz_arrays(path))
        readers = {split: _ArrayReader(x, y, f"{path.name} x_{split}") for split, (x, y) in pairs.items()}
        native = _pool_channels(pairs["train"][0].shape)
        name, content = path.stem, file_sha256(path)
    elif kind == "digits":
        from sklearn.datasets import load_digits

        _check_options(spec, options, {"size"})
        size = _positive_int(spec, "size", options.setdefault("size", 16))
        digits = load_digits()
        readers = {"train": _ArrayReader(digits.images.astype(np.float32), digits.target, "digits", divisor=16.0, resize=size)}
        class_names, native = [str(i) for i in range(10)], 1
    else:  # shapes
        _check_options(spec, options, {"size", "count"})
        size = _positive_int(spec, "size", options.setdefault("size", 32))
        native = int(options.setdefault("channels", 1))
        if native not in (1, 3):
            raise SourceError(f"{spec}: channels must be 1 or 3, got {native}")
        count = options.setdefault("count", {"train": 1000, "val": 200, "test": 200})
        counts = dict(count) if isinstance(count, Mapping) else {split: count for split in SPLITS}
        if set(counts) != set(SPLITS):
            raise SourceError(f"{spec}: count must be an int or a mapping with keys {SPLITS}, got {count!r}")
        readers = {split: _ShapesReader(seed, split, _positive_int(spec, "count", counts[split]), size, native) for split in SPLITS}
        class_names = list(SHAPES)

    channels = int(options.get("channels", native))
    if channels not in (1, 3):
        raise SourceError(f"{spec}: channels must be 1 or 3, got {channels}")
    center_crop = options.get("center_crop")
    if center_crop is not None:
        center_crop = _positive_int(spec, "center_crop", center_crop)

    readers = assign_splits(readers["train"], readers.get("val"), readers.get("test"), val_fraction, test_fraction, seed)
    splits = {split: ImageSplit(split, reader, channels, center_crop, canvas) for split, reader in readers.items()}
    identity = {
        "source": spec if kind in ("torchvision", "digits", "shapes") else kind,
        "name": name,
        "options": {key: options[key] for key in sorted(options)},
        "splits": {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed},
        "canvas": asdict(canvas) if canvas is not None else None,
        "content": content,
    }
    identity = _json_roundtrip(identity)
    return ImageSource(spec, identity, channels, class_names, splits)


def _json_roundtrip(value: Any) -> Any:
    try:
        return json.loads(canonical_json(value))
    except TypeError as err:
        raise SourceError(f"source options must be JSON-compatible values ({err})") from err
