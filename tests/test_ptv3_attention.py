"""Serialized patch attention against a naive per-cloud, per-patch reference."""
import math

import pytest
import torch

from ptv3.attention import SerializedAttention, patch_layout
from ptv3.point import make_point


def _cloud_batch(counts, channels=8, seed=0, duplicates=False):
    g = torch.Generator().manual_seed(seed)
    pts = []
    for n in counts:  # distinct pixels per cloud, or pixels drawn with replacement from a 5 x 5 corner
        flat = torch.randint(0, 5, (n,), generator=g) * 20 + torch.randint(0, 5, (n,), generator=g) if duplicates \
            else torch.randperm(400, generator=g)[:n]
        pts.append(torch.stack([flat // 20, flat % 20, torch.zeros_like(flat)], 1).float())
    coord = torch.cat(pts)
    feat = torch.randn(coord.shape[0], channels, generator=g)
    point = make_point({"coord": coord, "feat": feat, "offset": torch.tensor(counts).cumsum(0)}, grid_size=1.0)
    return point.serialize(("hilbert", "z-trans"))


def _naive(attn: SerializedAttention, feat, point, order_index):
    out = torch.zeros_like(feat)
    k, h, c = attn.patch_size, attn.num_heads, attn.channels
    hd = c // h
    order = point.serialized_order[order_index]
    start = 0
    for end in point.offset.tolist():
        seq = order[start:end]  # this cloud's points along the curve
        n = seq.numel()
        assert torch.all(point.batch[seq] == point.batch[seq[0]])
        patch_starts = list(range(0, n, k))
        if n > k and n % k:
            patch_starts[-1] = n - k
        done = torch.zeros(n, dtype=torch.bool)
        for s in patch_starts:
            ids = seq[s:s + k]
            qkv = attn.qkv(feat[ids]).view(len(ids), 3, h, hd)
            logits = torch.einsum("qhd,khd->hqk", qkv[:, 0], qkv[:, 1]) / math.sqrt(hd)
            if attn.rpe_table is not None:
                g = point.grid_coord[ids]
                rel = (g[:, None] - g[None]).clamp(-attn.pos_bnd, attn.pos_bnd) + attn.pos_bnd
                table = attn.rpe_table.view(3, -1, h)
                for axis in range(3):
                    logits = logits + table[axis][rel[..., axis]].permute(2, 0, 1)
            o = torch.einsum("hqk,khd->qhd", logits.softmax(-1), qkv[:, 2]).reshape(len(ids), c)
            new = ~done[s:s + k]
            out[ids[new]] = attn.proj(o[new])
            done[s:s + k] = True
        assert done.all()
        start = end
    return out


@pytest.mark.parametrize("duplicates", [False, True])
@pytest.mark.parametrize("rpe", [True, False])
@pytest.mark.parametrize("counts,k", [([30, 7, 50, 25], 10), ([3, 5], 8), ([12, 40], 12), ([1, 26], 25)])
def test_patch_attention_equals_naive_reference(counts, k, rpe, duplicates):
    point = _cloud_batch(counts, duplicates=duplicates)
    if duplicates and max(counts) > 25:  # several points per voxel, so zero grid differences between distinct points
        assert torch.unique(point.grid_coord + 100 * point.batch[:, None], dim=0).shape[0] < point.feat.shape[0]
    attn = SerializedAttention(8, 2, k, order_index=1, enable_rpe=rpe).eval()
    if rpe:
        torch.nn.init.normal_(attn.rpe_table, std=0.5)
    with torch.no_grad():
        torch.testing.assert_close(attn(point.feat, point), _naive(attn, point.feat, point, 1), rtol=1e-4, atol=1e-5)


def test_patch_layout_per_cloud():
    layout = patch_layout(torch.tensor([7, 10, 22]), 4)
    # cloud 0 (7 pts): patches [0..3], [3..6]; cloud 1 (3 pts): one padded patch; cloud 2 (12 pts): 3 patches
    assert layout.gather.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [7, 8, 9, 9], [10, 11, 12, 13], [14, 15, 16, 17],
                                      [18, 19, 20, 21]]
    assert layout.key_valid[2].tolist() == [True, True, True, False]
    assert layout.key_valid.sum() == 23
    assert layout.out_slot.tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]
    small = patch_layout(torch.tensor([2, 5]), 25)  # all clouds below K: grid shrinks to the largest cloud
    assert small.gather.shape == (2, 3) and small.key_valid.tolist() == [[True, True, False], [True, True, True]]


def test_attention_gradients_flow():
    point = _cloud_batch([9, 4], seed=3)
    attn = SerializedAttention(8, 4, 5).train()
    feat = point.feat.clone().requires_grad_(True)
    attn(feat, point).square().sum().backward()
    assert torch.isfinite(feat.grad).all() and feat.grad.abs().sum() > 0
    assert attn.rpe_table.grad.abs().sum() > 0
