"""The coordinate conventions of arc, implemented once: (row, col) pixel positions and maps of them.

Pixel (i, j) is row i, column j, with its centre at the point (i, j) and the origin top-left;
the image centre is ((H-1)/2, (W-1)/2). ``dx`` = +col, ``dy`` = +row. A positive angle turns
counter-clockwise as the image is displayed (row axis pointing down), so a point right of the
pivot moves up for +90 deg; with d = p - pivot:

    d_row' = d_row cos(theta) - d_col sin(theta),    d_col' = d_col cos(theta) + d_row sin(theta).

A horizontal flip mirrors columns (col -> 2 pivot_col - col, left-right), a vertical one rows.
At an integer ``scale`` s, output pixel i sits at content coordinate (i + 0.5) / s - 0.5 (the
sub-pixel centres).

The maps come in two forms that follow these formulas: :class:`Affine`, one map in float64 that
composes and inverts (edits, rendering; quarter turns and flips use exact integer matrices), and
the batched :func:`rotate_about` / :func:`mirror_about`, one angle or flip per point, computed in
the positions' dtype (augmentations, no per-cloud Python). Pure torch; imports nothing from arc.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["PIVOTS", "Affine", "cos_sin", "image_centre", "pivots", "rotate_about", "mirror_about", "pixel_centres"]

PIVOTS = ("centre", "origin")


def image_centre(size: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """[..., 2] image sizes (H, W) (int) -> [..., 2] centres ((H-1)/2, (W-1)/2) in pixels, in ``dtype``."""
    return (size.to(dtype) - 1.0) / 2.0


def pivots(size: Tensor, about: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """[B, 2] (row, col) pivots of images of ``size`` [B, 2]: each image's centre, or the origin (0, 0)."""
    if about not in PIVOTS:
        raise ValueError(f"about must be one of {list(PIVOTS)}, got {about!r}")
    if about == "centre":
        return image_centre(size, dtype)
    return torch.zeros(size.shape[0], 2, dtype=dtype, device=size.device)


def cos_sin(degrees: float) -> tuple[float, float]:
    """cos and sin of an angle in degrees; exactly (0, +-1) / (+-1, 0) for multiples of 90 degrees."""
    quarter = degrees / 90.0
    if float(quarter).is_integer():
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[int(quarter) % 4]
    radians = math.radians(degrees)
    return math.cos(radians), math.sin(radians)


def rotate_about(pos: Tensor, cos: Tensor, sin: Tensor, pivot: Tensor) -> Tensor:
    """Turn every point about its pivot (convention above): pos [N, 2], cos and sin [N], pivot [N, 2] -> [N, 2]."""
    d = pos - pivot
    return pivot + torch.stack((d[:, 0] * cos - d[:, 1] * sin, d[:, 1] * cos + d[:, 0] * sin), dim=1)


def mirror_about(pos: Tensor, sign: Tensor, pivot: Tensor) -> Tensor:
    """Mirror the axes where ``sign`` [N, 2] is -1 (+1 leaves one alone) about pivot [N, 2]: pos [N, 2] -> [N, 2]."""
    return pivot + sign * (pos - pivot)


def pixel_centres(count: int, scale: int = 1, shift: int = 0) -> Tensor:
    """[count * scale] float32 content coordinates of the sub-pixel centres along one axis, less ``shift`` pixels."""
    return (torch.arange(count * scale, dtype=torch.float32) + 0.5) / scale - 0.5 - shift


@dataclass(frozen=True)
class Affine:
    """The map p -> A p + t of (row, col) points; A [2, 2] and t [2] are float64, t in pixels."""

    matrix: Tensor = field(default_factory=lambda: torch.eye(2, dtype=torch.float64))
    shift: Tensor = field(default_factory=lambda: torch.zeros(2, dtype=torch.float64))

    @classmethod
    def translation(cls, dy: float, dx: float) -> "Affine":
        return cls(shift=torch.tensor([dy, dx], dtype=torch.float64))

    @classmethod
    def linear_about(cls, matrix: Sequence[Sequence[float]], pivot: Sequence[float]) -> "Affine":
        """p -> A (p - pivot) + pivot."""
        a = torch.tensor(matrix, dtype=torch.float64)
        c = torch.tensor(pivot, dtype=torch.float64)
        return cls(a, c - a @ c)

    @classmethod
    def rotation(cls, degrees: float, pivot: Sequence[float]) -> "Affine":
        """A turn by ``degrees`` about ``pivot`` (row, col), counter-clockwise as displayed (module docstring)."""
        cos, sin = cos_sin(degrees)
        return cls.linear_about(((cos, -sin), (sin, cos)), pivot)

    @classmethod
    def flip(cls, axis: str, pivot: Sequence[float]) -> "Affine":
        """axis "h": col -> 2 pivot_col - col (left-right); "v": row -> 2 pivot_row - row (up-down)."""
        return cls.linear_about(((1.0, 0.0), (0.0, -1.0)) if axis == "h" else ((-1.0, 0.0), (0.0, 1.0)), pivot)

    @classmethod
    def scaling(cls, factor: float, pivot: Sequence[float]) -> "Affine":
        return cls.linear_about(((factor, 0.0), (0.0, factor)), pivot)

    @property
    def is_identity(self) -> bool:
        return bool(torch.equal(self.matrix, torch.eye(2, dtype=torch.float64)) and not bool(self.shift.any()))

    def then(self, other: "Affine") -> "Affine":
        """The map ``other(self(p))``."""
        return Affine(other.matrix @ self.matrix, other.matrix @ self.shift + other.shift)

    def inverse(self) -> "Affine":
        inv = torch.linalg.inv(self.matrix)
        return Affine(inv, -(inv @ self.shift))

    def __call__(self, points: Tensor) -> Tensor:
        """points [N, 2] -> [N, 2] (computed in float64, returned in the input dtype and device)."""
        a, t = self.matrix.to(points.device), self.shift.to(points.device)
        return (points.double() @ a.T + t).to(points.dtype)
