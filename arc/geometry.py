"""The coordinate conventions of arc, implemented once: positions along the D spatial axes and maps of them.

A sample point is indexed along the spatial axes in tensor order (1-D: (t,); 2-D: (row, col);
3-D: (slice, row, col)), its centre at that integer point, the origin at the first one; the
sample's centre is (S-1)/2 on every axis. Axes are also named from the last one: ``h`` = the last
(columns; time in 1-D), ``v`` = the one before (rows), ``d`` = the first of a 3-D sample (slices
or frames). ``dx`` = +col, ``dy`` = +row. In 2-D a positive angle turns counter-clockwise as the
image is displayed (row axis pointing down), so a point right of the pivot moves up for +90 deg;
with d = p - pivot:

    d_row' = d_row cos(theta) - d_col sin(theta),    d_col' = d_col cos(theta) + d_row sin(theta).

In 3-D a turn is right-handed about an axis of the (slice, row, col) frame: about ``d`` it turns
every slice by the 2-D rule above; about ``v`` it turns the (col, slice) plane, about ``h`` the
(slice, row) plane, by the same rule with the axes in that cyclic order (Rodrigues' formula for
a unit axis k: R = I + sin K + (1 - cos) K^2). Rotation has no meaning in 1-D.
A flip mirrors one axis about the pivot (h: col -> 2 pivot_col - col, left-right; v: rows).
At an integer ``scale`` s, output pixel i sits at content coordinate (i + 0.5) / s - 0.5 (the
sub-pixel centres).

The maps come in two forms that follow these formulas: :class:`Affine`, one map in float64 that
composes and inverts (edits, rendering; quarter turns and flips use exact integer matrices), and
the batched :func:`rotate_about` (2-D) / :func:`transform_about` / :func:`mirror_about`, one map
per point, computed in the positions' dtype (augmentations, no per-cloud Python). Pure torch;
imports nothing from arc.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["PIVOTS", "AXES", "Affine", "axis_index", "rotation_plane", "axis_rotations", "cos_sin", "image_centre",
           "pivots", "rotate_about", "transform_about", "mirror_about", "pixel_centres"]

PIVOTS = ("centre", "origin")
AXES = ("d", "v", "h")  # named from the last axis: d = third to last, v = second to last, h = last


def image_centre(size: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """[..., D] sample sizes S (int) -> [..., D] centres (S-1)/2 in sample points, in ``dtype``."""
    return (size.to(dtype) - 1.0) / 2.0


def pivots(size: Tensor, about: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """[B, D] pivots of samples of ``size`` [B, D]: each sample's centre, or the origin (0, ..., 0)."""
    if about not in PIVOTS:
        raise ValueError(f"about must be one of {list(PIVOTS)}, got {about!r}")
    if about == "centre":
        return image_centre(size, dtype)
    return torch.zeros(size.shape, dtype=dtype, device=size.device)


