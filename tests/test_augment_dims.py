"""Augmentations and the geometry they use on clouds of D = 1, 2, 3 dimensions (issue 13).

Every op keeps the data contract in every D; flips, rotations about the centre and ARCMix keep
positions inside the sample; rotation is 2-D and 3-D only (one clear error for 1-D clouds).
"""
from __future__ import annotations

import pytest
import torch

from arc.augment import ARCMix, AugmentConfigError, Flip, Mask, Noise, Push, Rotate, Shift, build_augmentations
from arc.cloud import CloudBatch
from arc.geometry import Affine, axis_rotations, pivots, rotation_plane

SIZES = {1: (40,), 2: (16, 20), 3: (6, 8, 10)}
DIMS = (1, 2, 3)
POINT_OPS = {
    "noise": lambda: Noise(0.1),
    "mask": lambda: Mask(0.5),
    "push": lambda: Push(2.0),
    "flip": lambda: Flip(0.5),
    "shift": lambda: Shift(3.0, p=0.8),
}
MIXES = {"subset": lambda: ARCMix(10), "box": lambda: ARCMix(10, variant="box", partner="permute")}


def cloud_batch(dims: int, counts=(1, 2, 40, 7, 120, 3), seed: int = 0) -> CloudBatch:
    """Clouds of random integer positions inside samples of ``SIZES[dims]``; lat = (cloud id, point id, noise)."""
    g = torch.Generator().manual_seed(seed)
    counts_t, size = torch.tensor(counts), SIZES[dims]
    n, b = int(counts_t.sum()), len(counts)
    pos = torch.stack([torch.randint(0, s, (n,), generator=g) for s in size], 1).float()
    ids = torch.repeat_interleave(torch.arange(b), counts_t)
    lat = torch.cat([ids[:, None].float(), torch.arange(n)[:, None].float(), torch.randn(n, 2, generator=g)], 1)
    return CloudBatch(pos=pos, lat=lat, offset=torch.cumsum(counts_t, 0), label=torch.arange(b) % 10,
                      size=torch.tensor([size] * b), index=torch.arange(b), colour_mean=torch.zeros(b, 1),
                      colour_std=torch.ones(b, 1))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inside(batch: CloudBatch, margin: float = 1e-4) -> bool:
    """Every position lies within its sample's extent [0, S-1] on every axis."""
    size = batch.size[batch.batch_ids()].float()
    return bool(((batch.pos >= -margin) & (batch.pos <= size - 1 + margin)).all())


def _same(a: CloudBatch, b: CloudBatch) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("pos", "lat", "offset", "label"))


# ---------------------------------------------------------------- every op, every D


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("name", list(POINT_OPS))
def test_point_ops_keep_the_contract_labels_and_reproduce(dims, name):
    batch = cloud_batch(dims)
    out = POINT_OPS[name]()(batch, gen(1)).validate()
    assert out.pos.shape[1] == dims and len(out) == len(batch)
    for field in ("label", "size", "index", "colour_mean", "colour_std"):
        assert torch.equal(getattr(out, field), getattr(batch, field)), field
    if name != "mask":  # only mask drops points
        assert torch.equal(out.offset, batch.offset)
    assert _same(out, POINT_OPS[name]()(batch, gen(1)))
    assert not _same(out, POINT_OPS[name]()(batch, gen(2)))


@pytest.mark.parametrize("dims", DIMS)
def test_flips_mirror_every_axis_and_stay_inside_the_sample(dims):
    batch = cloud_batch(dims)
    size = batch.size[batch.batch_ids()].float()
    assert torch.equal(Flip(p=1.0)(batch).pos, size - 1 - batch.pos)
    only_last = Flip(p=1.0, vertical=False, depth=False)(batch).pos
    assert torch.equal(only_last[:, -1], size[:, -1] - 1 - batch.pos[:, -1])
    assert torch.equal(only_last[:, :-1], batch.pos[:, :-1])
    assert _inside(Flip(p=0.5)(batch, gen(3)))
    assert torch.equal(Flip(p=1.0, about="origin")(batch).pos, -batch.pos)


@pytest.mark.parametrize("dims", DIMS)
def test_shift_moves_each_whole_cloud_and_push_each_point_within_bounds(dims):
    batch = cloud_batch(dims)
    ids = batch.batch_ids()
    delta = Shift(3.0)(batch, gen(4)).pos - batch.pos
    per_cloud = torch.zeros(len(batch), dims).index_copy(0, ids, delta)
    assert torch.allclose(delta, per_cloud[ids]) and bool((delta.abs() <= 3.0).all())
    jitter = Push(2.0)(batch, gen(5)).pos - batch.pos
    assert bool((jitter.abs() <= 2.0).all()) and jitter.std() > 0.5


