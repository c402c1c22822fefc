"""New images read as a model's training source read its images (:mod:`arc.data.sources`).

A model's ``preprocess`` settings (recorded in its checkpoint, :mod:`arc.inference`) are ``channels``
(1 or 3), ``center_crop`` (int or None), ``max_pixels`` (the source's downscaling limit, or None),
``image_size`` ([H, W] of the training images before the canvas, or None when sizes were mixed) and
``canvas`` (dict or None). :func:`read_input` applies them in the sources' order: decode, composite
alpha and convert channels, check, crop, downscale, [resize to ``image_size``], canvas.

An image's content hash is the sha256 of its pixels in the model's channels (before crop and
canvas): a file and the tensor of its pixels are one image, and :func:`content_index` derives its
fitting seed and canvas draw from it, so its cloud depends on nothing else.

A model of 1-D or 3-D samples (``preprocess["dims"]`` 1 or 3) reads its inputs with
:func:`arc.signal_inputs.read_signal` (tensors [C, *S], .npy, audio or NIfTI files, as its source did).
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from arc.data.canvas import CanvasConfig, CanvasError, apply_canvas
from arc.data.images import ImageReadError, check_source_image, conform_channels, read_image_file
from arc.data.sources.image_split import downscale
from arc.data.sources.readers import DEFAULT_MAX_PIXELS
from arc.field.config import FieldConfig
from arc.field.errors import FieldInputError
from arc.field.sampling import latent_count
from arc.signal_inputs import read_signal

__all__ = ["Input", "MAX_READ_PIXELS", "content_index", "read_input", "skip_reason", "training_size"]

Input = Union[str, os.PathLike, Tensor]
MAX_READ_PIXELS = 4096 * 4096
"""Default largest file (H * W pixels) :func:`read_input` decodes; a larger one is a skip (memory)."""
NATIVE_MODES = ("1", "L", "LA", "RGB", "RGBA")  # PIL modes read without a conversion


def training_size(source: Any, samples: int = 16) -> Optional[list[int]]:
    """[H, W] of the train images of ``source`` before its canvas (after its crop and downscaling), when the first
    ``samples`` readable ones agree; None for mixed sizes. A 1-D / 3-D source: its fixed sample shape, or None."""
    split = source.split("train")
    if getattr(source, "dims", 2) != 2:  # a 1-D / 3-D source: its fixed shape (option length / shape) or none
        return None if split.shape is None else list(split.shape)
    sizes = set()
    for i in range(min(samples, len(split))):
        try:
            image = split.reader.read(i)
        except ImageReadError:
            continue
        if split.center_crop is not None:
            image = image[:, :split.center_crop, :split.center_crop]
        largest = getattr(split, "max_pixels", None)
        if largest is not None and image.shape[1] * image.shape[2] > largest:
            image = downscale(image, largest)
        sizes.add(tuple(image.shape[1:]))
    return list(sizes.pop()) if len(sizes) == 1 else None


def _decode(item: Input, max_read_pixels: int) -> tuple[Tensor, str, bool]:
    """(image [c, H, W] in [0, 1] with c in 1..4, what to call it, converted from another PIL mode)."""
    if isinstance(item, Tensor):
        image = item.detach().cpu()
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        image = image[None] if image.ndim == 2 else image
        what = f"tensor {tuple(item.shape)}"
        if image.ndim != 3 or not 1 <= image.shape[0] <= 4:
            raise ImageReadError(f"{what}: expected [H, W] or [C, H, W] with C in 1..4")
        return image, what, False
    what = str(item)
    if not os.path.isfile(what):
        raise ImageReadError(f"{what}: not a file")
    if os.path.getsize(what) == 0:
        raise ImageReadError(f"{what}: empty file")
    try:
        with Image.open(what) as header:
            (width, height), mode = header.size, header.mode
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"{what}: unreadable image ({err})") from err
    if width * height > max_read_pixels:
        raise ImageReadError(f"{what}: {width}x{height} is more than max_read_pixels={max_read_pixels}")
    return read_image_file(what), what, mode not in NATIVE_MODES


def read_input(item: Input, preprocess: Mapping[str, Any], field: FieldConfig, max_read_pixels: int = MAX_READ_PIXELS,
               resize: bool = False) -> tuple[Tensor, str, bool, bool]:
    """(image [C, H, W] in [0, 1] ready to fit, content hash, converted, other size) of a file or a tensor
    ([H, W] or [C, H, W], float in [0, 1] or uint8). Raises :class:`ImageReadError` (a skip).

    converted: channels, bit depth or colour model converted, or downscaled to ``max_pixels``. other size: its
    size before the canvas differs from ``image_size``; it is then fitted at its own size, or resized to
    ``image_size`` (bilinear, antialiased, as the digits source resizes) with ``resize``. A model of 1-D / 3-D
    samples: :func:`arc.signal_inputs.read_signal` (its source's ``ragged`` rule always brings a sample to its
    fixed shape; ``resize`` changes nothing).
    """
    if int(preprocess.get("dims", 2)) != 2:
        return read_signal(item, preprocess, field, max_read_pixels)
    image, what, converted = _decode(item, max_read_pixels)
    image, channels_converted = conform_channels(image, int(preprocess["channels"]))
    image = check_source_image(image, what).contiguous()
    content = hashlib.sha256(repr(tuple(image.shape)).encode() + image.numpy().tobytes()).hexdigest()
    crop = preprocess.get("center_crop")
    if crop is not None:
        if min(image.shape[1:]) < crop:
            raise ImageReadError(f"{what}: image {tuple(image.shape[1:])} is smaller than the model's "
                                 f"center_crop {crop}")
        top, left = (image.shape[1] - crop) // 2, (image.shape[2] - crop) // 2
        image = image[:, top:top + crop, left:left + crop]
    largest = preprocess.get("max_pixels", DEFAULT_MAX_PIXELS)
    if largest is not None and image.shape[1] * image.shape[2] > largest:  # as the sources downscale
        image, converted = downscale(image, largest), True
    size = preprocess.get("image_size")
    other_size = size is not None and list(image.shape[1:]) != list(size)
    if other_size and resize:
        image = F.interpolate(image[None], size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
        image = image[0].clamp_(0.0, 1.0)
    canvas = CanvasConfig.parse(preprocess.get("canvas"))
    if canvas is not None:
        try:
            image = apply_canvas(image, canvas, "predict", content_index(content))
        except CanvasError as err:
            raise ImageReadError(f"{what}: image {tuple(image.shape[1:])} does not fit the model's canvas") from err
    try:
        latent_count(image.shape[1], image.shape[2], 0, field)
    except FieldInputError as err:
        raise ImageReadError(f"{what}: too small for the field ({err})") from err
    return image, content, converted or channels_converted, other_size


def content_index(content: str) -> int:
    """The image "index" (fitting seed, canvas draw) of an input with hex content hash ``content``: 60 bits of it."""
    return int(content[:15], 16)


def skip_reason(err: Exception, item: Input) -> str:
    """The message of a skip without the leading "<path>: " (the CSV names the file)."""
    text, prefix = str(err), f"{item}: "
    return text[len(prefix):] if isinstance(item, (str, os.PathLike)) and text.startswith(prefix) else text
