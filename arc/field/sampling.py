"""Latent positions: weighted sampling without replacement from the image-gradient norm.

The gradient is kornia's default ``spatial_gradient``: 3x3 Sobel kernels divided by
their L1 norm (8), replicate padding, combined over channels and both directions as
g = sqrt(sum_c (G_row^2 + G_col^2)). Positions are drawn with probability
proportional to g, without replacement, by the Gumbel-top-k trick (the k largest
log g + Gumbel keys), which has the distribution of sequential multinomial sampling
without replacement and no limit on the number of pixels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from arc.field.colour import check_image
from arc.field.config import FieldConfig
from arc.field.errors import FieldInputError

def gradient_norm(image: Tensor) -> Tensor:
    """Sobel gradient norm of a [C, H, W] image -> [H, W] (same device, float32).

    Computed as differences then [1, 2, 1] smoothing (the separable Sobel form), so a
    constant region has a gradient of exactly 0.
    """
    check_image(image)
    x = F.pad(image.float()[None], (1, 1, 1, 1), mode="replicate")[0]  # [C, H+2, W+2]
    d_col = x[:, :, 2:] - x[:, :, :-2]  # [C, H+2, W]
    d_row = x[:, 2:, :] - x[:, :-2, :]  # [C, H, W+2]
    g_col = (d_col[:, :-2] + 2.0 * d_col[:, 1:-1] + d_col[:, 2:]) / 8.0
    g_row = (d_row[:, :, :-2] + 2.0 * d_row[:, :, 1:-1] + d_row[:, :, 2:]) / 8.0
    return (g_col.square() + g_row.square()).sum(dim=0).sqrt()


def latent_count(height: int, width: int, nonzero: int, field: FieldConfig) -> int:
    """Number of latents k for an H x W image with ``nonzero`` non-zero-gradient pixels.

    k = floor(rho * H * W) (or ``field.latent_count``), capped at ``nonzero``, floored at
    the neighbour count n. Raises :class:`FieldInputError` for images with fewer than n pixels.
    """
    pixels = int(height) * int(width)
    n = field.neighbours
    if pixels < n:
        raise FieldInputError(
            f"a {height}x{width} image has {pixels} pixels, fewer than the {n} neighbours each pixel needs"
        )
    if field.latent_count is not None:
        k = field.latent_count
    else:  # the tiny epsilon keeps e.g. 0.05 * 20 * 30 = 29.999999... from rounding down
        k = math.floor(field.latents_per_pixel * pixels + 1e-9)
    return min(max(min(k, int(nonzero)), n), pixels)


def sample_positions(image_fit: Tensor, field: FieldConfig, generator: torch.Generator) -> Tensor:
    """Latent positions for one image in its fitting colour space -> [k, 2] float32 (row, col).

    Draws exactly one ``torch.rand(H*W, float64)`` from ``generator`` (a CPU generator).
    The order of the rows is the sampling order (most likely first in expectation).
    When k exceeds the non-zero-gradient pixels, those are all taken and the rest are
    uniform among the zero-gradient pixels.
    """
    _, height, width = image_fit.shape
    g = gradient_norm(image_fit).flatten().to("cpu", torch.float64)
    nonzero = g > 0
    count = int(nonzero.sum())
    k = latent_count(height, width, count, field)
    uniform = torch.rand(g.numel(), generator=generator, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
    keys = torch.where(nonzero, torch.log(g) + gumbel, -math.inf)
    if k <= count:
        flat = torch.topk(keys, k).indices
    else:
        rest = torch.nonzero(~nonzero).flatten()
        extra = rest[torch.topk(gumbel[rest], k - count).indices]
        flat = torch.cat([torch.topk(keys, count).indices, extra])
    return torch.stack([flat // width, flat % width], dim=1).float()