@pytest.mark.parametrize("dims", DIMS)
def test_mask_keeps_a_subset_of_each_cloud(dims):
    batch = cloud_batch(dims)
    out = Mask(0.5)(batch, gen(6))
    expected = torch.floor(0.5 * batch.counts().double()).long().clamp(min=1)
    assert torch.equal(out.counts(), expected)
    assert torch.equal(out.pos, batch.pos[out.lat[:, 1].long()])  # every kept point is an original one, in place


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("variant", list(MIXES))
def test_arcmix_mixes_points_of_the_pair_with_soft_labels(dims, variant):
    batch = cloud_batch(dims)
    out = MIXES[variant]()(batch, gen(7)).validate()
    assert out.pos.shape[1] == dims and _inside(out)
    assert torch.equal(out.pos, batch.pos[out.lat[:, 1].long()])  # points are moved whole, never changed
    assert torch.allclose(out.label.sum(1), torch.ones(len(batch)))
    assert torch.equal(out.offset[-1:], out.counts().sum().reshape(1))
    assert _same(out, MIXES[variant]()(batch, gen(7)))


@pytest.mark.parametrize("dims", DIMS)
def test_arcmix_box_is_a_d_dimensional_box_of_the_sample_volume(dims):
    """At lambda 0 the box is the whole sample (cloud i becomes its partner); at lambda 1 it is empty."""
    batch = cloud_batch(dims)
    partner = torch.roll(torch.arange(len(batch)), -1)
    whole = ARCMix(10, variant="box")(batch, gen(8), lam=0.0)
    assert torch.equal(whole.pos, batch.select(partner).pos)
    assert _same(ARCMix(10, variant="box")(batch, gen(8), lam=1.0), ARCMix(10, variant="subset")(batch, gen(8), lam=1.0))
    grid = torch.cartesian_prod(*[torch.arange(s) for s in SIZES[dims]]).float().reshape(-1, dims)
    k = grid.shape[0]
    lat = torch.cat([torch.zeros(2 * k, 1), torch.arange(2 * k)[:, None].float()], 1)
    two = CloudBatch(pos=grid.repeat(2, 1), lat=lat, offset=torch.tensor([k, 2 * k]), label=torch.tensor([0, 1]),
                     size=torch.tensor([SIZES[dims]] * 2), index=torch.arange(2), colour_mean=torch.zeros(2, 1),
                     colour_std=torch.ones(2, 1))
    mixed = ARCMix(2, variant="box")(two, gen(9), lam=0.5)
    from_partner = (mixed.lat[: mixed.counts()[0], 1] >= k).float().mean()  # share of cloud 0 now from cloud 1
    assert abs(float(from_partner) - 0.5) < 0.5 / min(SIZES[dims]) * dims + 0.05


@pytest.mark.parametrize("dims", DIMS)
def test_the_pipeline_runs_in_every_dimension_and_is_seeded(dims):
    config = {"push": 1, "flip": True, "shift": 2, "mask": 0.3, "noise": 0.01, "arcmix": {"alpha": 1.0}}
    if dims > 1:
        config["rotate"] = 180
    aug, batch = build_augmentations(config, num_classes=10), cloud_batch(dims)
    out = aug(batch, normalise=lambda lat: lat * 2.0, seed=3).validate()
    assert out.pos.shape[1] == dims and out.label.shape == (len(batch), 10)
    assert _same(out, aug(batch, normalise=lambda lat: lat * 2.0, seed=3))


# ---------------------------------------------------------------- rotation


@pytest.mark.parametrize("op", [lambda: Rotate(180.0), lambda: Rotate(p=0.0), lambda: Rotate(90.0, fixed=True)])
def test_rotation_of_a_1d_cloud_is_one_clear_error(op):
    with pytest.raises(AugmentConfigError, match="rotation is not defined for 1-D clouds; remove augment.rotate"):
        op()(cloud_batch(1), gen(0))
    with pytest.raises(AugmentConfigError, match="remove augment.rotate"):
        build_augmentations({"rotate": 30})(cloud_batch(1), seed=0)


def test_a_rotation_axis_is_for_3d_clouds_only():
    with pytest.raises(AugmentConfigError, match="axis applies to 3-D clouds only"):
        Rotate(30.0, axis="d")(cloud_batch(2), gen(0))
    with pytest.raises(AugmentConfigError, match="axis must be one of"):
        Rotate(30.0, axis="x")


