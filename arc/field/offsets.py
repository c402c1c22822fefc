"""Per-image offset standardisation (``FieldConfig.offset_scale = "per_image"``, the original code's).

The raw decoder offsets of an image are latent - pixel [pixels] for every pixel of its H x W
grid and each of its n nearest latents, both axes: P * n * 2 values. "per_image" feeds the
decoder (offset - m) / s with m their scalar mean and s their unbiased std (floored at
MIN_STD), computed in float64. Fitting takes them from its pixel table; decoding recomputes
them from the cloud's positions and image size, so a stored cloud decodes exactly as it was
fitted (an edited cloud gets the statistics of its new positions).
"""
from __future__ import annotations

import torch
from torch import Tensor

from arc import ragged
from arc.field.neighbours import pixel_grid, pixel_neighbours

MIN_STD = 1e-3  # pixels


def offset_statistics(raw: Tensor, image: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    """Scalar mean and unbiased std [B] float64 of the offsets raw [T, 2n] whose row t belongs to image[t]."""
    raw = raw.double()
    count = torch.bincount(image, minlength=batch).double() * raw.shape[1]
    mean = ragged.segment_sum(raw.sum(1), image, batch) / count
    squares = (raw - mean[image, None]).square().sum(1)
    var = ragged.segment_sum(squares, image, batch) / (count - 1)
    return mean, var.sqrt().clamp_min(MIN_STD)


def cloud_offset_statistics(pos: Tensor, height: int, width: int, n: int) -> tuple[Tensor, Tensor]:
    """(mean, std), 0-dim float64 in pixels, of one cloud's offsets over its H x W pixel grid (pos [k, 2])."""
    pos = pos.detach().to("cpu", torch.float32)
    grid = pixel_grid(height, width)
    raw = (pos[pixel_neighbours(pos, height, width, n)] - grid[:, None, :]).reshape(grid.shape[0], 2 * n)
    mean, std = offset_statistics(raw, torch.zeros(grid.shape[0], dtype=torch.long), 1)
    return mean[0], std[0]


def standardise(raw: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(raw - mean) / std computed in float64 -> float32; raw [M, 2n], mean and std float64, broadcastable."""
    return ((raw.double() - mean) / std).float()
