"""Submanifold sparse 3D convolution on a voxelised :class:`~ptv3.point.Point`.

Submanifold: outputs exist only at the active (occupied) voxels and read only
active voxels, so the sparsity pattern is preserved. Several points may share a
voxel (every latent stays a token): the centre tap reads the point itself, and every
other tap reads every point of the site at its offset, i.e.

    out_i = feat_i @ W_0 + sum over taps t != 0, over points j of i's cloud with voxel(j) = voxel(i) + t, of feat_j @ W_t

so points sharing a voxel see the same neighbourhood but keep their own features (were
voxel-mates centre neighbours too, they would leave the conv as identical tokens). This is
computed exactly by convolving the per-site feature sums and replacing, for each point,
its site's sum in the centre tap by its own feature.

The pure-PyTorch path hashes (cloud, voxel) into int64 keys, finds every kernel
tap's neighbour sites by ``torch.searchsorted`` on the sorted keys, and for each
tap gathers the neighbours' features, multiplies them by that tap's weight and
``index_add_``s the result into the output rows. Taps along z are skipped when
the whole batch has grid z = 0 (they can have no neighbour, so this is exact).

On CUDA, when ``spconv.pytorch`` imports, spconv's SubMConv3d runs on the same
site sums with this module's weights (and the same centre-tap correction); its result is compared once per process
against the pure path and spconv is dropped (with a warning) if they disagree.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .point import Point, split_voxel_key, voxel_key
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
class Sites:
    """The distinct (cloud, voxel) sites of a point batch.

    grid_coord: [M, 3] int64 and batch: [M] int64 of every site.
    of_point: [N] int64 site of every point, or None when no two points share a voxel
    (the sites are then the points, in point order).
    sorted_keys: [M] int64 sorted :func:`~ptv3.point.voxel_key` of the sites; perm: [M] their sites.
    """

    grid_coord: Tensor
    batch: Tensor
    of_point: Tensor | None
    sorted_keys: Tensor
    perm: Tensor

    def sum(self, feat: Tensor) -> Tensor:
        """[N, C] point features -> [M, C] sum over the points of every site."""
        if self.of_point is None:
            return feat
        return feat.new_zeros(self.grid_coord.shape[0], feat.shape[1]).index_add_(0, self.of_point, feat)

    def gather(self, values: Tensor) -> Tensor:
        """[M, C] site values -> [N, C] the value of every point's site."""
        return values if self.of_point is None else values.index_select(0, self.of_point)

    def to_points(self, site_out: Tensor, feat: Tensor, site_feat: Tensor, centre_weight: Tensor) -> Tensor:
        """[N, C_out]: each point's site result with the centre tap reading the point alone.

        site_out [M, C_out]: the conv of the site sums ``site_feat`` [M, C_in] (its centre tap read
        the whole site); feat [N, C_in]; centre_weight [C_in, C_out]. Adds (feat - site sum) @ W_0.
        """
        if self.of_point is None:
            return site_out
        return self.gather(site_out) + (feat - self.gather(site_feat)) @ centre_weight


