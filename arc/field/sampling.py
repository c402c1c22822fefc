"""Latent positions: weighted sampling without replacement from the sample-gradient norm.

The gradient of images is kornia's default ``spatial_gradient``: 3x3 Sobel kernels divided by
their L1 norm (8), replicate padding, combined over channels and both directions as
g = sqrt(sum_c (G_row^2 + G_col^2)). A sample with D spatial axes gets the D-dimensional Sobel
operator: along each axis the central difference, smoothed by [1, 2, 1] along every other axis,
divided by the kernel's L1 norm 2 * 4^(D-1) (1-D: 2, 3-D: 32), and g sums over all D axes.
Positions are drawn with probability proportional to g, without replacement, by the
Gumbel-top-k trick (the k largest log g + Gumbel keys), which has the distribution of
sequential multinomial sampling without replacement and no limit on the number of points.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from arc.field.colour import DIMS, check_sample
from arc.field.config import FieldConfig
from arc.field.errors import FieldInputError


def _smooth(x: Tensor, axis: int) -> Tensor:
    """[1, 2, 1] along ``axis`` of a tensor padded there by one on each side (the padding is consumed)."""
    return x.narrow(axis, 0, x.shape[axis] - 2) + 2.0 * x.narrow(axis, 1, x.shape[axis] - 2) + x.narrow(axis, 2, x.shape[axis] - 2)


def gradient_norm(image: Tensor, dims: int = 2) -> Tensor:
    """Sobel gradient norm of a [..., C, *S] sample (or batch) with D = ``dims`` = len(S) -> [..., *S]
    (same device, float32). An image [..., C, H, W] has D = 2.

    Computed as differences then [1, 2, 1] smoothing (the separable Sobel form), so a
    constant region has a gradient of exactly 0.
    """
    if dims not in DIMS or image.ndim < dims + 1:
        raise FieldInputError(f"a {dims}-D sample must be [C, *S] or [B, C, *S] with {dims} axes in S, got shape {tuple(image.shape)}")
    lead, channels, shape = image.shape[: -dims - 1], image.shape[-dims - 1], tuple(image.shape[-dims:])
    x = F.pad(image.float().reshape(-1, channels, *shape), (1, 1) * dims, mode="replicate")
    total = None
    for axis in range(2, 2 + dims):
        g = x.narrow(axis, 2, shape[axis - 2]) - x.narrow(axis, 0, shape[axis - 2])
        for other in range(2, 2 + dims):
            if other != axis:
                g = _smooth(g, other)
        g = g / float(2 * 4 ** (dims - 1))
        total = g.square() if total is None else total + g.square()
    return total.sum(dim=1).sqrt().reshape(*lead, *shape)


def latent_count(height: int, width: int, nonzero: int, field: FieldConfig) -> int:
    """Number of latents k for an H x W image with ``nonzero`` non-zero-gradient pixels (:func:`sample_latent_count`)."""
    return sample_latent_count((height, width), nonzero, field)


def sample_latent_count(shape: Sequence[int], nonzero: int, field: FieldConfig) -> int:
    """Number of latents k for a sample of spatial shape S with ``nonzero`` non-zero-gradient points.

    k = floor(rho * prod(S)) (or ``field.latent_count``), capped at ``nonzero``, floored at
    the neighbour count n. Raises :class:`FieldInputError` for samples with fewer than n points.
    """
    points = math.prod(int(v) for v in shape)
    n = field.neighbours
    if points < n:
        kind = "image" if len(shape) == 2 else "sample"
        raise FieldInputError(
            f"a {'x'.join(str(int(v)) for v in shape)} {kind} has {points} points, fewer than the {n} neighbours each point needs"
        )
    if field.latent_count is not None:
        k = field.latent_count
    else:  # the tiny epsilon keeps e.g. 0.05 * 20 * 30 = 29.999999... from rounding down
        k = math.floor(field.latents_per_pixel * points + 1e-9)
    return min(max(min(k, int(nonzero)), n), points)


def unravel(flat: Tensor, shape: Sequence[int]) -> Tensor:
    """Row-major flat indices [M] of a grid of shape S -> their grid coordinates [M, D] (int64)."""
    coords, rest = [], flat
    for size in reversed(shape[1:]):
        coords.append(rest % size)
        rest = rest // size
    coords.append(rest)
    return torch.stack(coords[::-1], dim=1)


def sample_positions(image_fit: Tensor, field: FieldConfig, generator: torch.Generator) -> Tensor:
    """Latent positions for one sample [C, *S] in its fitting colour space -> [k, D] float32 (an image's (row, col)).

    Draws exactly one ``torch.rand(prod(S), float64)`` from ``generator`` (a CPU generator).
    The order of the rows is the sampling order (most likely first in expectation).
    When k exceeds the non-zero-gradient points, those are all taken and the rest are
    uniform among the zero-gradient points.
    """
    check_sample(image_fit)
    return sample_positions_batch(image_fit[None], field, [generator])[0]


def sample_positions_batch(images_fit: Tensor, field: FieldConfig, generators: Sequence[torch.Generator]) -> list[Tensor]:
    """:func:`sample_positions` for a batch [B, C, *S] of same-shape samples, one generator each -> B x [k_b, D].

    The result for each image is exactly that of :func:`sample_positions` alone; images that
    draw the same k share one top-k.
    """
    batch, shape = images_fit.shape[0], tuple(images_fit.shape[2:])
    if len(generators) != batch:
        raise FieldInputError(f"{batch} samples but {len(generators)} generators")
    g = gradient_norm(images_fit, len(shape)).reshape(batch, -1).to("cpu", torch.float64)
    nonzero = g > 0
    counts = nonzero.sum(dim=1).tolist()
    ks = [sample_latent_count(shape, count, field) for count in counts]
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
    return [unravel(f, shape).float() for f in flat]
