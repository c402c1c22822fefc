"""Point Transformer V3 encoder (Wu et al., CVPR 2024), encoder-only, for cloud classification."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from timm.layers import DropPath
from torch import Tensor, nn

from .attention import SerializedAttention
from .norm import PointBatchNorm, PointLayerNorm
from .point import GRID_ORIGINS, Point, make_point
from .pooling import SerializedPooling
from .serialization import ORDERS
from .sparse_conv import SubMConv3d


class Embedding(nn.Module):
    """Stem: submanifold conv (k=5, no bias) -> BatchNorm1d -> GELU."""

    def __init__(self, in_channels: int, channels: int, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv = SubMConv3d(in_channels, channels, kernel_size=5, bias=False)
        self.norm = PointBatchNorm(channels, eps=1e-3, momentum=bn_momentum)
        self.act = nn.GELU()

    def forward(self, point: Point) -> Tensor:
        return self.act(self.norm(self.conv(point.feat, point)))


class MLP(nn.Module):
    """Linear -> GELU -> Dropout -> Linear -> Dropout."""

    def __init__(self, channels: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Dropout(drop),
                                 nn.Linear(hidden, channels), nn.Dropout(drop))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Block(nn.Module):
    """Pre-norm transformer block with conditional positional encoding.

    x <- x + CPE(x)                 (CPE: SubMConv k=3 -> Linear -> LayerNorm, on the current x)
    x <- x + DropPath(Attn(LN(x)))
    x <- x + DropPath(MLP(LN(x)))
    """

    def __init__(self, channels: int, num_heads: int, patch_size: int, order_index: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0, drop_path: float = 0.0,
                 enable_rpe: bool = True, enable_cpe: bool = True) -> None:
        super().__init__()
        self.cpe_conv = SubMConv3d(channels, channels, kernel_size=3, bias=True) if enable_cpe else None
        self.cpe_proj = nn.Sequential(nn.Linear(channels, channels), PointLayerNorm(channels)) if enable_cpe else None
        self.norm1 = PointLayerNorm(channels)
        self.attn = SerializedAttention(channels, num_heads, patch_size, order_index, qkv_bias=qkv_bias,
                                        attn_drop=attn_drop, proj_drop=proj_drop, enable_rpe=enable_rpe)
        self.norm2 = PointLayerNorm(channels)
        self.mlp = MLP(channels, int(channels * mlp_ratio), proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, feat: Tensor, point: Point) -> Tensor:
        """feat [N, C] on the sites of ``point`` -> [N, C]."""
        if self.cpe_conv is not None:
            feat = feat + self.cpe_proj(self.cpe_conv(feat, point))
        feat = feat + self.drop_path(self.attn(self.norm1(feat), point))
        return feat + self.drop_path(self.mlp(self.norm2(feat)))


class PointTransformerV3(nn.Module):
    """PTv3 encoder: stem, then stages of blocks separated by serialized pooling.

    forward(point) takes a mapping (or :class:`Point`) with ``coord`` [N, 3] (or [N, 2]),
    ``feat`` [N, in_channels] and ``offset`` [B], and returns the last stage's
    :class:`Point` (``feat`` [M, out_channels], ``offset`` [B]); global pooling and the
    classification head belong to the caller. Defaults are ARC's configuration.

    Every input point is a token of the stem and the first stage (N in, N out), also when
    several share a voxel; pooling merges the points of each coarser voxel. ``grid_origin``:
    "cloud" puts voxel boundaries at each cloud's own minimum (the result is invariant to
    translating a cloud), "frame" at multiples of ``grid_size`` in input coordinates, with the
    coarser pooling cells anchored at 0 as well (a shift that is not a multiple of the coarsest
    cell, grid_size * prod(stride), moves points between voxels). See :func:`ptv3.point.voxelize`.
    """

    def __init__(
        self,
        in_channels: int = 32,
        enc_depths: Sequence[int] = (1, 1, 2, 1),
        enc_channels: Sequence[int] = (64, 64, 64, 64),
        enc_num_head: Sequence[int] = (8, 16, 32, 32),
        enc_patch_size: Sequence[int] = (25, 25, 25, 25),
        stride: Sequence[int] = (2, 2, 2),
        grid_size: float = 2.0,
        grid_origin: str = "cloud",
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.3,
        enable_rpe: bool = True,
        enable_cpe: bool = True,
        order: str | Sequence[str] = ("z", "z-trans", "hilbert", "hilbert-trans"),
        shuffle_orders: bool = True,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        order = (order,) if isinstance(order, str) else tuple(order)
        n_stages = len(enc_depths)
        if not (len(enc_channels) == len(enc_num_head) == len(enc_patch_size) == n_stages
                and len(stride) == n_stages - 1):
            raise ValueError("enc_depths, enc_channels, enc_num_head, enc_patch_size need one entry per stage "
                             "and stride one fewer")
        if not order or any(o not in ORDERS for o in order):
            raise ValueError(f"order must be a non-empty selection of {ORDERS}, got {order}")
        if grid_size <= 0:
            raise ValueError(f"grid_size must be positive, got {grid_size}")
        if grid_origin not in GRID_ORIGINS:
            raise ValueError(f"grid_origin must be one of {GRID_ORIGINS}, got {grid_origin!r}")
        self.in_channels, self.grid_size, self.grid_origin = in_channels, float(grid_size), grid_origin
        self.align = math.prod(stride)  # voxels per coarsest cell: the frame origin is a multiple of it
        self.order, self.shuffle_orders = order, shuffle_orders
        self.embedding = Embedding(in_channels, enc_channels[0], bn_momentum)
        rates = torch.linspace(0, drop_path, sum(enc_depths)).tolist()
        self.pools = nn.ModuleList(
            SerializedPooling(enc_channels[s - 1], enc_channels[s], stride[s - 1], bn_momentum)
            for s in range(1, n_stages))
        self.stages = nn.ModuleList()
        for s in range(n_stages):
            first = sum(enc_depths[:s])
            self.stages.append(nn.ModuleList(
                Block(enc_channels[s], enc_num_head[s], enc_patch_size[s], order_index=i, mlp_ratio=mlp_ratio,
                      qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, drop_path=rates[first + i],
                      enable_rpe=enable_rpe, enable_cpe=enable_cpe)
                for i in range(enc_depths[s])))
        self._out_channels = enc_channels[-1]

    @property
    def out_channels(self) -> int:
        """Channels of the returned features."""
        return self._out_channels

    def _orders(self) -> tuple[str, ...]:
        """Curve orders for one serialization: randomly permuted in training if ``shuffle_orders``."""
        if self.training and self.shuffle_orders:
            return tuple(self.order[i] for i in torch.randperm(len(self.order)).tolist())
        return self.order

    def forward(self, point: Mapping[str, Tensor] | Point) -> Point:
        """Encode a ragged batch; returns the last stage's Point (feat [M, C_out], offset [B])."""
        point = make_point(point, self.grid_size, self.in_channels, self.grid_origin, self.align)
        point.serialize(self._orders())
        point.feat = self.embedding(point)
        for s, blocks in enumerate(self.stages):
            if s > 0:
                point = self.pools[s - 1](point).serialize(self._orders())
            feat = point.feat
            for block in blocks:
                feat = block(feat, point)
            point.feat = feat
        return point
