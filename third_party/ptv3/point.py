"""The ragged point batch PTv3 works on, and its construction from raw input.

A batch of B clouds with N points in total is flat (PTv3 ``offset`` convention):
points of cloud b are rows ``offset[b-1]:offset[b]`` and ``batch`` [N] names each
point's cloud. Every input point is a point of the batch, so several points of a
cloud may share a voxel. Grid coordinates are computed per cloud (see :func:`voxelize`),
so nothing depends on which other clouds share the batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor

from .serialization import DEPTH, MAX_CLOUDS, encode


class PointError(ValueError):
    """The input point batch is malformed (shapes, offsets, empty clouds, non-finite values)."""


@dataclass(eq=False)
class Point:
    """A ragged batch of point clouds.

    coord: [N, 3] float, positions (units of the input; ARC: pixels, z = 0).
    grid_coord: [N, 3] int64 >= 0, voxel index relative to the cloud's grid origin (may repeat).
    feat: [N, C] float features.
    offset: [B] int64 cumulative point counts (end index of each cloud).
    batch: [N] int64 cloud index of every point; points are grouped by cloud.
    order_names: the curve order used by each row of ``serialized_order``.
    serialized_order: [k, N] int64, point indices sorted along each curve.
    serialized_inverse: [k, N] int64, position of every point along each curve.
    """

    coord: Tensor
    grid_coord: Tensor
    feat: Tensor
    offset: Tensor
    batch: Tensor
    order_names: tuple[str, ...] = ()
    serialized_order: Tensor | None = None
    serialized_inverse: Tensor | None = None
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def num_clouds(self) -> int:
        return int(self.offset.numel())

    def counts(self) -> Tensor:
        """[B] int64 number of points per cloud."""
        return offset_to_counts(self.offset)

    def serialize(self, orders: tuple[str, ...]) -> "Point":
        """Fill ``serialized_order`` / ``serialized_inverse`` for the given curve orders (in place).

        Points sharing a voxel share a code; the stable sort keeps them in point-index order.
        """
        codes = torch.stack([encode(self.grid_coord, self.batch, o, self.num_clouds) for o in orders])
        order = torch.argsort(codes, dim=1, stable=True)
        inverse = torch.empty_like(order)
        inverse.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        self.order_names = tuple(orders)
        self.serialized_order = order
        self.serialized_inverse = inverse
        return self


def counts_to_offset(counts: Tensor) -> Tensor:
    """[B] counts -> [B] cumulative offsets (int64)."""
    return torch.cumsum(counts.long(), 0)


def offset_to_counts(offset: Tensor) -> Tensor:
    """[B] cumulative offsets -> [B] points per cloud."""
    return torch.diff(offset, prepend=offset.new_zeros(1))


def counts_to_batch(counts: Tensor) -> Tensor:
    """[B] counts -> [sum(counts)] int64 cloud number of every point (or of every patch, for patch counts)."""
    return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise PointError(message)


def voxel_key(grid_coord: Tensor, batch: Tensor) -> Tensor:
    """Unique int64 key per (cloud, voxel): batch << 48 | x << 32 | y << 16 | z (coords < 2**16)."""
    g = grid_coord.long()
    return (batch.long() << (3 * DEPTH)) | (g[:, 0] << (2 * DEPTH)) | (g[:, 1] << DEPTH) | g[:, 2]


def split_voxel_key(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`voxel_key`: [M] keys -> (grid_coord [M, 3], batch [M])."""
    mask = (1 << DEPTH) - 1
    grid = torch.stack([(keys >> (2 * DEPTH)) & mask, (keys >> DEPTH) & mask, keys & mask], dim=1)
    return grid, keys >> (3 * DEPTH)


GRID_ORIGINS = ("cloud", "frame")

QUANTUM = 1e-4
"""Positions are snapped to multiples of this (units of the input: pixels) before voxelisation."""


def voxelize(coord: Tensor, batch: Tensor, num_clouds: int, grid_size: float, origin: str = "cloud",
             align: int = 1) -> Tensor:
    """[N, 3] float positions -> [N, 3] int64 non-negative voxel indices of a ``grid_size`` grid.

    origin "cloud": voxel boundaries start at each cloud's own minimum (whole-cloud translation
    changes nothing). origin "frame": boundaries lie at multiples of ``grid_size`` in input
    coordinates (0 is a boundary); each cloud's index origin is its minimum voxel rounded down to a
    multiple of ``align`` voxels (a power of 2: the product of the pooling strides), so the coarser
    pooling cells are anchored at 0 too. Exact: positions are snapped to multiples of :data:`QUANTUM`
    in float64 before the floor, so a cloud of integer positions shifted by 0.3 keeps its voxels with
    "cloud" origin (while float32 rounding of the input stays below QUANTUM / 2, |coord| < 1024).
    """
    step = grid_size / QUANTUM
    if abs(step - round(step)) < 1e-6 * step:  # a grid size that is a multiple of QUANTUM up to rounding
        step = float(round(step))
    q = torch.round(coord.double() / QUANTUM)
    index = batch[:, None].expand(-1, 3)
    if origin == "cloud":
        lo = q.new_full((num_clouds, 3), float("inf")).scatter_reduce(0, index, q, "amin")
        return torch.floor((q - lo[batch]) / step).long()
    voxel = torch.floor(q / step).long()
    lo = voxel.new_full((num_clouds, 3), torch.iinfo(torch.long).max).scatter_reduce(0, index, voxel, "amin")
    return voxel - torch.div(lo, align, rounding_mode="floor")[batch] * align


