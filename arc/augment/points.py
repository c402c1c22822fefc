"""Per-cloud point and latent ops: Noise, Mask (latents and point counts), Push, Rotate, Flip, Shift (positions).

Positions follow :mod:`arc.geometry` (D = 1, 2, 3 coordinates in tensor order, in sample points;
in 2-D a positive angle turns counter-clockwise as displayed; flips mirror about the sample's
centre or the origin). Every op works in any D except Rotate (2-D and 3-D; a 1-D batch is an
:class:`AugmentConfigError`). Each op applies to a cloud with probability ``p`` (Flip: to each
axis of each cloud). In 2-D every op draws and computes exactly as the 2-D-only code did.
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
    """Per point, independent U(-magnitude, magnitude) offsets (in sample points) on each of the D axes."""

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
    """Rotate each cloud by theta ~ U(-degrees, degrees) about the sample's centre (or the origin).

    2-D: positive theta is counter-clockwise as displayed (:func:`arc.geometry.rotate_about`).
    3-D: a right-handed turn by theta about a uniformly random axis (a direction drawn per cloud),
    or about the named ``axis`` ``d`` / ``v`` / ``h`` (``d``: every slice or frame turns alike;
    :mod:`arc.geometry`); ``axis`` is for 3-D only. 1-D: an :class:`AugmentConfigError` on the
    first batch, whatever ``p``. ``fixed=True`` turns every cloud by exactly ``degrees`` (edits, tests).
    """

    name = "rotate"

    def __init__(self, degrees: float = 180.0, about: str = "centre", fixed: bool = False, p: float = 1.0,
                 axis: str | None = None) -> None:
        super().__init__(p)
        if fixed:
            if not isinstance(degrees, (int, float)) or isinstance(degrees, bool) or not math.isfinite(degrees):
                raise AugmentConfigError(f"rotate: degrees must be a finite number, got {degrees!r}")
            self.degrees = float(degrees)
        else:
            self.degrees = check_nonneg(self.name, "degrees", degrees)
        self.about = _check_about(self.name, about)
        self.fixed = bool(fixed)
        if axis is not None and axis not in geometry.AXES:
            raise AugmentConfigError(f"rotate: axis must be one of {list(geometry.AXES)} or None (random), got {axis!r}")
        self.axis = axis

    def __call__(self, batch: CloudBatch, generator: torch.Generator | None = None) -> CloudBatch:
        if batch.dims == 1:
            raise AugmentConfigError("rotate: rotation is not defined for 1-D clouds; remove augment.rotate")
        if batch.dims == 2 and self.axis is not None:
            raise AugmentConfigError(f"rotate: axis applies to 3-D clouds only; remove axis={self.axis!r} for 2-D ones")
        return super().__call__(batch, generator)

    def apply(self, batch: CloudBatch, active: Tensor, generator: torch.Generator | None) -> CloudBatch:
        b = len(batch)
        if self.fixed:
            theta = torch.full((b,), self.degrees, device=batch.device)
        else:
            theta = uniform((b,), -self.degrees, self.degrees, batch.device, generator)
        theta = torch.deg2rad(theta * active.to(theta.dtype)).to(batch.pos.dtype)
        ids = batch.batch_ids()
        pivot = geometry.pivots(batch.size, self.about, batch.pos.dtype)[ids]
        cos, sin = torch.cos(theta), torch.sin(theta)
        if batch.dims == 2:
            return replace(batch, pos=geometry.rotate_about(batch.pos, cos[ids], sin[ids], pivot))
        if self.axis is None:
            axis = randn((b, 3), batch.device, generator).to(batch.pos.dtype)
            axis = axis / axis.norm(dim=1, keepdim=True).clamp(min=1e-12)
        else:
            axis = torch.zeros(b, 3, dtype=batch.pos.dtype, device=batch.device)
            axis[:, geometry.axis_index(self.axis, 3)] = 1.0
        return replace(batch, pos=geometry.transform_about(batch.pos, geometry.axis_rotations(axis, cos, sin)[ids], pivot))

    def extra_repr(self) -> str:
        axis = f", axis={self.axis!r}" if self.axis else ""
        return f"degrees={self.degrees}, about={self.about!r}, fixed={self.fixed}{axis}"


class Flip(CloudAugmentation):
    """Mirror each axis independently with probability ``p``, about the sample's centre or the origin.

    horizontal: the last axis, col -> (W-1) - col (about the centre) or -col (about the origin);
    in 1-D the time axis. vertical: the same for rows (2-D and 3-D); depth: for the slices or
    frames of a 3-D sample. An axis the samples lack is ignored.
    """

    name = "flip"

    def __init__(self, p: float = 0.5, horizontal: bool = True, vertical: bool = True, about: str = "centre",
                 depth: bool = True) -> None:
        super().__init__(p)
        self.horizontal, self.vertical, self.depth = bool(horizontal), bool(vertical), bool(depth)
        self.about = _check_about(self.name, about)

    def active(self, batch: CloudBatch, generator: torch.Generator | None) -> Tensor:
        """[B, D] bool: which axes of each cloud are mirrored (2-D: (vertical, horizontal))."""
        d = batch.dims
        draws = rand((len(batch), d), batch.device, generator) < self.p
        return draws & torch.tensor([self.depth, self.vertical, self.horizontal][3 - d:], device=batch.device)

    def apply(self, batch: CloudBatch, active: Tensor, generator: torch.Generator | None) -> CloudBatch:
        ids = batch.batch_ids()
        pivot = geometry.pivots(batch.size, self.about, batch.pos.dtype)[ids]
        sign = (1.0 - 2.0 * active.to(batch.pos.dtype))[ids]  # -1 where flipped
        return replace(batch, pos=geometry.mirror_about(batch.pos, sign, pivot))

    def extra_repr(self) -> str:
        return f"horizontal={self.horizontal}, vertical={self.vertical}, depth={self.depth}, about={self.about!r}"


class Shift(CloudAugmentation):
    """Translate each whole cloud by a vector ~ U(-pixels, pixels)^D (2-D: (dy, dx), dy = +row, dx = +col)."""

    name = "shift"

    def __init__(self, pixels: float = 4.0, p: float = 1.0) -> None:
        super().__init__(p)
        self.pixels = check_nonneg(self.name, "pixels", pixels)

    def apply(self, batch: CloudBatch, active: Tensor, generator: torch.Generator | None) -> CloudBatch:
        s = self.pixels
        delta = uniform((len(batch), batch.dims), -s, s, batch.device, generator) * active.unsqueeze(1)
        return replace(batch, pos=batch.pos + delta.to(batch.pos.dtype)[batch.batch_ids()])

    def extra_repr(self) -> str:
        return f"pixels={self.pixels}"
