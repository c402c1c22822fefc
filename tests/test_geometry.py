"""arc.geometry: the coordinate conventions, their two forms (Affine and the batched maps) and pixel centres."""
from __future__ import annotations

import pytest
import torch

from arc.augment import Flip, Rotate
from arc.cloud import CloudBatch
from arc.geometry import Affine, image_centre, mirror_about, pivots, pixel_centres, rotate_about


def _lattice(size=(20, 30), step: int = 3) -> CloudBatch:
    """One cloud of lattice positions in an H x W image (index order unrelated to geometry)."""
    h, w = size
    pos = torch.cartesian_prod(torch.arange(0, h, step), torch.arange(0, w, step)).float()
    pos = pos[torch.randperm(pos.shape[0], generator=torch.Generator().manual_seed(0))]
    return CloudBatch(pos=pos, lat=torch.zeros(pos.shape[0], 2), offset=torch.tensor([pos.shape[0]]),
                      label=torch.tensor([0]), size=torch.tensor([list(size)]), index=torch.tensor([0]),
                      colour_mean=torch.zeros(1, 1), colour_std=torch.ones(1, 1))


def test_affine_and_the_batched_maps_agree():
    """Both forms follow one convention (counter-clockwise as displayed, h = mirror columns)."""
    cloud = _lattice(size=(20, 30))
    centre = (9.5, 14.5)
    for degrees in (90.0, 33.0, -120.0):
        expected = Rotate(degrees, fixed=True)(cloud).pos
        assert torch.allclose(Affine.rotation(degrees, centre)(cloud.pos), expected, atol=1e-4)
    horizontal = Flip(p=1.0, horizontal=True, vertical=False)(cloud).pos
    vertical = Flip(p=1.0, horizontal=False, vertical=True)(cloud).pos
    assert torch.allclose(Affine.flip("h", centre)(cloud.pos), horizontal)
    assert torch.allclose(Affine.flip("v", centre)(cloud.pos), vertical)
    # a point right of the centre moves up (smaller row) for +90 degrees
    moved = Affine.rotation(90.0, centre)(torch.tensor([[9.5, 20.5]]))
    assert torch.allclose(moved, torch.tensor([[3.5, 14.5]]))


def test_batched_maps_take_one_angle_and_pivot_per_point():
    pos = torch.randn(6, 2, dtype=torch.float64) * 5
    degrees = [0.0, 90.0, -45.0, 180.0, 12.5, 300.0]
    pivot = torch.randn(6, 2, dtype=torch.float64)
    theta = torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))
    turned = rotate_about(pos, torch.cos(theta), torch.sin(theta), pivot)
    for i, d in enumerate(degrees):
        assert torch.allclose(turned[i], Affine.rotation(d, pivot[i].tolist())(pos[i : i + 1])[0])
    sign = torch.tensor([[1, -1], [-1, 1], [1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=torch.float64)
    mirrored = mirror_about(pos, sign, pivot)
    for i in range(6):
        expected = pos[i : i + 1]
        for axis, column in (("v", 0), ("h", 1)):
            if sign[i, column] < 0:
                expected = Affine.flip(axis, pivot[i].tolist())(expected)
        assert torch.allclose(mirrored[i], expected[0])


def test_pivots_are_the_image_centre_or_the_origin():
    size = torch.tensor([[5, 5], [4, 6]])
    assert torch.equal(image_centre(size), torch.tensor([[2.0, 2.0], [1.5, 2.5]]))
    assert torch.equal(pivots(size, "centre", torch.float64), image_centre(size, torch.float64))
    assert torch.equal(pivots(size, "origin"), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="centre"):
        pivots(size, "corner")


def test_pixel_centres_are_the_sub_pixel_centres():
    assert torch.equal(pixel_centres(3), torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(pixel_centres(2, scale=2), torch.tensor([-0.25, 0.25, 0.75, 1.25]))
    assert torch.equal(pixel_centres(2, scale=2, shift=3), torch.tensor([-3.25, -2.75, -2.25, -1.75]))


def test_affine_composition_and_inverse():
    t = Affine.rotation(30.0, (4.0, 5.0)).then(Affine.translation(2.0, -1.0)).then(Affine.scaling(1.5, (0.0, 0.0)))
    p = torch.randn(10, 2, dtype=torch.float64) * 10
    expected = (Affine.rotation(30.0, (4.0, 5.0))(p) + torch.tensor([2.0, -1.0], dtype=torch.float64)) * 1.5
    assert torch.allclose(t(p), expected)
    assert torch.allclose(t.inverse()(t(p)), p)
    assert Affine().is_identity and not Affine.translation(0.0, 1.0).is_identity
    quarter = Affine.rotation(90.0, (0.0, 0.0)).matrix
    assert torch.equal(quarter, torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64))
