"""``imagefolder:PATH`` — PATH/train/<class>/*, optional PATH/val and PATH/test (classes from train);
image files decoded on access. Also reads Imagenette's folders (:mod:`arc.data.sources.torchvision`)."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from arc.data.images import read_image_file
from arc.data.sources.readers import RawSource, Reader, SourceError, check_options
from arc.data.sources.splits import SPLITS
from arc.files import file_list_hash

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_GREY_MODES = ("1", "L", "LA", "La", "I", "F")


class FileReader:
    """Image files decoded on access."""

    def __init__(self, files: Sequence[tuple[str, int]]):
        self.paths = [path for path, _ in files]
        self._labels = torch.tensor([label for _, label in files], dtype=torch.long)
        self._largest: int | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> Tensor:
        return read_image_file(self.paths[i])

    def labels(self) -> Tensor:
        return self._labels

    def describe(self, i: int) -> str:
        return self.paths[i]

    def largest_pixels(self) -> int:
        """The largest W·H among the files' headers (not decoded; unreadable files are skipped later)."""
        if self._largest is None:
            largest = 0
            for path in self.paths:
                try:
                    with Image.open(path) as image:
                        largest = max(largest, image.width * image.height)
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                    continue
            self._largest = largest
        return self._largest


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


def open_folders(root: Path, class_to_idx: dict[str, int] | None, extensions: tuple[str, ...],
                 reader: Callable[[list[tuple[str, int]]], Reader] = FileReader) -> tuple[dict[str, Reader], dict[str, int], list[str]]:
    """Readers (``reader(files)``, image files by default) for root/{train,val,test} (present ones),
    class_to_idx (from train's sub-folders when None), and all files for hashing."""
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
                raise SourceError(f"{root / split}: no files with extensions {extensions}")
            readers[split] = reader(files)
            every.extend(path for path, _ in files)
    return readers, class_to_idx, every


def open_imagefolder(spec: str, arg: str, *, root: Path, download: bool, seed: int, options: dict) -> RawSource:
    """The folder ``arg``; option ``extensions``; native channels: those of most train files (or
    option ``channels``); content hash: the (relative path, size) list of the image files."""
    check_options(spec, options, {"extensions"})
    folder = Path(arg)
    extensions = tuple(ext.lower() for ext in options.get("extensions", IMAGE_EXTENSIONS))
    readers, class_to_idx, every = open_folders(folder, None, extensions)
    native = _majority_channels(readers["train"].paths) if "channels" not in options else int(options["channels"])
    return RawSource(readers, list(class_to_idx), native, folder.resolve().name, file_list_hash(folder, every))
