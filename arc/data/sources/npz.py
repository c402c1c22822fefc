"""``npz:PATH`` — arrays x_train, y_train, x_test, y_test, optional x_val, y_val and class_names;
x uint8 / uint16 / float in [0, 1], [N, H, W] or [N, H, W, C] with C in 1..4; y 1-D integers."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from arc.data.sources.readers import ArrayReader, RawSource, SourceError, check_options
from arc.data.sources.splits import SPLITS
from arc.files import file_sha256


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.is_file() and not zipfile.is_zipfile(path):  # np.load reads any other bytes as a pickle
        raise SourceError(f"{path}: not an .npz archive (an .npz is a zip of .npy arrays, as numpy.savez writes)")
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
    """Native channel count of an image array [N, H, W] or [N, H, W, C]: grey (+alpha) 1, else 3."""
    return 1 if len(shape) == 3 or shape[3] in (1, 2) else 3


def open_npz(spec: str, arg: str, *, root: Path, download: bool, seed: int, options: dict) -> RawSource:
    """The arrays of the file ``arg``; content hash: the file's sha256."""
    check_options(spec, options, set())
    path = Path(arg)
    pairs, class_names = _check_npz(path, _npz_arrays(path))
    readers = {split: ArrayReader(x, y, f"{path.name} x_{split}") for split, (x, y) in pairs.items()}
    return RawSource(readers, class_names, _pool_channels(pairs["train"][0].shape), path.stem, file_sha256(path))
