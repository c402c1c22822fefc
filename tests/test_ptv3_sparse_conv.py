"""Pure-PyTorch submanifold sparse convolution against dense convolutions."""
import pytest
import torch
import torch.nn.functional as F

from ptv3.point import make_point
from ptv3.sparse_conv import (SubMConv3d, neighbour_map, spconv_available, subm_conv_torch, tap_index, use_spconv,
                               voxel_sites)


def _dense_to_points(dense: torch.Tensor, active: torch.Tensor):
    """dense [C, H, W], active [H, W] bool -> Point with one point per active pixel (x=row, y=col, z=0)."""
    rows, cols = torch.nonzero(active, as_tuple=True)
    coord = torch.stack([rows, cols, torch.zeros_like(rows)], dim=1).float()
    feat = dense[:, rows, cols].t().contiguous()
    # pin the per-cloud grid origin at (0, 0) with a given grid_coord
    point = make_point({"coord": coord, "feat": feat, "offset": torch.tensor([len(rows)]),
                        "grid_coord": coord.long()}, grid_size=1.0)
    return point


def _conv_from_dense(weight2d: torch.Tensor, bias: torch.Tensor) -> SubMConv3d:
    c_out, c_in, k, _ = weight2d.shape
    conv = SubMConv3d(c_in, c_out, k, bias=True)
    with torch.no_grad():
        conv.weight.normal_()  # z taps get junk: they must never be used on flat input
        r = k // 2
        for a in range(k):
            for b in range(k):
                conv.weight[tap_index(a - r, b - r, 0, k)] = weight2d[:, :, a, b].t()
        conv.bias.copy_(bias)
    return conv


