"""Per-image offset standardisation (``FieldConfig.offset_scale = "per_image"``, the original code's).

The raw decoder offsets of a sample are latent - point [sample units] for every point of its grid
(an image's H x W pixels) and each of its n nearest latents, every axis: P * n * D values. "per_image" feeds the
decoder (offset - m) / s with m their scalar mean and s their unbiased std (floored at
MIN_STD), computed in float64. Fitting takes them from its pixel table; decoding recomputes
them from the cloud's positions and sample shape, so a stored cloud decodes exactly as it was
fitted (an edited cloud gets the statistics of its new positions).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from arc import ragged
from arc.field.neighbours import sample_grid, sample_neighbours

MIN_STD = 1e-3  # pixels


def offset_statistics(raw: Tensor, image: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    """Scalar mean and unbiased std [B] float64 of the offsets raw [T, nD] whose row t belongs to image[t]."""
    raw = raw.double()
    count = torch.bincount(image, minlength=batch).double() * raw.shape[1]
    mean = ragged.segment_sum(raw.sum(1), image, batch) / count
    squares = (raw - mean[image, None]).square().sum(1)
    var = ragged.segment_sum(squares, image, batch) / (count - 1)
    return mean, var.sqrt().clamp_min(MIN_STD)


def cloud_offset_statistics(pos: Tensor, height: int, width: int, n: int) -> tuple[Tensor, Tensor]:
    """(mean, std), 0-dim float64 in pixels, of one cloud's offsets over its H x W pixel grid (pos [k, 2])."""
    return sample_offset_statistics(pos, (height, width), n)


def sample_offset_statistics(pos: Tensor, shape: Sequence[int], n: int) -> tuple[Tensor, Tensor]:
    """(mean, std), 0-dim float64 in sample units, of one cloud's offsets over the grid of its sample shape S
    (pos [k, D], D = len(S); an image's (H, W))."""
    pos = pos.detach().to("cpu", torch.float32)
    grid = sample_grid(shape)
    raw = (pos[sample_neighbours(pos, shape, n)] - grid[:, None, :]).reshape(grid.shape[0], grid.shape[1] * n)
    mean, std = offset_statistics(raw, torch.zeros(grid.shape[0], dtype=torch.long), 1)
    return mean[0], std[0]


def standardise(raw: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(raw - mean) / std computed in float64 -> float32; raw [M, nD], mean and std float64, broadcastable."""
    return ((raw.double() - mean) / std).float()
