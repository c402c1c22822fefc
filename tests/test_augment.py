"""Cloud-space augmentations: geometry, counts, ARCMix targets, config errors."""
from __future__ import annotations

import math

import pytest
import torch

from arc.augment import (
    ARCMix,
    AugmentConfigError,
    Flip,
    Mask,
    Noise,
    Push,
    Rotate,
    Shift,
    build_augmentations,
)
from arc.cloud import CloudBatch


def make_batch(counts: list[int], height: int = 16, width: int = 16, z: int = 4, seed: int = 0) -> CloudBatch:
    """Clouds of random integer positions; lat = (cloud id, row, col, point id, ...) to track points."""
    g = torch.Generator().manual_seed(seed)
    b = len(counts)
    n = sum(counts)
    ids = torch.repeat_interleave(torch.arange(b), torch.tensor(counts))
    pos = torch.stack([torch.randint(0, height, (n,), generator=g), torch.randint(0, width, (n,), generator=g)], 1).float()
    lat = torch.zeros(n, z)
    lat[:, 0] = ids.float()
    lat[:, 1:3] = pos
    lat[:, 3] = torch.arange(n).float()
    return CloudBatch(
        pos=pos,
        lat=lat,
        offset=torch.cumsum(torch.tensor(counts), 0),
        label=torch.arange(b) % 10,
        size=torch.tensor([[height, width]] * b),
        index=torch.arange(b),
        colour_mean=torch.zeros(b, 3),
        colour_std=torch.ones(b, 3),
    )


