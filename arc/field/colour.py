"""The colour space latents are fitted in: per-image standardisation or the raw [0,1] image.

Standardise: x_c = (I_c - mu_c) / max(sigma_c, 1e-3) per channel, with sigma the
*unbiased* standard deviation over the sample's points (an image's H*W pixels; what the
original code used; the population std for a one-point sample). Unit: x = I, mean 0, std 1.
A sample is [C, *S] with D = len(S) spatial axes, D in :data:`DIMS` (images: [C, H, W]).
"""
from __future__ import annotations

import torch
from torch import Tensor

from arc.field.errors import FieldInputError

MIN_STD = 1e-3
DIMS = (1, 2, 3)  # the spatial dimensions a sample may have
SHAPES = {1: "[C, L]", 2: "[C, H, W]", 3: "[C, D, H, W]"}


def check_sample(sample: Tensor, dims: int | None = None) -> int:
    """Raise :class:`FieldInputError` unless ``sample`` is a finite, non-empty floating [C, *S] tensor with
    D = len(S) in :data:`DIMS` (and D = ``dims`` when given); return D."""
    shape = getattr(sample, "shape", type(sample))
    if not isinstance(sample, Tensor) or sample.ndim - 1 not in DIMS:
        raise FieldInputError(f"a sample must be a [C, L], [C, H, W] or [C, D, H, W] tensor, got {shape}")
    if dims is not None and sample.ndim - 1 != dims:
        raise FieldInputError(f"a {dims}-D sample must be {SHAPES[dims]}, got shape {tuple(shape)} ({sample.ndim - 1}-D)")
    if not sample.is_floating_point():
        raise FieldInputError(f"a sample must be a float tensor in [0, 1], got dtype {sample.dtype}")
    if sample.numel() == 0:
        raise FieldInputError(f"a sample must not be empty, got shape {tuple(shape)}")
    if not bool(torch.isfinite(sample).all()):
        raise FieldInputError("the sample contains NaN or inf values")
    return sample.ndim - 1


def to_fit_space(image01: Tensor, mode: str) -> tuple[Tensor, Tensor, Tensor]:
    """Map a sample [C, *S] in [0, 1] (an image [C, H, W]) to the fitting colour space.

    Returns (x [C, *S] float32, mean [C], std [C]) with image01 = x * std + mean.
    """
    check_sample(image01)
    x, mean, std = to_fit_space_batch(image01[None], mode)
    return x[0], mean[0], std[0]


def to_fit_space_batch(images01: Tensor, mode: str) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`to_fit_space` of a batch [B, C, *S] of checked samples -> (x [B, C, *S], mean [B, C], std [B, C])."""
    images01 = images01.float()
    batch, c = images01.shape[:2]
    if mode == "unit":
        return images01.clone(), images01.new_zeros(batch, c), images01.new_ones(batch, c)
    if mode != "standardise":
        raise FieldInputError(f"colour mode must be 'standardise' or 'unit', got {mode!r}")
    flat = images01.reshape(batch, c, -1)
    mean = flat.mean(dim=2)
    std = flat.std(dim=2, correction=1 if flat.shape[2] > 1 else 0).clamp_min(MIN_STD)
    spread = (batch, c) + (1,) * (images01.ndim - 2)
    return (images01 - mean.view(spread)) / std.view(spread), mean, std


def from_fit_space(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Undo :func:`to_fit_space`: x [C, ...] (channels first) -> x * std + mean (not clamped)."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    return x * std.reshape(shape).to(x) + mean.reshape(shape).to(x)
