"""Submanifold sparse 3D convolution on a voxelised :class:`~ptv3.point.Point`.

Submanifold: outputs exist only at the active (occupied) voxels and read only
active voxels, so the sparsity pattern is preserved. The pure-PyTorch path
hashes (cloud, voxel) into int64 keys, finds every kernel tap's neighbour by
``torch.searchsorted`` on the sorted keys, and sums ``feat[neighbour] @ W[tap]``
over the taps (missing neighbours read a zero row). Taps along z are skipped
when the whole batch has grid z = 0 (they can have no neighbour, so this is exact).

On CUDA, when ``spconv.pytorch`` imports, spconv's SubMConv3d runs with this
module's weights; its result is compared once per process against the pure
path and spconv is dropped (with a warning) if they disagree.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .point import Point, voxel_key
from .serialization import DEPTH


@functools.cache
def spconv_available() -> bool:
    """Whether ``spconv.pytorch`` imports (CPU-only wheels import but cannot run)."""
    try:
        import spconv.pytorch  # noqa: F401
    except Exception:
        return False
    return True


def use_spconv(device: torch.device | str) -> bool:
    """The spconv path runs only for CUDA tensors and only when spconv imports."""
    return torch.device(device).type == "cuda" and spconv_available()


def tap_index(dx: int, dy: int, dz: int, kernel_size: int) -> int:
    """Row of the [k**3, C_in, C_out] weight for the tap reading the voxel at offset (dx, dy, dz)."""
    r = kernel_size // 2
    return ((dx + r) * kernel_size + (dy + r)) * kernel_size + (dz + r)


@dataclass
class NeighbourMap:
    """Neighbours of every active site for the taps of one kernel size.

    taps: [T] int64 weight rows, ordered so that taps[T-1-t] is the opposite offset of taps[t].
    index: [N, T] int64, the site at grid + offset(taps[t]) in the same cloud, or N when inactive.
    """

    taps: Tensor
    index: Tensor


def neighbour_map(point: Point, kernel_size: int) -> NeighbourMap:
    """Hash-and-search neighbour map of ``point``'s sites for a k**3 kernel, cached on the point.

    Taps with dz != 0 are left out when the whole batch has grid z = 0 (they have no
    neighbours there, so the convolution is unchanged).
    """
    cache_key = ("subm_map", kernel_size)
    if cache_key in point.cache:
        return point.cache[cache_key]
    grid, batch = point.grid_coord, point.batch
    r = kernel_size // 2
    steps = torch.arange(-r, r + 1, device=grid.device)
    z_steps = steps if int(grid[:, 2].max()) > 0 else steps[r : r + 1]
    offsets = torch.cartesian_prod(steps, steps, z_steps)  # lexicographic: reversed order = negated offsets
    taps = ((offsets[:, 0] + r) * kernel_size + offsets[:, 1] + r) * kernel_size + offsets[:, 2] + r
    keys = voxel_key(grid, batch)
    sorted_keys, perm = torch.sort(keys)
    limit = 1 << DEPTH
    nb = grid[:, None, :] + offsets[None, :, :]
    inside = ((nb >= 0) & (nb < limit)).all(dim=2)
    nkey = voxel_key(nb.clamp(0, limit - 1).view(-1, 3), batch.repeat_interleave(offsets.shape[0]))
    pos = torch.searchsorted(sorted_keys, nkey).clamp_(max=keys.numel() - 1)
    found = inside.view(-1) & (sorted_keys[pos] == nkey)
    index = torch.where(found, perm[pos], keys.numel()).view(-1, offsets.shape[0])
    point.cache[cache_key] = NeighbourMap(taps=taps, index=index)
    return point.cache[cache_key]


class _GatherConv(torch.autograd.Function):
    """out[i] = sum_t feat[index[i, t]] @ weight[taps[t]] (rows with index N read zeros).

    Backward uses the same neighbour map with the taps reversed (the adjoint of a
    submanifold conv is the conv with the flipped kernel), so neither pass scatters.
    """

    @staticmethod
    def forward(ctx, feat: Tensor, weight: Tensor, index: Tensor, taps: Tensor) -> Tensor:
        ctx.save_for_backward(feat, weight, index, taps)
        padded = torch.cat([feat, feat.new_zeros(1, feat.shape[1])])
        w = weight[taps]
        out = padded[index[:, 0]] @ w[0]
        for t in range(1, taps.numel()):
            out.addmm_(padded[index[:, t]], w[t])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        feat, weight, index, taps = ctx.saved_tensors
        grad_feat = grad_weight = None
        n_taps = taps.numel()
        g_padded = torch.cat([grad_out, grad_out.new_zeros(1, grad_out.shape[1])])
        if ctx.needs_input_grad[0]:
            w_t = weight[taps.flip(0)].transpose(1, 2)
            grad_feat = g_padded[index[:, 0]] @ w_t[0]
            for t in range(1, n_taps):
                grad_feat.addmm_(g_padded[index[:, t]], w_t[t])
        if ctx.needs_input_grad[1]:
            padded = torch.cat([feat, feat.new_zeros(1, feat.shape[1])])
            grad_weight = torch.zeros_like(weight)
            for t in range(n_taps):
                grad_weight[taps[t]] = padded[index[:, t]].t() @ grad_out
        return grad_feat, grad_weight, None, None


def subm_conv_torch(feat: Tensor, point: Point, weight: Tensor, bias: Tensor | None, kernel_size: int) -> Tensor:
    """Pure-PyTorch submanifold conv. feat [N, C_in], weight [k**3, C_in, C_out] -> [N, C_out]."""
    nmap = neighbour_map(point, kernel_size)
    out = _GatherConv.apply(feat, weight, nmap.index, nmap.taps)
    return out if bias is None else out + bias


@functools.cache
def _spconv_module(in_channels: int, out_channels: int, kernel_size: int, bias: bool, device: torch.device) -> nn.Module:
    """A spconv SubMConv3d used only as a function of externally supplied weights."""
    import spconv.pytorch as spconv

    conv = spconv.SubMConv3d(in_channels, out_channels, kernel_size, bias=bias, indice_key=f"subm{kernel_size}")
    return conv.to(device).requires_grad_(False)


class SubMConv3d(nn.Module):
    """Submanifold sparse conv with a cubic kernel; weight [k**3, C_in, C_out], tap order (x, y, z)."""

    _spconv_layout: str | None = None  # process-wide: "direct", "flipped" or "off" once checked

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        taps = kernel_size**3
        self.weight = nn.Parameter(torch.empty(taps, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        bound = 1.0 / math.sqrt(in_channels * taps)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, feat: Tensor, point: Point) -> Tensor:
        """feat [N, C_in] on the sites of ``point`` -> [N, C_out]."""
        if use_spconv(feat.device) and SubMConv3d._spconv_layout != "off":
            return self._forward_spconv(feat, point)
        return subm_conv_torch(feat, point, self.weight, self.bias, self.kernel_size)

    def _spconv_weight(self, layout: str, target_shape: torch.Size) -> Tensor:
        k = self.kernel_size
        w = self.weight.view(k, k, k, self.in_channels, self.out_channels)
        if layout == "flipped":
            w = w.flip(0, 1, 2)
        if target_shape == w.shape:
            return w
        return w.permute(4, 0, 1, 2, 3)  # spconv's default KRSC layout [C_out, k, k, k, C_in]

    def _forward_spconv(self, feat: Tensor, point: Point) -> Tensor:
        import spconv.pytorch as spconv

        key = ("spconv_tensor",)
        if key not in point.cache:
            indices = torch.cat([point.batch[:, None], point.grid_coord], dim=1).int()
            shape = (point.grid_coord.max(dim=0).values + 1).tolist()
            point.cache[key] = spconv.SparseConvTensor(feat, indices, shape, point.num_clouds)
        sp = point.cache[key].replace_feature(feat)
        conv = _spconv_module(self.in_channels, self.out_channels, self.kernel_size, self.bias is not None, feat.device)

        def run(layout: str) -> Tensor:
            params = {"weight": self._spconv_weight(layout, conv.weight.shape)}
            if self.bias is not None:
                params["bias"] = self.bias
            return torch.func.functional_call(conv, params, (sp,)).features

        if SubMConv3d._spconv_layout is None:
            reference = subm_conv_torch(feat, point, self.weight, self.bias, self.kernel_size)
            tol = 1e-2 * float(reference.abs().max()) + 1e-4
            for layout in ("direct", "flipped"):
                with torch.no_grad():
                    ok = bool(((run(layout) - reference).abs() <= tol).all())
                if ok:
                    SubMConv3d._spconv_layout = layout
                    break
            else:
                SubMConv3d._spconv_layout = "off"
                warnings.warn("spconv disagrees with the pure-PyTorch sparse conv; using the pure path")
                return reference
        return run(SubMConv3d._spconv_layout)
