"""Decoding single images into [C, H, W] float32 tensors in [0, 1], and the bad-input rules.

The rules (see docs/architecture.md, "Colour" and "Bad input"):

- an unreadable or truncated file, NaN/inf, values outside [0, 1], or an image
  smaller than 2x2 raises :class:`ImageReadError` naming the item (the caller
  counts it as a skip);
- RGBA / grey+alpha are composited on black;
- an image whose channel count differs from the dataset's is converted
  (grey -> RGB by repeating, RGB -> grey by ITU-R 601 luminance) and reported
  as converted.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

# ITU-R BT.601 luma weights, the ones PIL uses for "RGB" -> "L".
LUMA = (0.299, 0.587, 0.114)
MIN_SIDE = 2


class ImageReadError(ValueError):
    """One image cannot be used (unreadable, truncated, NaN/inf, out of range, too small); the item is skipped."""


def array_to_image(array: np.ndarray, what: str) -> Tensor:
    """A uint8 or float array [H, W] or [H, W, C] (C in 1..4) -> float32 tensor [C, H, W].

    uint8 is divided by 255, uint16 by 65535; floats are taken as already in [0, 1]
    (checked later by :func:`check_source_image`).
    """
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"{what}: expected [H, W] or [H, W, C] with C in 1..4, got shape {array.shape}")
    if array.dtype == np.uint8:
        scaled = torch.from_numpy(array.astype(np.float32)).div_(255.0)
    elif array.dtype == np.uint16:
        scaled = torch.from_numpy(array.astype(np.float32)).div_(65535.0)
    elif np.issubdtype(array.dtype, np.floating):
        scaled = torch.from_numpy(array.astype(np.float32))
    else:
        raise ImageReadError(f"{what}: unsupported pixel type {array.dtype} (use uint8, uint16 or float in [0, 1])")
    return scaled.permute(2, 0, 1).contiguous()


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8/uint16/float array with 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA) channels."""
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(image)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode.startswith("I;16"):
        return np.asarray(image, dtype=np.uint16)
    if mode == "I":  # 32-bit integer, in practice 16-bit PNGs
        return np.clip(np.asarray(image, dtype=np.int64), 0, 65535).astype(np.uint16)
    if mode == "F":
        return np.asarray(image, dtype=np.float32)
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        return np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    if mode == "La":
        return np.asarray(image.convert("LA"))
    if mode == "RGBa":
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def read_image_file(path: str | Path) -> Tensor:
    """Decode an image file -> float32 [C, H, W] with C in 1..4 (alpha kept; see :func:`conform_channels`)."""
    try:
        with Image.open(path) as image:
            image.load()
            array = _pil_to_array(image)
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path}: larger than PIL's safety limit ({err}); raise PIL.Image.MAX_IMAGE_PIXELS") from err
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: unreadable or truncated image ({err})") from err
    return array_to_image(array, str(path))


def composite_alpha(image: Tensor) -> Tensor:
    """[C, H, W] with C = 2 (grey+alpha) or 4 (RGBA) -> colour times alpha (composited on black)."""
    if image.shape[0] in (2, 4):
        return image[:-1] * image[-1:]
    return image


def conform_channels(image: Tensor, channels: int) -> tuple[Tensor, bool]:
    """Composite alpha, then convert to ``channels`` (1 or 3). Returns (image, converted)."""
    image = composite_alpha(image)
    if image.shape[0] == channels:
        return image, False
    if channels == 3:
        return image.expand(3, -1, -1).contiguous(), True
    weights = torch.tensor(LUMA, dtype=image.dtype).view(3, 1, 1)
    return (image * weights).sum(0, keepdim=True), True


def check_source_image(image: Tensor, what: str) -> Tensor:
    """Raise :class:`ImageReadError` (a skip) for NaN/inf, values outside [0, 1] or a side below 2 pixels.

    The source-level rule; the fitting engine's own input check is :func:`arc.field.colour.check_sample`.
    """
    if image.ndim != 3:
        raise ImageReadError(f"{what}: expected an image [C, H, W], got shape {tuple(image.shape)}")
    if image.shape[1] < MIN_SIDE or image.shape[2] < MIN_SIDE:
        raise ImageReadError(f"{what}: image {image.shape[1]}x{image.shape[2]} is smaller than {MIN_SIDE}x{MIN_SIDE}")
    if not bool(torch.isfinite(image).all()):
        raise ImageReadError(f"{what}: image contains NaN or inf")
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        raise ImageReadError(f"{what}: pixel values span [{low:g}, {high:g}], outside [0, 1]")
    return image
