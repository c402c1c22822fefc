"""PointTransformerV3 end to end: shapes, isolation of clouds, determinism, gradients, bad input."""
import inspect

import pytest
import torch

from ptv3 import Point, PointError, PointTransformerV3
from ptv3.model import Block
from ptv3.point import make_point

SMALL = dict(in_channels=6, enc_depths=(1, 1, 2, 1), enc_channels=(8, 8, 16, 16), enc_num_head=(2, 2, 4, 4),
             enc_patch_size=(5, 5, 5, 5), stride=(2, 2, 2), grid_size=1.0, drop_path=0.0)


def _clouds(counts, channels=6, size=24, seed=0):
    """Clouds of distinct integer pixels (row, col, 0), latents random."""
    g = torch.Generator().manual_seed(seed)
    coords = []
    for n in counts:
        flat = torch.randperm(size * size, generator=g)[:n]
        coords.append(torch.stack([flat // size, flat % size, torch.zeros_like(flat)], 1).float())
    coord = torch.cat(coords)
    return {"coord": coord, "feat": torch.randn(coord.shape[0], channels, generator=g),
            "offset": torch.tensor(counts).cumsum(0)}


def _model(**kw):
    torch.manual_seed(0)
    return PointTransformerV3(**{**SMALL, **kw})


def _per_cloud(out: Point, i: int) -> torch.Tensor:
    start = 0 if i == 0 else int(out.offset[i - 1])
    return out.feat[start:int(out.offset[i])]


def test_defaults_are_arc_config():
    defaults = {k: v.default for k, v in inspect.signature(PointTransformerV3).parameters.items()}
    assert defaults["in_channels"] == 32 and defaults["enc_depths"] == (1, 1, 2, 1)
    assert defaults["enc_channels"] == (64, 64, 64, 64) and defaults["enc_num_head"] == (8, 16, 32, 32)
    assert defaults["enc_patch_size"] == (25, 25, 25, 25) and defaults["stride"] == (2, 2, 2)
    assert defaults["grid_size"] == 2.0 and defaults["mlp_ratio"] == 2 and defaults["drop_path"] == 0.3
    assert defaults["order"] == ("z", "z-trans", "hilbert", "hilbert-trans") and defaults["shuffle_orders"]
    model = PointTransformerV3()
    assert model.out_channels == 64
    assert 1_000_000 < sum(p.numel() for p in model.parameters()) < 1_040_000  # ~1.02 M as in the original
    assert model.stages[2][0].attn.pos_bnd == 9
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for stage in model.stages for b in stage]
    assert rates == pytest.approx([0.0, 0.075, 0.15, 0.225, 0.3])


def test_forward_shapes():
    model = _model().eval()
    out = model(_clouds([40, 13, 57]))
    assert out.feat.shape == (int(out.offset[-1]), model.out_channels)
    assert out.offset.shape == (3,) and torch.all(out.counts() > 0)
    assert torch.isfinite(out.feat).all()


def test_clouds_do_not_leak_into_each_other():
    model = _model().eval()
    a = _clouds([31, 21, 44], seed=1)
    b = _clouds([31, 35, 44], seed=2)
    # keep clouds 0 and 2 of batch a, replace cloud 1 (coords, latents and size) with b's
    mixed = {k: torch.cat([a[k][:31], b[k][31:66], a[k][52:]]) for k in ("coord", "feat")}
    mixed["offset"] = torch.tensor([31, 66, 110])
    with torch.no_grad():
        out_a, out_m = model(a), model(mixed)
    torch.testing.assert_close(_per_cloud(out_a, 0), _per_cloud(out_m, 0))
    torch.testing.assert_close(_per_cloud(out_a, 2), _per_cloud(out_m, 2))
    assert not torch.allclose(_per_cloud(out_a, 1).mean(0), _per_cloud(out_m, 1).mean(0))


def test_cloud_result_independent_of_batch_and_translation():
    model = _model().eval()
    batch = _clouds([3, 50, 9], seed=4)  # a tiny cloud shares the batch
    alone = {"coord": batch["coord"][3:53] + torch.tensor([37.3, -5.1, 0.0]), "feat": batch["feat"][3:53],
             "offset": torch.tensor([50])}
    with torch.no_grad():
        torch.testing.assert_close(_per_cloud(model(batch), 1), model(alone).feat, rtol=1e-5, atol=1e-5)


def test_eval_is_deterministic_and_training_shuffles_orders():
    model = _model()
    data = _clouds([40, 33], seed=5)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(data).feat, model(data).feat, rtol=0, atol=0)
    assert model._orders() == model.order
    model.train()
    torch.manual_seed(0)
    seen = {model._orders() for _ in range(20)}
    assert len(seen) > 1 and all(sorted(o) == sorted(model.order) for o in seen)
    assert _model(shuffle_orders=False).train()._orders() == model.order


def test_gradients_reach_every_parameter():
    model = _model().train()
    out = model(_clouds([30, 25, 41, 18], seed=6))
    pooled = torch.stack([_per_cloud(out, i).mean(0) for i in range(4)])
    pooled.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_tiny_clouds_and_two_column_coords():
    model = _model(enc_patch_size=(25, 25, 25, 25))
    data = _clouds([1, 2, 3, 30], seed=7)
    model.train()
    out = model(data)
    assert out.offset.shape == (4,) and torch.isfinite(out.feat).all()
    model.eval()
    flat = {**data, "coord": data["coord"][:, :2]}
    with torch.no_grad():
        torch.testing.assert_close(model(flat).feat, model(data).feat)


def _dup_cloud():
    """One cloud of 30 distinct pixels plus 2 extra points sharing voxels (grid 1) with points 0 and 1."""
    data = _clouds([30], seed=13)
    extra = data["coord"][:2] + torch.tensor([0.4, 0.3, 0.0])
    g = torch.Generator().manual_seed(14)
    return {"coord": torch.cat([data["coord"], extra]),
            "feat": torch.cat([data["feat"], torch.randn(2, 6, generator=g)]), "offset": torch.tensor([32])}


def test_points_sharing_a_voxel_stay_tokens_through_stage_1():
    model = _model(enc_depths=(2,), enc_channels=(8,), enc_num_head=(2,), enc_patch_size=(5,), stride=()).eval()
    data = _dup_cloud()
    point = make_point(data, 1.0)
    assert point.feat.shape[0] == 32 and torch.equal(point.grid_coord[30:], point.grid_coord[:2])
    with torch.no_grad():
        out = model(data)
        dropped = model({"coord": data["coord"][:31], "feat": data["feat"][:31], "offset": torch.tensor([31])})
    assert out.offset.tolist() == [32] and out.feat.shape == (32, 8)
    # the second point in voxel 1 counts: removing it changes its voxel-mate's token
    assert not torch.allclose(out.feat[1], dropped.feat[1], atol=1e-4)


def test_voxel_mates_keep_their_own_features():
    """Two latents in one voxel leave the stem as different tokens; swapping their latents swaps the tokens."""
    model = _model(enc_depths=(1,), enc_channels=(8,), enc_num_head=(2,), enc_patch_size=(5,), stride=()).eval()
    data = _dup_cloud()
    swapped = {**data, "feat": data["feat"][[30, *range(1, 30), 0, 31]]}  # points 0 and 30 share a voxel
    with torch.no_grad():
        stem = model.embedding(make_point(data, 1.0).serialize(model.order))
        stem_swapped = model.embedding(make_point(swapped, 1.0).serialize(model.order))
    assert not torch.allclose(stem[0], stem[30], atol=1e-4)
    torch.testing.assert_close(stem_swapped[[0, 30]], stem[[30, 0]])


def test_a_repeated_latent_is_not_averaged_away():
    model = _model().eval()
    data = _clouds([30], seed=15)
    twice = {"coord": torch.cat([data["coord"], data["coord"][:1]]),
             "feat": torch.cat([data["feat"], data["feat"][:1]]), "offset": torch.tensor([31])}
    with torch.no_grad():  # merging by the mean would make these equal
        assert not torch.allclose(model(data).feat.mean(0), model(twice).feat.mean(0), atol=1e-4)


@pytest.mark.parametrize("shift", [[1.0, 0.0], [0.5, 3.0], [-4.3, 2.0]])
def test_frame_origin_sees_shifts_cloud_origin_does_not(shift):
    data = _clouds([40, 25], seed=16)
    moved = {**data, "coord": data["coord"] + torch.tensor([*shift, 0.0])}
    cell = {**data, "coord": data["coord"] + torch.tensor([16.0, -8.0, 0.0])}  # grid 1 x strides 2*2*2 = 8
    frame, cloud = _model(grid_origin="frame").eval(), _model().eval()
    with torch.no_grad():
        torch.testing.assert_close(cloud(moved).feat, cloud(data).feat, rtol=0, atol=0)
        a, b = frame(data), frame(moved)
        assert a.feat.shape != b.feat.shape or not torch.allclose(a.feat, b.feat, atol=1e-4)
        torch.testing.assert_close(frame(cell).feat, a.feat, rtol=0, atol=0)


def test_bad_grid_origin_is_rejected():
    with pytest.raises(ValueError, match="grid_origin"):
        _model(grid_origin="image")


def test_cpe_uses_the_block_input_features():
    point = make_point(_clouds([20], channels=8, seed=8), grid_size=1.0).serialize(("z",))
    block = Block(8, 2, 5, order_index=0, mlp_ratio=2.0).eval()
    feat = torch.randn(point.feat.shape)
    with torch.no_grad():
        x = feat + block.cpe_proj(block.cpe_conv(feat, point))
        x = x + block.attn(block.norm1(x), point)
        expected = x + block.mlp(block.norm2(x))
        torch.testing.assert_close(block(feat, point), expected)


def test_large_cloud_runs():
    model = _model().eval()
    with torch.no_grad():
        out = model(_clouds([9000], size=120, seed=9))
    assert out.offset.tolist() == [out.feat.shape[0]] and out.feat.shape[0] < 9000


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(offset=torch.tensor([20, 20, 45])), "empty cloud"),
    (lambda d: d["feat"].__setitem__((3, 1), float("nan")), "feat contains NaN"),
    (lambda d: d["coord"].__setitem__((0, 0), float("inf")), "coord contains NaN"),
    (lambda d: d.update(offset=torch.tensor([20, 40])), "does not match the number of points"),
    (lambda d: d.update(feat=d["feat"][:, :4]), "channels"),
    (lambda d: d.update(coord=d["coord"][:, 0]), "coord must be"),
    (lambda d: d.update(offset=torch.tensor([20.0, 45.0])), "offset must be"),
    (lambda d: d.update(batch=torch.zeros(45, dtype=torch.long)), "batch does not match"),
])
def test_bad_input_raises_clear_error(change, message):
    data = _clouds([20, 25], seed=10)
    change(data)
    with pytest.raises(PointError, match=message):
        _model().eval()(data)
    assert issubclass(PointError, ValueError)


def test_grid_too_fine_is_an_error():
    with pytest.raises(PointError, match="grid too fine"):
        _model(grid_size=1e-4).eval()(_clouds([20], seed=11))


def test_runs_under_bfloat16_autocast():
    model = _model().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_clouds([30, 41, 5], seed=12))
    assert torch.isfinite(out.feat).all()
    out.feat.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