def voxel_sites(point: Point) -> Sites:
    """The distinct sites of ``point``, cached on the point."""
    if "sites" in point.cache:
        return point.cache["sites"]
    sorted_keys, perm = torch.sort(voxel_key(point.grid_coord, point.batch))
    new = torch.ones_like(sorted_keys, dtype=torch.bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    if bool(new.all()):
        sites = Sites(point.grid_coord, point.batch, None, sorted_keys, perm)
    else:
        of_point = torch.empty_like(perm).scatter_(0, perm, torch.cumsum(new, 0) - 1)
        keys = sorted_keys[new]
        grid, batch = split_voxel_key(keys)
        sites = Sites(grid, batch, of_point, keys, torch.arange(keys.numel(), device=keys.device))
    point.cache["sites"] = sites
    return sites


@dataclass
class NeighbourMap:
    """Active (output, input) site pairs of every non-centre kernel tap of one kernel size.

    taps[j]: weight row of the j-th tap with any pair; out_idx[j], in_idx[j]: [E_j] int64
    indices into the :class:`Sites` with grid[in] = grid[out] + offset(taps[j]) in the same
    cloud. Within a tap each site occurs at most once on either side. The centre tap (every
    site with itself) is implicit.
    """

    taps: list[int]
    out_idx: list[Tensor]
    in_idx: list[Tensor]


def neighbour_map(point: Point, kernel_size: int) -> NeighbourMap:
    """Hash-and-search neighbour map of ``point``'s sites for a k**3 kernel, cached on the point.

    Taps with dz != 0 are left out when the whole batch has grid z = 0 (they have no
    neighbours there, so the convolution is unchanged).
    """
    cache_key = ("subm_map", kernel_size)
    if cache_key in point.cache:
        return point.cache[cache_key]
    sites = voxel_sites(point)
    grid, batch, sorted_keys = sites.grid_coord, sites.batch, sites.sorted_keys
    r = kernel_size // 2
    z_range = range(-r, r + 1) if int(grid[:, 2].max()) > 0 else range(1)
    limit = 1 << DEPTH
    nmap = NeighbourMap(taps=[], out_idx=[], in_idx=[])
    for dx in range(-r, r + 1):
        for dy in range(-r, r + 1):
            for dz in z_range:
                if dx == dy == dz == 0:
                    continue
                nb = grid + torch.tensor([dx, dy, dz], device=grid.device)
                inside = ((nb >= 0) & (nb < limit)).all(dim=1)
                nkey = voxel_key(nb.clamp(0, limit - 1), batch)
                pos = torch.searchsorted(sorted_keys, nkey).clamp_(max=sorted_keys.numel() - 1)
                out_idx = torch.nonzero(inside & (sorted_keys[pos] == nkey)).flatten()
                if out_idx.numel():
                    nmap.taps.append(tap_index(dx, dy, dz, kernel_size))
                    nmap.out_idx.append(out_idx)
                    nmap.in_idx.append(sites.perm[pos[out_idx]])
    point.cache[cache_key] = nmap
    return nmap


class _SubmConv(torch.autograd.Function):
    """On sites: out = feat @ W[centre] + sum_j index_add(out_idx[j], feat[in_idx[j]] @ W[taps[j]]).

    The backward reuses the same pairs (gather, matmul, index_add), which is cheaper than
    autograd's generic scatter for the gathers.
    """

    @staticmethod
    def forward(ctx, feat: Tensor, weight: Tensor, nmap: NeighbourMap, centre: int) -> Tensor:
        ctx.save_for_backward(feat, weight)
        ctx.nmap, ctx.centre = nmap, centre
        out = feat @ weight[centre]
        for tap, out_idx, in_idx in zip(nmap.taps, nmap.out_idx, nmap.in_idx):
            out.index_add_(0, out_idx, feat[in_idx] @ weight[tap])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        feat, weight = ctx.saved_tensors
        nmap, centre = ctx.nmap, ctx.centre
        grad_feat = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_feat = grad_out @ weight[centre].t()
            for tap, out_idx, in_idx in zip(nmap.taps, nmap.out_idx, nmap.in_idx):
                grad_feat.index_add_(0, in_idx, grad_out[out_idx] @ weight[tap].t())
        if ctx.needs_input_grad[1]:
            grad_weight = torch.zeros_like(weight)
            grad_weight[centre] = feat.t() @ grad_out
            for tap, out_idx, in_idx in zip(nmap.taps, nmap.out_idx, nmap.in_idx):
                grad_weight[tap] = feat[in_idx].t() @ grad_out[out_idx]
        return grad_feat, grad_weight, None, None


def subm_conv_torch(feat: Tensor, point: Point, weight: Tensor, bias: Tensor | None, kernel_size: int) -> Tensor:
    """Pure-PyTorch submanifold conv. feat [N, C_in], weight [k**3, C_in, C_out] -> [N, C_out].

    Points sharing a voxel are summed into their site, and take their site's result with the
    centre tap reading their own feature (module docstring).
    """
    sites, nmap = voxel_sites(point), neighbour_map(point, kernel_size)
    device_type = feat.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else feat.dtype
    centre = tap_index(0, 0, 0, kernel_size)
    feat, weight = feat.to(dtype), weight.to(dtype)
    site_feat = sites.sum(feat)
    out = sites.to_points(_SubmConv.apply(site_feat, weight, nmap, centre), feat, site_feat, weight[centre])
    return out if bias is None else out + bias.to(dtype)


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
        """feat [N, C_in] on the points of ``point`` -> [N, C_out]."""
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

        sites = voxel_sites(point)
        site_feat = sites.sum(feat)
        key = ("spconv_tensor",)
        if key not in point.cache:
            indices = torch.cat([sites.batch[:, None], sites.grid_coord], dim=1).int()
            shape = (sites.grid_coord.max(dim=0).values + 1).tolist()
            point.cache[key] = spconv.SparseConvTensor(site_feat, indices, shape, point.num_clouds)
        sp = point.cache[key].replace_feature(site_feat)
        conv = _spconv_module(self.in_channels, self.out_channels, self.kernel_size, self.bias is not None, feat.device)

        def run(layout: str) -> Tensor:
            params = {"weight": self._spconv_weight(layout, conv.weight.shape)}
            if self.bias is not None:
                params["bias"] = self.bias
            site_out = torch.func.functional_call(conv, params, (sp,)).features
            return sites.to_points(site_out, feat, site_feat, self.weight[tap_index(0, 0, 0, self.kernel_size)])

        if SubMConv3d._spconv_layout is None:
            with torch.no_grad():
                reference = subm_conv_torch(feat, point, self.weight, self.bias, self.kernel_size)
                tol = 1e-2 * float(reference.abs().max()) + 1e-4
                matches = [bool(((run(lay) - reference).abs() <= tol).all()) for lay in ("direct", "flipped")]
            SubMConv3d._spconv_layout = "direct" if matches[0] else "flipped" if matches[1] else "off"
            if SubMConv3d._spconv_layout == "off":
                warnings.warn("spconv disagrees with the pure-PyTorch sparse conv; using the pure path")
                return subm_conv_torch(feat, point, self.weight, self.bias, self.kernel_size)
        return run(SubMConv3d._spconv_layout)
