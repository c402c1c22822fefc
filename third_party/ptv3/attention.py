"""Serialized patch attention: multi-head attention inside patches of K consecutive points along a curve.

Patches never cross clouds. A cloud of n >= K points is cut into ceil(n / K)
patches along the curve; the last patch is the cloud's last K points, so it
overlaps the previous one and every patch holds K distinct real points (each
point's output is taken from the first patch that contains it). A cloud of
n < K points forms one patch of its own n points: the K - n padding slots
repeat the cloud's first point, are masked out as keys and their outputs are
discarded. The patch size therefore never depends on the other clouds (when
every cloud of the batch is smaller than K the patch grid shrinks to the largest
cloud, which changes no patch).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .point import Point, counts_to_batch, offset_to_counts


@dataclass
class PatchLayout:
    """Where the points of a serialized sequence go in the [P, K] patch grid.

    gather: [P, K] int64 position (along the curve) held by each patch slot.
    key_valid: [P, K] bool, False for padding slots; None when there is no padding.
    out_slot: [N] int64 flat slot (patch * K + slot) whose output each position takes.
    """

    gather: Tensor
    key_valid: Tensor | None
    out_slot: Tensor


def patch_layout(offset: Tensor, patch_size: int) -> PatchLayout:
    """Per-cloud patch partition of a curve-sorted sequence grouped by cloud (see module doc)."""
    device = offset.device
    counts = offset_to_counts(offset)
    k = min(patch_size, int(counts.max()))  # every cloud is <= k then: same patches, less padding
    starts = offset - counts
    n_patch = (counts + k - 1) // k
    first_patch = torch.cumsum(n_patch, 0) - n_patch
    cloud_of_patch = counts_to_batch(n_patch)
    j = torch.arange(cloud_of_patch.numel(), device=device) - first_patch[cloud_of_patch]
    last = j == n_patch[cloud_of_patch] - 1
    local_start = torch.where(last, (counts[cloud_of_patch] - k).clamp(min=0), j * k)
    slot = torch.arange(k, device=device)
    local = local_start[:, None] + slot
    valid = local < counts[cloud_of_patch, None]
    gather = starts[cloud_of_patch, None] + torch.minimum(local, counts[cloud_of_patch, None] - 1)
    key_valid = None if bool(valid.all()) else valid

    cloud_of_pos = counts_to_batch(counts)
    pos_local = torch.arange(int(offset[-1]), device=device) - starts[cloud_of_pos]
    patch = first_patch[cloud_of_pos] + torch.minimum(pos_local // k, n_patch[cloud_of_pos] - 1)
    out_slot = patch * k + pos_local - local_start[patch]
    return PatchLayout(gather=gather, key_valid=key_valid, out_slot=out_slot)


class SerializedAttention(nn.Module):
    """Multi-head self-attention within curve patches, with optional relative position bias.

    RPE: a learned table [3 * (2 * pos_bnd + 1), heads] indexed by the clamped per-axis
    grid-coordinate difference (query minus key) of every pair; the three
    axis entries are summed and added to the attention logits.
    pos_bnd = int((4 * K) ** (1 / 3) * 2).
    """

    def __init__(self, channels: int, num_heads: int, patch_size: int, order_index: int = 0,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 enable_rpe: bool = True) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels {channels} is not divisible by num_heads {num_heads}")
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        self.channels, self.num_heads, self.patch_size = channels, num_heads, patch_size
        self.order_index = order_index
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)
        self.pos_bnd = int((4 * patch_size) ** (1 / 3) * 2)
        if enable_rpe:
            self.rpe_table = nn.Parameter(torch.zeros(3 * (2 * self.pos_bnd + 1), num_heads))
            nn.init.trunc_normal_(self.rpe_table, std=0.02)
        else:
            self.rpe_table = None

    def relative_bias(self, grid: Tensor, key_valid: Tensor | None = None) -> Tensor:
        """grid [P, K, 3] int64 (key_valid [P, K] bool) -> additive bias [P, heads, K, K], -inf at invalid keys.

        The three per-axis tables are summed into one joint table over (dx, dy, dz) bins
        first, so each pair costs one lookup.
        """
        r = 2 * self.pos_bnd + 1
        t = self.rpe_table.view(3, r, self.num_heads)
        joint = (t[0][:, None, None] + t[1][None, :, None] + t[2][None, None, :]).reshape(r**3, self.num_heads)
        joint = torch.cat([joint, joint.new_full((1, self.num_heads), float("-inf"))]).t()
        rel = (grid[:, :, None, :] - grid[:, None, :, :]).clamp(-self.pos_bnd, self.pos_bnd) + self.pos_bnd
        idx = (rel[..., 0] * r + rel[..., 1]) * r + rel[..., 2]
        if key_valid is not None:
            idx = idx.masked_fill(~key_valid[:, None, :], r**3)
        return joint.index_select(1, idx.flatten()).view(self.num_heads, *idx.shape).transpose(0, 1)

    def forward(self, feat: Tensor, point: Point) -> Tensor:
        """feat [N, C] -> [N, C], attending along curve ``point.order_names[order_index % k]``."""
        k_orders = point.serialized_order.shape[0]
        o = self.order_index % k_orders
        cache_key = ("patch_layout", self.patch_size)
        if cache_key not in point.cache:
            point.cache[cache_key] = patch_layout(point.offset, self.patch_size)
        layout: PatchLayout = point.cache[cache_key]
        idx = point.serialized_order[o][layout.gather]  # [P, K] point indices
        n_patch, k = idx.shape
        h, c = self.num_heads, self.channels
        qkv = self.qkv(feat).index_select(0, idx.flatten()).view(n_patch, k, 3, h, c // h).permute(2, 0, 3, 1, 4)
        if self.rpe_table is not None:
            mask = self.relative_bias(point.grid_coord[idx], layout.key_valid).to(qkv.dtype)
        elif layout.key_valid is not None:
            mask = layout.key_valid[:, None, None, :]
        else:
            mask = None
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(n_patch * k, c)
        out = self.proj_drop(self.proj(out.index_select(0, layout.out_slot)))
        return out.index_select(0, point.serialized_inverse[o])
