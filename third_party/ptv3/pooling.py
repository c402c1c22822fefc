"""Serialized pooling: merge the points of each coarser voxel (grid_coord >> log2(stride)) of each cloud."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .norm import PointBatchNorm
from .point import Point, counts_to_offset, split_voxel_key, voxel_key


def segment_max(values: Tensor, index: Tensor, size: int) -> Tensor:
    """Row-wise max of ``values`` [N, C] over groups ``index`` [N] in [0, size) -> [size, C]."""
    out = values.new_empty(size, values.shape[1])
    return out.scatter_reduce(0, index[:, None].expand_as(values), values, "amax", include_self=False)


def segment_mean(values: Tensor, index: Tensor, size: int) -> Tensor:
    """Row-wise mean of ``values`` [N, C] over groups ``index`` [N] in [0, size) -> [size, C]."""
    total = values.new_zeros(size, values.shape[1]).index_add_(0, index, values)
    count = torch.bincount(index, minlength=size).to(values.dtype)
    return total / count[:, None]


class SerializedPooling(nn.Module):
    """Pool every cloud onto a grid ``stride`` times coarser.

    feat: Linear(C_in, C_out), then the max over the points of a coarse voxel, then
    BatchNorm1d + GELU; coord: mean over the voxel; grid_coord: parent voxel
    (grid_coord >> log2 stride, per cloud since grids are per-cloud). The pooled
    point is re-serialized by the caller.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2, bn_momentum: float = 0.1) -> None:
        super().__init__()
        if stride < 2 or stride & (stride - 1):
            raise ValueError(f"pooling stride must be a power of 2 >= 2, got {stride}")
        self.shift = int(math.log2(stride))
        self.proj = nn.Linear(in_channels, out_channels)
        self.norm = PointBatchNorm(out_channels, eps=1e-3, momentum=bn_momentum)
        self.act = nn.GELU()

    def forward(self, point: Point) -> Point:
        """Point with N points -> Point with M <= N points (one per occupied coarse voxel)."""
        keys, cluster = torch.unique(voxel_key(point.grid_coord >> self.shift, point.batch), return_inverse=True)
        m = keys.numel()
        feat = segment_max(self.proj(point.feat), cluster, m)
        coord = segment_mean(point.coord, cluster, m)
        grid, batch = split_voxel_key(keys)
        offset = counts_to_offset(torch.bincount(batch, minlength=point.num_clouds))
        return Point(coord=coord, grid_coord=grid, feat=self.act(self.norm(feat)), offset=offset, batch=batch)
