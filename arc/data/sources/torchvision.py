"""``torchvision:MNIST | FashionMNIST | CIFAR10 | Imagenette`` — torchvision datasets under ``root``
(downloaded there with ``download=True`` on a machine with internet).

MNIST and FashionMNIST are grey 28x28, CIFAR10 colour 32x32 (train/test, held as arrays);
Imagenette is colour, train/val, read from its folders with option ``size`` = "full" | "320px" |
"160px" (default "320px"). Content hash: the (relative path, size) list of the dataset's files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import Tensor

from arc.data.sources.imagefolder import open_folders
from arc.data.sources.readers import ArrayReader, RawSource, SourceError, check_options
from arc.files import file_list_hash

TORCHVISION = ("MNIST", "FashionMNIST", "CIFAR10", "Imagenette")
_IMAGENETTE_DIRS = {"full": "imagenette2", "320px": "imagenette2-320", "160px": "imagenette2-160"}


def open_torchvision(spec: str, arg: str, *, root: Path, download: bool, seed: int, options: dict) -> RawSource:
    """Readers, class names, native channels and content hash of the torchvision dataset ``arg``."""
    check_options(spec, options, {"size"} if arg == "Imagenette" else set())
    import torchvision.datasets as tvd

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

    if arg == "Imagenette":
        size = options.setdefault("size", "320px")
        if size not in _IMAGENETTE_DIRS:
            raise SourceError(f"{spec}: size must be one of {sorted(_IMAGENETTE_DIRS)}, got {size!r}")
        dataset = build(lambda: tvd.Imagenette(str(root), split="train", size=size, download=download))
        folder = root / _IMAGENETTE_DIRS[size]
        readers, _, every = open_folders(folder, dict(dataset.wnid_to_idx), (".jpeg",))
        class_names = [names[0] for names in dataset.classes]
        return RawSource(readers, class_names, 3, arg, file_list_hash(folder, every))
    factory = {"MNIST": tvd.MNIST, "FashionMNIST": tvd.FashionMNIST, "CIFAR10": tvd.CIFAR10}[arg]
    train = build(lambda: factory(str(root), train=True, download=download))
    test = build(lambda: factory(str(root), train=False, download=download))
    readers = {}
    for split, dataset in (("train", train), ("test", test)):
        data = dataset.data.numpy() if isinstance(dataset.data, Tensor) else np.asarray(dataset.data)
        readers[split] = ArrayReader(data, np.asarray(dataset.targets), f"{spec} {split}")
    folder = Path(train.raw_folder) if hasattr(train, "raw_folder") else root / train.base_folder
    return RawSource(readers, list(train.classes), 1 if train.data.ndim == 3 else 3, arg, file_list_hash(folder))