@pytest.mark.parametrize("k", [3, 5])
def test_full_grid_equals_conv2d(k):
    g = torch.Generator().manual_seed(k)
    dense = torch.randn(4, 7, 9, generator=g)
    weight, bias = torch.randn(6, 4, k, k, generator=g), torch.randn(6, generator=g)
    point = _dense_to_points(dense, torch.ones(7, 9, dtype=torch.bool))
    out = _conv_from_dense(weight, bias)(point.feat, point)
    ref = F.conv2d(dense[None], weight, bias, padding=k // 2)[0]
    rows, cols = point.grid_coord[:, 0], point.grid_coord[:, 1]
    torch.testing.assert_close(out, ref[:, rows, cols].t(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [3, 5])
def test_sparse_pattern_equals_masked_conv2d_with_gradients(k):
    g = torch.Generator().manual_seed(10 + k)
    active = torch.rand(12, 10, generator=g) < 0.35
    dense = torch.randn(3, 12, 10, generator=g) * active
    weight, bias = torch.randn(5, 3, k, k, generator=g), torch.randn(5, generator=g)
    point = _dense_to_points(dense, active)
    conv = _conv_from_dense(weight, bias)
    feat = point.feat.clone().requires_grad_(True)
    out = conv(feat, point)

    dense_in = dense.clone().requires_grad_(True)
    w2d = weight.clone().requires_grad_(True)
    ref_full = F.conv2d((dense_in * active)[None], w2d, bias, padding=k // 2)[0]
    rows, cols = point.grid_coord[:, 0], point.grid_coord[:, 1]
    ref = ref_full[:, rows, cols].t()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)

    upstream = torch.randn(out.shape, generator=g)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(feat.grad, dense_in.grad[:, rows, cols].t(), rtol=1e-4, atol=1e-4)
    r = k // 2
    for a in range(k):
        for b in range(k):
            torch.testing.assert_close(conv.weight.grad[tap_index(a - r, b - r, 0, k)], w2d.grad[:, :, a, b].t(),
                                       rtol=1e-4, atol=1e-4)
    assert conv.weight.grad[tap_index(0, 0, 1, k)].abs().sum() == 0


def test_3d_sparse_equals_masked_conv3d():
    g = torch.Generator().manual_seed(3)
    active = torch.rand(5, 6, 4, generator=g) < 0.4
    dense = torch.randn(2, 5, 6, 4, generator=g) * active
    idx = torch.nonzero(active)
    point = make_point({"coord": idx.float(), "feat": dense[:, idx[:, 0], idx[:, 1], idx[:, 2]].t().contiguous(),
                        "offset": torch.tensor([len(idx)]), "grid_coord": idx}, grid_size=1.0)
    conv = SubMConv3d(2, 3, 3, bias=False)
    weight3d = conv.weight.detach().view(3, 3, 3, 2, 3).permute(4, 3, 0, 1, 2)
    out = conv(point.feat, point)
    ref = F.conv3d(dense[None], weight3d, padding=1)[0]
    g3 = point.grid_coord
    torch.testing.assert_close(out, ref[:, g3[:, 0], g3[:, 1], g3[:, 2]].t(), rtol=1e-4, atol=1e-4)
    taps = neighbour_map(point, 3).taps
    assert len(taps) == 26 and tap_index(0, 0, 0, 3) not in taps  # z taps in use, centre implicit


def test_clouds_do_not_see_each_other():
    coord = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0]])
    feat = torch.tensor([[1.0], [2.0], [10.0], [20.0]])
    point = make_point({"coord": coord, "feat": feat, "offset": torch.tensor([2, 4])}, grid_size=1.0)
    nmap = neighbour_map(point, 3)
    assert nmap.taps == [tap_index(-1, 0, 0, 3), tap_index(1, 0, 0, 3)]  # flat batch: no z taps
    for out_idx, in_idx in zip(nmap.out_idx, nmap.in_idx):
        assert torch.equal(voxel_sites(point).batch[out_idx], voxel_sites(point).batch[in_idx]) and out_idx.numel() == 2
    conv = SubMConv3d(1, 1, 3, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    assert conv(point.feat, point).flatten().tolist() == [3.0, 3.0, 30.0, 30.0]


def test_spconv_dispatch_needs_cuda_and_import(monkeypatch):
    import ptv3.sparse_conv as sc

    monkeypatch.setattr(sc, "spconv_available", lambda: True)
    assert not use_spconv(torch.device("cpu"))
    assert use_spconv(torch.device("cuda"))
    monkeypatch.setattr(sc, "spconv_available", lambda: False)
    assert not use_spconv("cuda")


def test_spconv_availability_is_an_import_check():
    try:
        import spconv.pytorch  # noqa: F401
        importable = True
    except Exception:
        importable = False
    assert spconv_available() == importable


def _fake_spconv(flip: bool = False, junk: float = 0.0):
    """A stand-in for ``spconv.pytorch`` computing a dense conv3d on the scattered grid."""
    import types

    class SparseConvTensor:
        def __init__(self, features, indices, spatial_shape, batch_size):
            self.features, self.indices = features, indices
            self.spatial_shape, self.batch_size = spatial_shape, batch_size

        def replace_feature(self, features):
            return SparseConvTensor(features, self.indices, self.spatial_shape, self.batch_size)

    class SubMConv3d(torch.nn.Module):
        def __init__(self, c_in, c_out, k, bias=True, indice_key=None):
            super().__init__()
            self.k = k
            self.weight = torch.nn.Parameter(torch.zeros(c_out, k, k, k, c_in))
            self.bias = torch.nn.Parameter(torch.zeros(c_out)) if bias else None

        def forward(self, sp):
            idx = sp.indices.long()
            dense = sp.features.new_zeros(sp.batch_size, sp.features.shape[1], *sp.spatial_shape)
            dense[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]] = sp.features
            w = self.weight.permute(0, 4, 1, 2, 3)
            out = F.conv3d(dense, w.flip(2, 3, 4) if flip else w, self.bias, padding=self.k // 2)
            return sp.replace_feature(out[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]] + junk)

    return types.SimpleNamespace(SparseConvTensor=SparseConvTensor, SubMConv3d=SubMConv3d)


@pytest.mark.parametrize("flip,junk,layout", [(False, 0.0, "direct"), (True, 0.0, "flipped"), (False, 1.0, "off")])
def test_spconv_path_checks_itself_against_the_pure_path(monkeypatch, flip, junk, layout):
    import sys
    import types

    import ptv3.sparse_conv as sc

    fake = _fake_spconv(flip, junk)
    monkeypatch.setitem(sys.modules, "spconv", types.SimpleNamespace(pytorch=fake))
    monkeypatch.setitem(sys.modules, "spconv.pytorch", fake)
    monkeypatch.setattr(sc, "use_spconv", lambda device: True)
    monkeypatch.setattr(SubMConv3d, "_spconv_layout", None)
    sc._spconv_module.cache_clear()
    g = torch.Generator().manual_seed(4)
    idx = torch.nonzero(torch.rand(2, 5, 6, 3, generator=g) < 0.5)
    point = make_point({"coord": idx[:, 1:].float(), "feat": torch.randn(len(idx), 3, generator=g),
                        "offset": torch.bincount(idx[:, 0]).cumsum(0), "grid_coord": idx[:, 1:]}, grid_size=1.0)
    conv = SubMConv3d(3, 4, 3)
    expected = sc.subm_conv_torch(point.feat, point, conv.weight, conv.bias, 3)
    with pytest.warns(UserWarning) if layout == "off" else _no_warning():
        out = conv(point.feat, point)
    assert SubMConv3d._spconv_layout == layout
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    sc._spconv_module.cache_clear()


