"""Per-cloud point and latent ops: Noise, Mask (latents and point counts), Push, Rotate, Flip, Shift (positions).

Positions follow :mod:`arc.geometry` ((row, col) pixels; a positive angle turns counter-clockwise
as displayed; flips mirror about the image centre or the origin). Each op applies to a cloud with
probability ``p`` (Flip: to each axis of each cloud).
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from arc import geometry
from arc.augment.base import (
    AugmentConfigError,
    CloudAugmentation,
    check_nonneg,
    points_where,
    rand,
    randn,
    random_subset,
    uniform,
)
from arc.cloud import CloudBatch

__all__ = ["Noise", "Mask", "Push", "Rotate", "Flip", "Shift"]


def _check_about(name: str, about: str) -> str:
    if about not in geometry.PIVOTS:
        raise AugmentConfigError(f"{name}: about must be 'centre' or 'origin', got {about!r}")
    return about


class Noise(CloudAugmentation):
    """lat += N(0, std^2), i.i.d. per entry (meant for normalised latents)."""

    name = "noise"

    def __init__(self, std: float = 0.001, p: float = 1.0) -> None:
        super().__init__(p)
        self.std = check_nonneg(self.name, "std", std)

    def apply(self, batch: CloudBatch, active: Tensor, generator: torch.Generator | None) -> CloudBatch:
        scale = self.std * active[batch.batch_ids()].to(batch.lat.dtype).unsqueeze(1)
        return replace(batch, lat=batch.lat + scale * randn(tuple(batch.lat.shape), batch.device, generator))

    def extra_repr(self) -> str:
        return f"std={self.std}"


class Mask(CloudAugmentation):
    """Keep a random subset of int((1 - fraction) * k) points per cloud (at least 1)."""

    name = "mask"

    def __init__(self, fraction: float = 0.3, p: float = 1.0) -> None:
        super().__init__(p)
        fraction = check_nonneg(self.name, "fraction", fraction)
        if fraction >= 1.0:
            raise AugmentConfigError(f"mask: fraction must be in [0, 1), got {fraction!r}")
        self.fraction = fraction

    def apply(self, batch: CloudBatch, active: Tensor, generator: torch.Generator | None) -> CloudBatch:
        counts = batch.counts()
        keep_n = torch.floor((1.0 - self.fraction) * counts.double()).long()
        keep_n = torch.where(counts > 0, keep_n.clamp(min=1), counts)
        keep_n = torch.where(active, keep_n, counts)
        return points_where(batch, random_subset(batch.batch_ids(), batch.starts(), keep_n, generator))

    def extra_repr(self) -> str:
        return f"fraction={self.fraction}"


class Push(CloudAugmentation):
    """Per point, independent U(-magnitude, magnitude) pixel offsets on (row, col)."""

    name = "push"

    def __init__(self, magnitude: float = 2.0, p: float = 1.0) -> None:
        super().__init__(p)
        self.magnitude = check_nonneg(self.name, "magnitude", magnitude)

    def apply(self, batch: CloudBatch, active: Tensor, generator: torch.Generator | None) -> CloudBatch:
        m = self.magnitude
        jitter = uniform(tuple(batch.pos.shape), -m, m, batch.device, generator)
        jitter = jitter * active[batch.batch_ids()].to(jitter.dtype).unsqueeze(1)
        return replace(batch, pos=batch.pos + jitter.to(batch.pos.dtype))

    def extra_repr(self) -> str:
        return f"magnitude={self.magnitude}"


class Rotate(CloudAugmentation):
    """Rotate each cloud by theta ~ U(-degrees, degrees) about the image centre (or the origin).

    Positive theta is counter-clockwise as displayed (:func:`arc.geometry.rotate_about`).
    ``fixed=True`` turns every cloud by exactly ``degrees`` (edits, tests).
    """

    name = "rotate"

    def __init__(self, degrees: float = 180.0, about: str = "centre", fixed: bool = False, p: float = 1.0) -> None:
        super().__init__(p)
        if fixed:
            if not isinstance(degrees, (int, float)) or isinstance(degrees, bool) or not math.isfinite(degrees):
                raise AugmentConfigError(f"rotate: degrees must be a finite number, got {degrees!r}")
            self.degrees = float(degrees)
        else:
            self.degrees = check_nonneg(self.name, "degrees", degrees)
        self.about = _check_about(self.name, about)
        self.fixed = bool(fixed)

    def apply(self, batch: CloudBatch, active: Tensor, generator: torch.Generator | None) -> CloudBatch:
        b = len(batch)
        if self.fixed:
            theta = torch.full((b,), self.degrees, device=batch.device)
        else:
            theta = uniform((b,), -self.degrees, self.degrees, batch.device, generator)
        theta = torch.deg2rad(theta * active.to(theta.dtype)).to(batch.pos.dtype)
        ids = batch.batch_ids()
        pivot = geometry.pivots(batch.size, self.about, batch.pos.dtype)[ids]
        return replace(batch, pos=geometry.rotate_about(batch.pos, torch.cos(theta)[ids], torch.sin(theta)[ids], pivot))

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, about={self.about!r}, fixed={self.fixed}"


class Flip(CloudAugmentation):
    """Mirror each axis independently with probability ``p``.

    horizontal: col -> (W-1) - col (about the centre) or -col (about the origin);
    vertical: the same for rows.
    """

    name = "flip"

    def __init__(self, p: float = 0.5, horizontal: bool = True, vertical: bool = True, about: str = "centre") -> None:
        super().__init__(p)
        self.horizontal, self.vertical = bool(horizontal), bool(vertical)
        self.about = _check_about(self.name, about)

    def active(self, batch: CloudBatch, generator: torch.Generator | None) -> Tensor:
        """[B, 2] bool: which (vertical, horizontal) axes of each cloud are mirrored."""
        draws = rand((len(batch), 2), batch.device, generator) < self.p
        return draws & torch.tensor([self.vertical, self.horizontal], device=batch.device)

    def apply(self, batch: CloudBatch, active: Tensor, generator: torch.Generator | None) -> CloudBatch:
        ids = batch.batch_ids()
        pivot = geometry.pivots(batch.size, self.about, batch.pos.dtype)[ids]
        sign = (1.0 - 2.0 * active.to(batch.pos.dtype))[ids]  # -1 where flipped
        return replace(batch, pos=geometry.mirror_about(batch.pos, sign, pivot))

    def extra_repr(self) -> str:
        return f"horizontal={self.horizontal}, vertical={self.vertical}, about={self.about!r}"


class Shift(CloudAugmentation):
    """Translate each whole cloud by (dy, dx) ~ U(-pixels, pixels)^2 (dy = +row, dx = +col)."""

    name = "shift"

    def __init__(self, pixels: float = 4.0, p: float = 1.0) -> None:
        super().__init__(p)
        self.pixels = check_nonneg(self.name, "pixels", pixels)

    def apply(self, batch: CloudBatch, active: Tensor, generator: torch.Generator | None) -> CloudBatch:
        s = self.pixels
        delta = uniform((len(batch), 2), -s, s, batch.device, generator) * active.unsqueeze(1)
        return replace(batch, pos=batch.pos + delta.to(batch.pos.dtype)[batch.batch_ids()])

    def extra_repr(self) -> str:
        return f"pixels={self.pixels}"
