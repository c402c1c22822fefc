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
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from arc.field.colour import check_image
from arc.field.config import FieldConfig
from arc.field.errors import FieldInputError

def gradient_norm(image: Tensor) -> Tensor:
    """Sobel gradient norm of a [..., C, H, W] image (or batch) -> [..., H, W] (same device, float32).

    Computed as differences then [1, 2, 1] smoothing (the separable Sobel form), so a
    constant region has a gradient of exactly 0.
    """
    if image.ndim < 3:
        raise FieldInputError(f"an image must be [C, H, W] or [B, C, H, W], got shape {tuple(image.shape)}")
    lead, (channels, height, width) = image.shape[:-3], image.shape[-3:]
    x = F.pad(image.float().reshape(-1, channels, height, width), (1, 1, 1, 1), mode="replicate")
    d_col = x[..., 2:] - x[..., :-2]  # [N, C, H+2, W]
    d_row = x[..., 2:, :] - x[..., :-2, :]  # [N, C, H, W+2]
    g_col = (d_col[..., :-2, :] + 2.0 * d_col[..., 1:-1, :] + d_col[..., 2:, :]) / 8.0
    g_row = (d_row[..., :-2] + 2.0 * d_row[..., 1:-1] + d_row[..., 2:]) / 8.0
    return (g_col.square() + g_row.square()).sum(dim=1).sqrt().reshape(*lead, height, width)


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
    check_image(image_fit)
    return sample_positions_batch(image_fit[None], field, [generator])[0]


def sample_positions_batch(images_fit: Tensor, field: FieldConfig, generators: Sequence[torch.Generator]) -> list[Tensor]:
    """:func:`sample_positions` for a batch [B, C, H, W] of same-size images, one generator each -> B x [k_b, 2].

    The result for each image is exactly that of :func:`sample_positions` alone; images that
    draw the same k share one top-k.
    """
    batch, _, height, width = images_fit.shape
    if len(generators) != batch:
        raise FieldInputError(f"{batch} images but {len(generators)} generators")
    g = gradient_norm(images_fit).reshape(batch, -1).to("cpu", torch.float64)
    nonzero = g > 0
    counts = nonzero.sum(dim=1).tolist()
    ks = [latent_count(height, width, count, field) for count in counts]
    uniform = torch.empty_like(g)
    for row, generator in zip(uniform, generators):
        torch.rand(row.shape, generator=generator, dtype=torch.float64, out=row)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
    keys = torch.where(nonzero, torch.log(g) + gumbel, -math.inf)
    flat: list[Tensor | None] = [None] * batch
    for k in sorted(set(ks)):
        rows = [b for b in range(batch) if ks[b] == k and k <= counts[b]]
        if rows:
            top = torch.topk(keys[rows], k, dim=1).indices
            for row, b in enumerate(rows):
                flat[b] = top[row]
    for b in range(batch):
        if flat[b] is None:  # fewer non-zero-gradient pixels than latents: all of them plus uniform extras
            rest = torch.nonzero(~nonzero[b]).flatten()
            extra = rest[torch.topk(gumbel[b, rest], ks[b] - counts[b]).indices]
            flat[b] = torch.cat([torch.topk(keys[b], counts[b]).indices, extra])
    return [torch.stack([f // width, f % width], dim=1).float() for f in flat]
