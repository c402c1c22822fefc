"""The colour space latents are fitted in: per-image standardisation or the raw [0,1] image.

Standardise: x_c = (I_c - mu_c) / max(sigma_c, 1e-3) per channel, with sigma the
*unbiased* standard deviation over the image's H*W pixels (what the original code
used; the population std for a one-pixel image). Unit: x = I, mean 0, std 1.
"""
from __future__ import annotations

import torch
from torch import Tensor

from arc.field.errors import FieldInputError

MIN_STD = 1e-3


def check_image(image: Tensor) -> None:
    """Raise :class:`FieldInputError` unless ``image`` is a finite [C, H, W] floating tensor."""
    if not isinstance(image, Tensor) or image.ndim != 3:
        raise FieldInputError(f"an image must be a [C, H, W] tensor, got {getattr(image, 'shape', type(image))}")
    if not image.is_floating_point():
        raise FieldInputError(f"an image must be a float tensor in [0, 1], got dtype {image.dtype}")
    if image.numel() == 0:
        raise FieldInputError(f"an image must not be empty, got shape {tuple(image.shape)}")
    if not bool(torch.isfinite(image).all()):
        raise FieldInputError("the image contains NaN or inf values")


def to_fit_space(image01: Tensor, mode: str) -> tuple[Tensor, Tensor, Tensor]:
    """Map a [C, H, W] image in [0, 1] to the fitting colour space.

    Returns (x [C, H, W] float32, mean [C], std [C]) with image01 = x * std + mean.
    """
    check_image(image01)
    x, mean, std = to_fit_space_batch(image01[None], mode)
    return x[0], mean[0], std[0]


def to_fit_space_batch(images01: Tensor, mode: str) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`to_fit_space` of a batch [B, C, H, W] of checked images -> (x [B, C, H, W], mean [B, C], std [B, C])."""
    images01 = images01.float()
    batch, c = images01.shape[:2]
    if mode == "unit":
        return images01.clone(), images01.new_zeros(batch, c), images01.new_ones(batch, c)
    if mode != "standardise":
        raise FieldInputError(f"colour mode must be 'standardise' or 'unit', got {mode!r}")
    flat = images01.reshape(batch, c, -1)
    mean = flat.mean(dim=2)
    std = flat.std(dim=2, correction=1 if flat.shape[2] > 1 else 0).clamp_min(MIN_STD)
    return (images01 - mean[..., None, None]) / std[..., None, None], mean, std


def from_fit_space(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Undo :func:`to_fit_space`: x [C, ...] (channels first) -> x * std + mean (not clamped)."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    return x * std.reshape(shape).to(x) + mean.reshape(shape).to(x)