def axis_index(axis: str, dims: int) -> int:
    """The tensor-order index of the named axis ``h`` / ``v`` / ``d`` (module docstring) in D = ``dims``."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {'|'.join(AXES)}, got {axis!r}")
    index = dims - 3 + AXES.index(axis)
    if index < 0:
        raise ValueError(f"axis {axis!r} does not exist in {dims}-D samples (axes: {'|'.join(AXES[3 - dims:])})")
    return index


def rotation_plane(dims: int, axis: str | None = None) -> tuple[int, int]:
    """The (i, j) axes a turn mixes (d_i' = d_i cos - d_j sin, d_j' = d_j cos + d_i sin).

    2-D: (0, 1), ``axis`` must be None; 3-D: the turn about ``axis`` (default ``d``: every slice
    turns as an image), right-handed; 1-D: :class:`ValueError` (rotation has no meaning).
    """
    if dims == 2:
        if axis is not None:
            raise ValueError(f"a rotation axis applies to 3-D samples only, got axis={axis!r} for 2-D ones")
        return 0, 1
    if dims == 3:
        k = axis_index("d" if axis is None else axis, 3)
        return (k + 1) % 3, (k + 2) % 3
    raise ValueError(f"rotation is not defined for {dims}-D samples (only 2-D and 3-D)")


def axis_rotations(axis: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """[B, 3, 3] right-handed turns about unit axes ``axis`` [B, 3] by angles of cosine / sine ``cos``, ``sin`` [B].

    Rodrigues: R = I + sin K + (1 - cos) K^2, K the cross-product matrix of the axis; the angle 0 gives I exactly.
    """
    x, y, z = axis.unbind(1)
    zero = torch.zeros_like(x)
    k = torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=1).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    return eye + sin[:, None, None] * k + (1.0 - cos)[:, None, None] * (k @ k)


def cos_sin(degrees: float) -> tuple[float, float]:
    """cos and sin of an angle in degrees; exactly (0, +-1) / (+-1, 0) for multiples of 90 degrees."""
    quarter = degrees / 90.0
    if float(quarter).is_integer():
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[int(quarter) % 4]
    radians = math.radians(degrees)
    return math.cos(radians), math.sin(radians)


def rotate_about(pos: Tensor, cos: Tensor, sin: Tensor, pivot: Tensor) -> Tensor:
    """Turn every 2-D point about its pivot (convention above): pos [N, 2], cos and sin [N], pivot [N, 2] -> [N, 2]."""
    d = pos - pivot
    return pivot + torch.stack((d[:, 0] * cos - d[:, 1] * sin, d[:, 1] * cos + d[:, 0] * sin), dim=1)


def transform_about(pos: Tensor, matrix: Tensor, pivot: Tensor) -> Tensor:
    """p -> pivot + A (p - pivot), one matrix per point: pos [N, D], matrix [N, D, D], pivot [N, D] -> [N, D]."""
    return pivot + torch.einsum("nij,nj->ni", matrix, pos - pivot)


def mirror_about(pos: Tensor, sign: Tensor, pivot: Tensor) -> Tensor:
    """Mirror the axes where ``sign`` [N, D] is -1 (+1 leaves one alone) about pivot [N, D]: pos [N, D] -> [N, D]."""
    return pivot + sign * (pos - pivot)


def pixel_centres(count: int, scale: int = 1, shift: int = 0) -> Tensor:
    """[count * scale] float32 content coordinates of the sub-pixel centres along one axis, less ``shift`` pixels."""
    return (torch.arange(count * scale, dtype=torch.float32) + 0.5) / scale - 0.5 - shift


@dataclass(frozen=True)
class Affine:
    """The map p -> A p + t of points with D coordinates; A [D, D] and t [D] are float64, t in sample points.

    ``Affine()`` is the 2-D identity; :meth:`identity` gives it for any D. The constructors take
    the D of their pivot (or of the shift); a rotation in 1-D is a :class:`ValueError`.
    """

    matrix: Tensor = field(default_factory=lambda: torch.eye(2, dtype=torch.float64))
    shift: Tensor = field(default_factory=lambda: torch.zeros(2, dtype=torch.float64))

    @classmethod
    def identity(cls, dims: int) -> "Affine":
        return cls(torch.eye(dims, dtype=torch.float64), torch.zeros(dims, dtype=torch.float64))

    @classmethod
    def translation(cls, *shift: float) -> "Affine":
        """Move by ``shift`` in tensor order (2-D: ``translation(dy, dx)``)."""
        return cls(torch.eye(len(shift), dtype=torch.float64), torch.tensor(shift, dtype=torch.float64))

    @classmethod
    def linear_about(cls, matrix: Sequence[Sequence[float]], pivot: Sequence[float]) -> "Affine":
        """p -> A (p - pivot) + pivot."""
        a = torch.tensor(matrix, dtype=torch.float64)
        c = torch.tensor(pivot, dtype=torch.float64)
        return cls(a, c - a @ c)

    @classmethod
    def rotation(cls, degrees: float, pivot: Sequence[float], axis: str | None = None) -> "Affine":
        """A turn by ``degrees`` about ``pivot`` (module docstring): in 2-D counter-clockwise as displayed;
        in 3-D about the named ``axis`` (default ``d``, every slice turned as an image)."""
        i, j = rotation_plane(len(pivot), axis)
        cos, sin = cos_sin(degrees)
        matrix = [[float(r == c) for c in range(len(pivot))] for r in range(len(pivot))]
        matrix[i][i], matrix[i][j], matrix[j][i], matrix[j][j] = cos, -sin, sin, cos
        return cls.linear_about(matrix, pivot)

    @classmethod
    def flip(cls, axis: str, pivot: Sequence[float]) -> "Affine":
        """Mirror the named axis about ``pivot``: "h" col -> 2 pivot_col - col (left-right), "v" rows, "d" slices."""
        signs = [1.0] * len(pivot)
        signs[axis_index(axis, len(pivot))] = -1.0
        return cls.linear_about(torch.diag(torch.tensor(signs)).tolist(), pivot)

    @classmethod
    def scaling(cls, factor: float, pivot: Sequence[float]) -> "Affine":
        return cls.linear_about((factor * torch.eye(len(pivot), dtype=torch.float64)).tolist(), pivot)

    @property
    def dims(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def is_identity(self) -> bool:
        return bool(torch.equal(self.matrix, torch.eye(self.dims, dtype=torch.float64)) and not bool(self.shift.any()))

    def then(self, other: "Affine") -> "Affine":
        """The map ``other(self(p))``."""
        return Affine(other.matrix @ self.matrix, other.matrix @ self.shift + other.shift)

    def inverse(self) -> "Affine":
        inv = torch.linalg.inv(self.matrix)
        return Affine(inv, -(inv @ self.shift))

    def __call__(self, points: Tensor) -> Tensor:
        """points [N, D] -> [N, D] (computed in float64, returned in the input dtype and device)."""
        a, t = self.matrix.to(points.device), self.shift.to(points.device)
        return (points.double() @ a.T + t).to(points.dtype)