def make_point(data: Mapping[str, Tensor] | Point, grid_size: float, in_channels: int | None = None,
               grid_origin: str = "cloud", align: int = 1) -> Point:
    """Validate raw input and build a voxelised :class:`Point` (not yet serialized).

    data: a mapping (or Point) with ``coord`` [N, 3] (or [N, 2], z = 0 is appended),
    ``feat`` [N, C] and ``offset`` [B]; ``batch`` [N] and ``grid_coord`` [N, 3] are
    optional and checked against ``offset`` when given.

    Grid: :func:`voxelize` with ``grid_origin`` / ``align`` unless ``grid_coord`` is given.
    Every input point stays a point, in input order: several points of a cloud may share
    a voxel (the sparse convolutions sum them, pooling merges them).
    Raises :class:`PointError` on malformed input.
    """
    get = (lambda k: getattr(data, k, None)) if isinstance(data, Point) else data.get
    coord, feat, offset = get("coord"), get("feat"), get("offset")
    _require(isinstance(coord, Tensor) and isinstance(feat, Tensor) and isinstance(offset, Tensor),
             "point input needs tensors 'coord' [N,3], 'feat' [N,C] and 'offset' [B]")
    _require(coord.dim() == 2 and coord.shape[1] in (2, 3), f"coord must be [N,2] or [N,3], got {tuple(coord.shape)}")
    _require(feat.dim() == 2 and feat.shape[0] == coord.shape[0],
             f"feat must be [N,C] with N = {coord.shape[0]} (coord rows), got {tuple(feat.shape)}")
    _require(in_channels is None or feat.shape[1] == in_channels,
             f"feat has {feat.shape[1]} channels, the model expects {in_channels}")
    _require(offset.dim() == 1 and offset.numel() > 0 and not offset.is_floating_point(),
             f"offset must be a non-empty 1-D integer tensor, got {offset.dtype} {tuple(offset.shape)}")
    _require(offset.numel() < MAX_CLOUDS, f"at most {MAX_CLOUDS - 1} clouds per batch, got {offset.numel()}")
    n = coord.shape[0]
    offset = offset.long().to(coord.device)
    counts = offset_to_counts(offset)
    _require(int(offset[-1]) == n, f"offset[-1] = {int(offset[-1])} does not match the number of points N = {n}")
    _require(bool((counts > 0).all()), f"empty cloud(s) at batch position(s) {torch.nonzero(counts <= 0).flatten().tolist()}")
    _require(coord.is_floating_point() and feat.is_floating_point(), "coord and feat must be floating point")
    _require(bool(torch.isfinite(coord).all()), "coord contains NaN or inf")
    _require(bool(torch.isfinite(feat).all()), "feat contains NaN or inf")
    num_clouds = offset.numel()
    batch = counts_to_batch(counts)
    given_batch = get("batch")
    if given_batch is not None:
        _require(given_batch.shape == batch.shape and bool((given_batch.to(batch) == batch).all()),
                 "batch does not match offset (points must be grouped by cloud, in cloud order)")
    if coord.shape[1] == 2:
        coord = torch.cat([coord, coord.new_zeros(n, 1)], dim=1)
    grid = get("grid_coord")
    if grid is None:
        _require(grid_size > 0, f"grid_size must be positive, got {grid_size}")
        _require(grid_origin in GRID_ORIGINS, f"grid_origin must be one of {GRID_ORIGINS}, got {grid_origin!r}")
        _require(align >= 1 and not align & (align - 1), f"align must be a power of 2, got {align}")
        grid = voxelize(coord, batch, num_clouds, grid_size, grid_origin, align)
    else:
        _require(grid.shape == (n, 3) and not grid.is_floating_point() and bool((grid >= 0).all()),
                 "grid_coord must be a non-negative integer [N,3] tensor")
        grid = grid.long().to(coord.device)
    extent = int(grid.max())
    _require(extent < (1 << DEPTH), f"grid too fine: a cloud spans {extent + 1} voxels along an axis "
             f"(at most {1 << DEPTH}); increase grid_size")
    return Point(coord=coord, grid_coord=grid, feat=feat, offset=offset, batch=batch)
