"""A seeded generator of simple shapes, one class per shape, at any resolution.

Image ``index`` of ``split`` is drawn lazily from ``item_generator(seed, "shapes/<split>", index)``:
its class is ``index % 6`` (balanced), and the generator gives the radius
r ~ U(0.15, 0.35)·size, the centre (inside the image), and the foreground and
background colours (one dark, one bright, per channel; polarity random).
Edges are anti-aliased from an approximate signed distance (pixel coverage).
Nothing is stored, so huge counts or resolutions cost no memory.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from arc.seeding import item_generator

SHAPES = ("disc", "ring", "square", "diamond", "triangle", "cross")
_TRIANGLE_NORMALS = [(math.cos(math.radians(a)), math.sin(math.radians(a))) for a in (90.0, 210.0, 330.0)]


def shape_distance(name: str, u: Tensor, v: Tensor) -> Tensor:
    """Approximate signed distance to shape ``name`` of radius 1 at (u = column, v = row); negative inside."""
    if name == "disc":
        return torch.hypot(u, v) - 1.0
    if name == "ring":
        return (torch.hypot(u, v) - 0.7).abs() - 0.3
    if name == "square":
        return torch.maximum(u.abs(), v.abs()) - 0.8
    if name == "diamond":
        return (u.abs() + v.abs() - 1.0) / math.sqrt(2.0)
    if name == "triangle":  # equilateral, apex up, circumradius 1
        return torch.stack([nu * u + nv * v for nu, nv in _TRIANGLE_NORMALS]).amax(0) - 0.5
    if name == "cross":
        bar = 0.3
        horizontal = torch.maximum(u.abs() - 1.0, v.abs() - bar)
        vertical = torch.maximum(u.abs() - bar, v.abs() - 1.0)
        return torch.minimum(horizontal, vertical)
    raise ValueError(f"unknown shape {name!r}; expected one of {SHAPES}")


def shape_label(index: int) -> int:
    """The class of image ``index`` (balanced over the shapes)."""
    return int(index) % len(SHAPES)


def render_shape(seed: int, split: str, index: int, size: int, channels: int) -> Tensor:
    """Image ``index`` of ``split``: float32 [channels, size, size] in [0, 1]."""
    generator = item_generator(seed, f"shapes/{split}", index)
    draws = torch.rand(3 + 2 * channels + 1, generator=generator, dtype=torch.float64).tolist()
    radius = (0.15 + 0.2 * draws[0]) * size
    low, high = radius, size - 1 - radius
    centre_row = low + (high - low) * draws[1]
    centre_col = low + (high - low) * draws[2]
    dark = torch.tensor(draws[3 : 3 + channels], dtype=torch.float32) * 0.4
    bright = 0.6 + torch.tensor(draws[3 + channels : 3 + 2 * channels], dtype=torch.float32) * 0.4
    foreground, background = (bright, dark) if draws[-1] < 0.5 else (dark, bright)

    coords = torch.arange(size, dtype=torch.float32)
    v = ((coords - centre_row) / radius).view(size, 1)
    u = ((coords - centre_col) / radius).view(1, size)
    coverage = (0.5 - shape_distance(SHAPES[shape_label(index)], u, v) * radius).clamp_(0.0, 1.0)
    image = background.view(-1, 1, 1) + (foreground - background).view(-1, 1, 1) * coverage
    return image.clamp_(0.0, 1.0)