def _no_warning():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def ctx():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield

    return ctx()


def _duplicate_point(flat: bool, seed: int, counts=(40, 25), extent=4, channels=3):
    """Clouds with several points per voxel (grid_coord given), points not grouped by voxel."""
    g = torch.Generator().manual_seed(seed)
    n = sum(counts)
    grid = torch.randint(0, extent, (n, 3), generator=g)
    if flat:
        grid[:, 2] = 0
    return make_point({"coord": grid.float(), "feat": torch.randn(n, channels, generator=g),
                       "offset": torch.tensor(counts).cumsum(0), "grid_coord": grid}, grid_size=1.0)


def _brute_force(feat, point, weight, bias, k):
    """out_i = bias + sum over j of i's cloud with |grid_j - grid_i| <= k // 2 of feat_j @ W[tap(grid_j - grid_i)],
    where a point of i's own voxel is read only if it is i itself."""
    r = k // 2
    d = point.grid_coord[None, :, :] - point.grid_coord[:, None, :]  # [i, j, 3]: offset of j seen from i
    own = torch.eye(d.shape[0], dtype=torch.bool) | (d != 0).any(dim=2)
    pair = (point.batch[:, None] == point.batch[None, :]) & (d.abs() <= r).all(dim=2) & own
    tap = (((d[..., 0] + r) * k + d[..., 1] + r) * k + d[..., 2] + r).clamp(0, k**3 - 1)
    out = torch.einsum("ijc,ijcd->id", pair[..., None] * feat[None], weight[tap])
    return out if bias is None else out + bias


@pytest.mark.parametrize("flat", [True, False])
@pytest.mark.parametrize("k", [3, 5])
def test_duplicate_sites_equal_brute_force_with_gradients(k, flat):
    point = _duplicate_point(flat, seed=k + 10 * flat)
    assert torch.unique(point.grid_coord + 10 * point.batch[:, None], dim=0).shape[0] < point.feat.shape[0]
    conv = SubMConv3d(3, 4, k, bias=True)
    feat = point.feat.clone().requires_grad_(True)
    out = conv(feat, point)
    ref_feat = point.feat.clone().requires_grad_(True)
    ref_weight = conv.weight.detach().clone().requires_grad_(True)
    ref = _brute_force(ref_feat, point, ref_weight, conv.bias.detach(), k)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(k))
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(feat.grad, ref_feat.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(conv.weight.grad, ref_weight.grad, rtol=1e-4, atol=1e-5)


def test_duplicate_sites_gradcheck():
    point = _duplicate_point(flat=True, seed=3, counts=(9, 6), extent=3, channels=2)
    feat = point.feat.double().requires_grad_(True)
    weight = torch.randn(27, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w: subm_conv_torch(f, point, w, None, 3), (feat, weight))


def test_voxel_mates_share_neighbours_but_not_the_centre_tap():
    # cloud 0: points 0 and 2 share voxel (0, 0), point 1 is at (1, 0); cloud 1 has the same voxels
    grid = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]])
    point = make_point({"coord": grid.float(), "feat": torch.tensor([[1.0], [10.0], [100.0], [1000.0], [10000.0]]),
                        "offset": torch.tensor([3, 5]), "grid_coord": grid}, grid_size=1.0)
    sites = voxel_sites(point)
    assert sites.grid_coord.shape[0] == 4 and sites.of_point[0] == sites.of_point[2]
    conv = SubMConv3d(1, 1, 3, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[tap_index(0, 0, 0, 3)] = 1.0
        conv.weight[tap_index(1, 0, 0, 3)] = 2.0  # reads the voxel at +x
    assert conv(point.feat, point).flatten().tolist() == [21.0, 10.0, 120.0, 21000.0, 10000.0]


def test_spconv_path_gets_the_site_sums(monkeypatch):
    import sys
    import types

    import ptv3.sparse_conv as sc

    fake = _fake_spconv()  # scatters by assignment: duplicate indices would lose features
    monkeypatch.setitem(sys.modules, "spconv", types.SimpleNamespace(pytorch=fake))
    monkeypatch.setitem(sys.modules, "spconv.pytorch", fake)
    monkeypatch.setattr(sc, "use_spconv", lambda device: True)
    monkeypatch.setattr(SubMConv3d, "_spconv_layout", "direct")
    sc._spconv_module.cache_clear()
    point = _duplicate_point(flat=False, seed=5)
    conv = SubMConv3d(3, 4, 3)
    out = conv(point.feat, point)
    torch.testing.assert_close(out, _brute_force(point.feat, point, conv.weight.detach(), conv.bias.detach(), 3),
                               rtol=1e-4, atol=1e-5)
    sc._spconv_module.cache_clear()