def grid_batch(b: int, height: int, width: int) -> CloudBatch:
    """b clouds that each hold every pixel of an H x W image."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    one = torch.stack([rows.flatten(), cols.flatten()], 1).float()
    k = one.shape[0]
    pos = one.repeat(b, 1)
    ids = torch.repeat_interleave(torch.arange(b), k)
    lat = torch.stack([ids.float(), pos[:, 0], pos[:, 1], torch.arange(b * k).float()], 1)
    return CloudBatch(
        pos=pos,
        lat=lat,
        offset=torch.arange(1, b + 1) * k,
        label=torch.arange(b),
        size=torch.tensor([[height, width]] * b),
        index=torch.arange(b),
        colour_mean=torch.zeros(b, 1),
        colour_std=torch.ones(b, 1),
    )


def single(points: list[tuple[float, float]], height: int = 5, width: int = 5) -> CloudBatch:
    pos = torch.tensor(points, dtype=torch.float32)
    return CloudBatch(
        pos=pos,
        lat=torch.zeros(len(points), 2),
        offset=torch.tensor([len(points)]),
        label=torch.tensor([0]),
        size=torch.tensor([[height, width]]),
        index=torch.tensor([0]),
        colour_mean=torch.zeros(1, 1),
        colour_std=torch.ones(1, 1),
    )


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ geometry


def test_rotate_90_about_centre_turns_counter_clockwise_as_displayed():
    # 5x5 image, centre (2, 2). Right of centre -> above; above -> left; left -> below.
    batch = single([(2, 3), (0, 2), (2, 0), (2, 2)])
    out = Rotate(90, fixed=True)(batch)
    assert torch.allclose(out.pos, torch.tensor([[1.0, 2.0], [2.0, 0.0], [4.0, 2.0], [2.0, 2.0]]), atol=1e-5)
    back = Rotate(-90, fixed=True)(out)
    assert torch.allclose(back.pos, batch.pos, atol=1e-5)


def test_rotate_about_centre_of_non_square_image():
    batch = single([(0, 0)], height=4, width=6)  # centre (1.5, 2.5)
    out = Rotate(180, fixed=True)(batch)
    assert torch.allclose(out.pos, torch.tensor([[3.0, 5.0]]), atol=1e-5)


def test_rotate_90_about_origin():
    batch = single([(0, 1), (3, 0)])
    out = Rotate(90, about="origin", fixed=True)(batch)
    assert torch.allclose(out.pos, torch.tensor([[-1.0, 0.0], [0.0, 3.0]]), atol=1e-5)


def test_random_rotation_keeps_distance_to_centre_and_is_per_cloud():
    batch = make_batch([30, 30, 30])
    out = Rotate(180)(batch, gen(1))
    centre = torch.tensor([7.5, 7.5])
    assert torch.allclose((out.pos - centre).norm(dim=1), (batch.pos - centre).norm(dim=1), atol=1e-4)
    assert not torch.allclose(out.pos, batch.pos)


def test_flip_horizontal_and_vertical_about_centre_and_origin():
    batch = single([(0, 1), (3, 4)], height=4, width=6)
    h = Flip(p=1.0, vertical=False)(batch)
    assert torch.equal(h.pos, torch.tensor([[0.0, 4.0], [3.0, 1.0]]))
    v = Flip(p=1.0, horizontal=False)(batch)
    assert torch.equal(v.pos, torch.tensor([[3.0, 1.0], [0.0, 4.0]]))
    hv = Flip(p=1.0, about="origin")(batch)
    assert torch.equal(hv.pos, torch.tensor([[0.0, -1.0], [-3.0, -4.0]]))


def test_flip_probability_is_per_cloud_and_per_axis():
    batch = make_batch([5] * 400)
    out = Flip(p=0.5)(batch, gen(2))
    ids = batch.batch_ids()
    flipped = (out.pos != batch.pos) | (batch.pos == 7.5)
    per_cloud_axis = torch.zeros(400, 2).index_add_(0, ids, flipped.float()) == 5
    frac = per_cloud_axis.float().mean(0)
    assert torch.all((frac > 0.4) & (frac < 0.6)), frac


def test_shift_moves_each_cloud_rigidly_within_bounds():
    batch = make_batch([10, 20, 5])
    out = Shift(pixels=3.0)(batch, gen(3))
    delta = out.pos - batch.pos
    ids = batch.batch_ids()
    for c in range(3):
        d = delta[ids == c]
        assert torch.allclose(d, d[:1].expand_as(d))
        assert bool((d.abs() <= 3.0).all())
    assert torch.unique(delta.round(decimals=3), dim=0).shape[0] == 3
    assert torch.equal(out.lat, batch.lat)


def test_shift_by_exact_amount_matches_generator_draw():
    batch = make_batch([4, 6])
    out = Shift(pixels=2.0)(batch, gen(4))
    expected = -2.0 + 4.0 * torch.rand((2, 2), generator=gen(4))
    assert torch.allclose(out.pos - batch.pos, expected[batch.batch_ids()])


def test_push_is_per_point_and_bounded():
    batch = make_batch([200, 300])
    out = Push(magnitude=2.0)(batch, gen(5))
    delta = out.pos - batch.pos
    assert bool((delta.abs() <= 2.0).all())
    assert delta.abs().max() > 1.9
    assert torch.unique(delta, dim=0).shape[0] == 500
    assert torch.equal(out.lat, batch.lat) and torch.equal(out.offset, batch.offset)


# ------------------------------------------------------------------ mask / noise


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.9])
def test_mask_keeps_int_fraction_per_cloud_and_pairs_pos_with_lat(fraction):
    counts = [1, 2, 3, 10, 57, 1000]
    batch = make_batch(counts)
    out = Mask(fraction)(batch, gen(6)).validate()
    expected = [max(int((1 - fraction) * k), 1) for k in counts]
    assert out.counts().tolist() == expected
    assert torch.equal(out.lat[:, 1:3], out.pos)  # pairing kept
    assert torch.equal(out.lat[:, 0].long(), out.batch_ids())  # points stay in their cloud
    point_ids = out.lat[:, 3].long()
    assert point_ids.unique().numel() == point_ids.numel()  # no duplicates
    assert torch.equal(batch.lat[point_ids], out.lat)


def test_mask_subset_is_random():
    batch = make_batch([100])
    a = Mask(0.5)(batch, gen(7)).lat[:, 3]
    b = Mask(0.5)(batch, gen(8)).lat[:, 3]
    assert not torch.equal(a, b)


def test_noise_changes_latents_only_with_given_std():
    batch = make_batch([5000, 5000], z=8)
    out = Noise(std=0.01)(batch, gen(9))
    diff = out.lat - batch.lat
    assert abs(float(diff.std()) - 0.01) < 0.0005
    assert torch.equal(out.pos, batch.pos)


def test_per_cloud_probability_leaves_some_clouds_untouched():
    batch = make_batch([4] * 200)
    out = Shift(pixels=3.0, p=0.5)(batch, gen(11))
    moved = torch.zeros(200).index_add_(0, batch.batch_ids(), (out.pos != batch.pos).any(1).float()) > 0
    assert 60 < int(moved.sum()) < 140


# ------------------------------------------------------------------ ARCMix


def _shares(out: CloudBatch, b: int) -> torch.Tensor:
    """[B, B] fraction of points of each destination cloud that came from each source cloud."""
    src = out.lat[:, 0].long()
    m = torch.zeros(b, b).index_put_((out.batch_ids(), src), torch.ones(out.num_points), accumulate=True)
    return m / m.sum(1, keepdim=True)


@pytest.mark.parametrize("variant", ["subset", "box"])
@pytest.mark.parametrize("partner", ["roll", "permute"])
def test_arcmix_label_weight_is_actual_point_share(variant, partner):
    b = 8
    batch = make_batch([20, 35, 50, 3, 80, 12, 60, 41], z=4, seed=1)
    batch.label = torch.arange(b)  # label = cloud id, so the target matrix is the share matrix
    out = ARCMix(num_classes=b, alpha=1.0, variant=variant, partner=partner)(batch, gen(12)).validate()
    assert out.label.shape == (b, b)
    assert torch.allclose(out.label.sum(1), torch.ones(b))
    assert torch.allclose(out.label, _shares(out, b), atol=1e-6)
    # points come from the ORIGINAL clouds: each destination holds at most itself and one partner
    assert bool(((_shares(out, b) > 0).sum(1) <= 2).all())
    # pairing of pos/lat kept and every point is an original point
    assert torch.equal(batch.lat[out.lat[:, 3].long()], out.lat)
    assert torch.equal(out.lat[:, 1:3], out.pos)


def test_arcmix_subset_counts_follow_lambda_and_roll_partner():
    counts = [10, 20, 30, 40]
    batch = make_batch(counts)
    batch.label = torch.arange(4)
    lam = 0.7
    out = ARCMix(num_classes=4)(batch, gen(13), lam=lam)
    src = out.lat[:, 0].long()
    ids = out.batch_ids()
    for i in range(4):
        j = (i + 1) % 4
        assert int(((ids == i) & (src == i)).sum()) == math.floor(lam * counts[i])
        assert int(((ids == i) & (src == j)).sum()) == math.floor((1 - lam) * counts[j])
    # the last cloud mixes with the original cloud 0 (no in-place chain)
    assert set(src[ids == 3].tolist()) == {3, 0}


def test_arcmix_box_takes_points_spatially():
    b, h, w = 4, 12, 12
    batch = grid_batch(b, h, w)
    lam = 0.75  # box covers 25 % of the area: 6 x 6 pixels
    out = ARCMix(num_classes=b, variant="box")(batch, gen(14), lam=lam).validate()
    src, ids = out.lat[:, 0].long(), out.batch_ids()
    for i in range(b):
        mine = out.pos[(ids == i) & (src == i)]
        theirs = out.pos[(ids == i) & (src == (i + 1) % b)]
        assert theirs.shape[0] == 36 and mine.shape[0] == h * w - 36
        lo, hi = theirs.min(0).values, theirs.max(0).values
        assert torch.equal(hi - lo, torch.tensor([5.0, 5.0]))  # a contiguous 6 x 6 block
        inside = ((mine >= lo) & (mine <= hi)).all(1)
        assert not bool(inside.any())
    assert torch.allclose(out.label.diagonal(), torch.full((b,), 1 - 36 / 144))


def test_arcmix_never_makes_an_empty_cloud():
    batch = make_batch([1, 1, 2, 1])
    out = ARCMix(num_classes=10)(batch, gen(15), lam=0.3)  # floor(0.3) = floor(0.7) = 0 for 1-point clouds
    out.validate()
    assert bool((out.counts() >= 1).all())
    assert torch.allclose(out.label.sum(1), torch.ones(4))
    box = ARCMix(num_classes=10, variant="box")(batch, gen(15), lam=0.0)  # box = whole image
    box.validate()
    assert torch.allclose(box.label.sum(1), torch.ones(4))


def test_arcmix_lambda_is_beta_distributed():
    mix = ARCMix(num_classes=2, alpha=0.5)
    g = gen(16)
    lams = torch.tensor([mix.sample_lambda(g) for _ in range(2000)])
    assert bool(((lams >= 0) & (lams <= 1)).all())
    # Beta(0.5, 0.5) is U-shaped: P(lambda < 0.1) = 2/pi * asin(sqrt(0.1)) ~ 0.205
    assert abs(float((lams < 0.1).float().mean()) - 0.205) < 0.04


def test_arcmix_mixes_soft_labels():
    batch = make_batch([10, 10])
    batch.label = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    out = ARCMix(num_classes=3)(batch, gen(17), lam=0.5)
    assert torch.allclose(out.label, torch.tensor([[0.25, 0.25, 0.5], [0.25, 0.25, 0.5]]))


# ------------------------------------------------------------------ pipeline / config


def test_pipeline_on_clouds_of_very_different_sizes():
    batch = make_batch([1, 2, 3000, 7, 1, 450], seed=3)
    config = {"push": 2, "rotate": 180, "flip": True, "shift": 3, "mask": 0.3, "noise": 0.001, "arcmix": {"alpha": 1.0}}
    aug = build_augmentations(config, num_classes=10)
    assert list(aug.ops) == ["push", "rotate", "flip", "shift", "mask", "noise", "arcmix"]
    out = aug(batch, normalise=lambda lat: lat * 0 + 5.0, generator=gen(18)).validate()
    assert len(out) == 6
    assert torch.allclose(out.label.sum(1), torch.ones(6))
    assert float((out.lat - 5.0).abs().max()) < 0.01  # normalised before noise
    assert torch.equal(aug(batch, generator=gen(18)).pos, aug(batch, generator=gen(18)).pos)


def test_config_forms_and_disabling():
    aug = build_augmentations({"mask": 0.4, "noise": True, "flip": {"p": 0.2, "vertical": False}, "push": None, "rotate": False})
    assert list(aug.ops) == ["flip", "mask", "noise"]
    assert aug.ops["mask"].fraction == 0.4 and aug.ops["noise"].std == 0.001
    assert aug.ops["flip"].p == 0.2 and not aug.ops["flip"].vertical
    assert len(build_augmentations(None)) == 0


@pytest.mark.parametrize(
    "config, match",
    [
        ({"cutout": 0.3}, "unknown augmentation 'cutout'.*valid"),
        ({"mask": 1.0}, "fraction"),
        ({"mask": -0.1}, "fraction"),
        ({"mask": {"frac": 0.3}}, r"unknown parameter.*'frac'.*valid.*fraction"),
        ({"rotate": {"about": "corner"}}, "centre"),
        ({"arcmix": {"variant": "cut"}}, "subset"),
        ({"arcmix": {"alpha": 0}}, "alpha"),
        ({"flip": 1.5}, "p must be"),
        ({"noise": "big"}, "settings must be"),
        ("mask", "dict"),
    ],
)
def test_invalid_config_raises_one_clear_error(config, match):
    with pytest.raises(AugmentConfigError, match=match):
        build_augmentations(config, num_classes=3)


def test_arcmix_without_num_classes_is_an_error():
    with pytest.raises(ValueError, match="num_classes"):
        build_augmentations({"arcmix": 1.0})


def test_arcmix_probability_is_per_batch():
    batch = make_batch([6, 7, 8])
    mix = ARCMix(num_classes=10, p=0.5)
    g = gen(19)
    mixed = [mix(batch, g).label.ndim == 2 for _ in range(200)]
    assert 70 < sum(mixed) < 130