@pytest.mark.parametrize("axis", [None, "d", "v", "h"])
def test_3d_rotation_is_a_proper_rigid_turn_about_the_centre(axis):
    batch = cloud_batch(3)
    out = Rotate(180.0, axis=axis)(batch, gen(10))
    centre = pivots(batch.size, "centre")[batch.batch_ids()]
    assert torch.allclose((out.pos - centre).norm(dim=1), (batch.pos - centre).norm(dim=1), atol=1e-4)
    assert not torch.allclose(out.pos, batch.pos)
    assert _same(out, Rotate(180.0, axis=axis)(batch, gen(10)))
    cloud = slice(int(batch.offset[3]), int(batch.offset[4]))  # 120 points: solve for the linear map
    a, b = batch.pos[cloud] - centre[cloud], out.pos[cloud] - centre[cloud]
    matrix = torch.linalg.lstsq(a.double(), b.double()).solution
    assert torch.allclose(matrix.T @ matrix, torch.eye(3, dtype=torch.float64), atol=1e-4)
    assert abs(float(torch.linalg.det(matrix)) - 1.0) < 1e-4  # a turn, never a mirror
    if axis is not None:  # the named axis stays put
        k = "dvh".index(axis)
        assert torch.allclose(out.pos[:, k], batch.pos[:, k], atol=1e-5)


def test_3d_turn_about_d_turns_every_slice_as_the_2d_op():
    volume = cloud_batch(3)
    turned = Rotate(33.0, fixed=True, axis="d")(volume).pos
    slices = CloudBatch(pos=volume.pos[:, 1:], lat=volume.lat, offset=volume.offset, label=volume.label,
                        size=volume.size[:, 1:], index=volume.index, colour_mean=volume.colour_mean,
                        colour_std=volume.colour_std)
    assert torch.equal(turned[:, 0], volume.pos[:, 0])
    assert torch.allclose(turned[:, 1:], Rotate(33.0, fixed=True)(slices).pos, atol=1e-5)


@pytest.mark.parametrize("axis", ["d", "v", "h"])
def test_affine_and_batched_3d_turns_agree(axis):
    pos = torch.randn(20, 3, dtype=torch.float64) * 4
    pivot = [1.0, -2.0, 0.5]
    unit = torch.zeros(1, 3, dtype=torch.float64)
    unit[0, "dvh".index(axis)] = 1.0
    for degrees in (90.0, -40.0, 180.0):
        theta = torch.deg2rad(torch.tensor([degrees], dtype=torch.float64))
        matrix = axis_rotations(unit, torch.cos(theta), torch.sin(theta))[0]
        expected = (pos - torch.tensor(pivot, dtype=torch.float64)) @ matrix.T + torch.tensor(pivot, dtype=torch.float64)
        assert torch.allclose(Affine.rotation(degrees, pivot, axis)(pos), expected)
    quarter = Affine.rotation(90.0, [0.0, 0.0, 0.0], axis).matrix
    assert bool((quarter == quarter.round()).all())  # quarter turns are exact integer matrices
    assert torch.equal(axis_rotations(unit, torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))[0],
                       torch.eye(3, dtype=torch.float64))


def test_affine_maps_in_every_dimension():
    assert Affine.identity(1).is_identity and Affine.identity(3).dims == 3
    assert torch.equal(Affine.translation(2.0)(torch.tensor([[1.0]])), torch.tensor([[3.0]]))
    assert torch.equal(Affine.flip("h", [4.5])(torch.tensor([[0.0], [9.0]])), torch.tensor([[9.0], [0.0]]))
    assert torch.equal(Affine.flip("d", [2.0, 0.0, 0.0])(torch.tensor([[0.0, 1.0, 2.0]])), torch.tensor([[4.0, 1.0, 2.0]]))
    scaled = Affine.scaling(2.0, [1.0, 1.0, 1.0]).then(Affine.translation(0.0, 1.0, 0.0))
    assert torch.allclose(scaled.inverse()(scaled(torch.ones(2, 3) * 3)), torch.ones(2, 3) * 3)
    with pytest.raises(ValueError, match="rotation is not defined for 1-D"):
        Affine.rotation(30.0, [0.0])
    with pytest.raises(ValueError, match="does not exist in 2-D"):
        Affine.flip("d", [0.0, 0.0])
    assert rotation_plane(2) == (0, 1) and rotation_plane(3) == (1, 2) and rotation_plane(3, "v") == (2, 0)
    assert torch.equal(pivots(torch.tensor([[5]]), "origin"), torch.zeros(1, 1))
