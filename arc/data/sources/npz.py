"""``npz:PATH`` — arrays x_train, y_train, x_test, y_test, optional x_val, y_val and class_names;
y 1-D integers. Images (option ``dims`` 2, the default): x uint8 / uint16 / float in [0, 1],
[N, H, W] or [N, H, W, C] with C in 1..4. Signals (``dims: 1``): x [N, C, L] or [N, L]; volumes
(``dims: 3``): x [N, C, D, H, W] or [N, D, H, W]; channels first; uint8 / uint16 scaled to [0, 1],
floats in [0, 1] or, with option ``scale: train_range``, mapped to [0, 1] by the train split's
minimum and maximum (one affine map for every split, so amplitudes stay comparable; val / test
values beyond the train range are clipped)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from arc.data.sources.readers import SIGNAL_OPTIONS, ArrayReader, RawSource, SignalArrayReader, SourceError, check_options
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


_SIGNAL_SHAPES = {1: "[N, C, L] or [N, L]", 3: "[N, C, D, H, W] or [N, D, H, W]"}


def _shape_ok(x: np.ndarray, dims: int) -> bool:
    if dims == 2:
        return x.ndim == 3 or (x.ndim == 4 and x.shape[3] in (1, 2, 3, 4))
    return x.ndim in (dims + 1, dims + 2)


def _check_npz(path: Path, arrays: dict[str, np.ndarray], dims: int = 2) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Validate the arrays of an npz source of ``dims``-D samples; returns {split: (x, y)} and the class names."""
    for key in ("x_train", "y_train", "x_test", "y_test"):
        if key not in arrays:
            raise SourceError(f"{path}: missing array {key!r} (has {sorted(arrays)})")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise SourceError(f"{path}: x_val and y_val must be given together")
    pairs = {split: (arrays[f"x_{split}"], arrays[f"y_{split}"]) for split in SPLITS if f"x_{split}" in arrays}
    for split, (x, y) in pairs.items():
        if not (x.dtype in (np.uint8, np.uint16) or np.issubdtype(x.dtype, np.floating)):
            raise SourceError(f"{path}: x_{split} has dtype {x.dtype}; use uint8 (0..255), uint16 or float in [0, 1]")
        if not _shape_ok(x, dims):
            expected = "[N, H, W] or [N, H, W, C] with C in 1..4" if dims == 2 else f"{_SIGNAL_SHAPES[dims]} (option dims: {dims})"
            raise SourceError(f"{path}: x_{split} has shape {x.shape}; expected {expected}")
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
    """The arrays of the file ``arg`` (option ``dims``: 1, 2 or 3 spatial axes; 1 and 3 take the
    signal options ``length`` / ``shape`` and ``ragged``); content hash: the file's sha256."""
    dims = options.get("dims", 2)
    if dims not in (1, 2, 3):
        raise SourceError(f"{spec}: option dims must be 1, 2 or 3, got {dims!r}")
    check_options(spec, options, {"dims"} | (SIGNAL_OPTIONS | {"scale"} if dims != 2 else set()))
    path = Path(arg)
    pairs, class_names = _check_npz(path, _npz_arrays(path), dims)
    if dims == 2:
        readers = {split: ArrayReader(x, y, f"{path.name} x_{split}") for split, (x, y) in pairs.items()}
        return RawSource(readers, class_names, _pool_channels(pairs["train"][0].shape), path.stem, file_sha256(path))
    scale = options.get("scale", "none")
    if scale not in ("none", "train_range"):
        raise SourceError(f"{spec}: option scale must be 'none' or 'train_range', got {scale!r}")
    value_range = None
    if scale == "train_range":
        train = pairs["train"][0].astype(np.float64)
        value_range = (float(np.nanmin(train)), float(np.nanmax(train)))
    readers = {split: SignalArrayReader(x, y, f"{path.name} x_{split}", dims, value_range) for split, (x, y) in pairs.items()}
    return RawSource(readers, class_names, readers["train"].channels, path.stem, file_sha256(path), dims=dims)
