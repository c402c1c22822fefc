"""Seeded generators of 1-D signals (``waves``) and 3-D volumes (``solids``), one class per form.

Sample ``index`` of ``split`` is drawn lazily from ``item_generator(seed, "<kind>/<split>", index)``;
its class is ``index % number of classes`` (balanced). Nothing is stored.

- waves [C, L] in [0, 1]: a periodic form (or a chirp / pulse train) with random frequency (1.5-4
  cycles per sample), phase, amplitude (0.2-0.4) and offset (0.4-0.6) per channel, plus Gaussian
  noise (std 0.02), clipped to [0, 1].
- solids [1, S, S, S] in [0, 1]: a bright form on a dark background with random size, centre and
  axis, edges anti-aliased from a signed distance (voxel coverage).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from arc.seeding import item_generator

WAVES = ("sine", "square", "triangle", "sawtooth", "chirp", "pulses")
SOLIDS = ("ball", "cube", "rod", "shell", "plate", "cross")
NOISE_STD = 0.02


def _uniform(generator: torch.Generator, low: float, high: float, size: tuple[int, ...] = ()) -> Tensor:
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


def wave_form(name: str, phase: Tensor) -> Tensor:
    """The unit-amplitude form ``name`` at ``phase`` (in cycles; float64 of any shape)."""
    frac = phase - torch.floor(phase)
    if name == "sine":
        return torch.sin(2 * math.pi * phase)
    if name == "square":
        return torch.where(frac < 0.5, 1.0, -1.0).to(phase)
    if name == "triangle":
        return 4 * (frac - 0.5).abs() - 1
    if name == "sawtooth":
        return 2 * frac - 1
    if name == "pulses":
        return torch.where(frac < 0.15, 1.0, -0.3).to(phase)
    raise ValueError(f"unknown wave {name!r}")


def render_wave(seed: int, split: str, index: int, length: int, channels: int) -> Tensor:
    """Sample ``index`` of ``split``: float32 [channels, length]; class ``index % len(WAVES)``."""
    name = WAVES[index % len(WAVES)]
    generator = item_generator(seed, f"waves/{split}", index)
    t = torch.arange(length, dtype=torch.float64) / length
    out = []
    for _ in range(channels):
        cycles, start = _uniform(generator, 1.5, 4.0), _uniform(generator, 0.0, 1.0)
        amplitude, offset = _uniform(generator, 0.2, 0.4), _uniform(generator, 0.4, 0.6)
        if name == "chirp":  # frequency rising linearly to three times its start
            wave = torch.sin(2 * math.pi * (start + cycles * (t + t**2)))
        else:
            wave = wave_form(name, start + cycles * t)
        out.append(offset + amplitude * wave)
    noise = NOISE_STD * torch.randn((channels, length), generator=generator, dtype=torch.float64)
    return (torch.stack(out) + noise).clamp(0.0, 1.0).float()


def solid_distance(name: str, p: Tensor, axis: int) -> Tensor:
    """Approximate signed distance to form ``name`` of radius 1 at points p [..., 3]; negative inside.
    ``axis`` (0..2) orients the rod, the plate and the cross."""
    along, across = p[..., axis].abs(), torch.cat([p[..., :axis], p[..., axis + 1 :]], dim=-1)
    if name == "ball":
        return p.norm(dim=-1) - 1.0
    if name == "cube":
        return p.abs().amax(dim=-1) - 0.8
    if name == "shell":
        return (p.norm(dim=-1) - 0.75).abs() - 0.25
    if name == "rod":
        return torch.maximum(across.norm(dim=-1) - 0.35, along - 1.0)
    if name == "plate":
        return torch.maximum(along - 0.3, across.abs().amax(dim=-1) - 1.0)
    if name == "cross":
        bars = [torch.maximum(torch.cat([p[..., :k], p[..., k + 1 :]], dim=-1).abs().amax(dim=-1) - 0.3, p[..., k].abs() - 1.0)
                for k in range(3) if k != axis]
        return torch.minimum(*bars)
    raise ValueError(f"unknown solid {name!r}")


def render_solid(seed: int, split: str, index: int, size: int) -> Tensor:
    """Sample ``index`` of ``split``: float32 [1, size, size, size] in [0, 1]; class ``index % len(SOLIDS)``."""
    name = SOLIDS[index % len(SOLIDS)]
    generator = item_generator(seed, f"solids/{split}", index)
    radius = float(_uniform(generator, 0.25, 0.4)) * size
    centre = _uniform(generator, radius + 0.5, size - radius - 0.5, (3,))
    axis = int(torch.randint(3, (1,), generator=generator))
    low, high = float(_uniform(generator, 0.0, 0.3)), float(_uniform(generator, 0.7, 1.0))
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float64) + 0.5] * 3, indexing="ij"), dim=-1)
    distance = solid_distance(name, (grid - centre) / radius, axis) * radius  # in voxels
    coverage = (0.5 - distance).clamp(0.0, 1.0)
    return (low + (high - low) * coverage)[None].float()
