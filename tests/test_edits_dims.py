"""Latent edits (arc.edits) on 1-D and 3-D clouds: the D-generic spellings and the errors for what has no meaning."""
from __future__ import annotations

import pytest
import torch

from arc.cloud import CloudBatch
from arc.edits import EditError, EditState, apply_edits, parse_edit
from arc.geometry import Affine

N = 4
SIZES = {1: (30,), 2: (12, 14), 3: (6, 9, 12)}


def _cloud(dims: int, step: int = 3, seed: int = 0, index: int = 0) -> CloudBatch:
    """Latents on an integer lattice of spacing ``step`` in a sample of ``SIZES[dims]``, random latent vectors."""
    pos = torch.cartesian_prod(*[torch.arange(0, s, step) for s in SIZES[dims]]).float().reshape(-1, dims)
    g = torch.Generator().manual_seed(seed)
    return CloudBatch(pos=pos, lat=torch.randn(pos.shape[0], 5, generator=g), offset=torch.tensor([pos.shape[0]]),
                      label=torch.tensor([0]), size=torch.tensor([SIZES[dims]]), index=torch.tensor([index]),
                      colour_mean=torch.tensor([[0.5]]), colour_std=torch.tensor([[0.2]]))


def _edit(cloud: CloudBatch, *specs: str, **kwargs) -> EditState:
    return apply_edits(cloud, [parse_edit(s) for s in specs], N, **kwargs)[-1]


def _centre(dims: int) -> torch.Tensor:
    return (torch.tensor(SIZES[dims]).float() - 1) / 2


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_translate_by_moves_along_the_axes_in_tensor_order(dims):
    cloud = _cloud(dims)
    by = [2.0, -1.0, 0.5][:dims]
    moved = _edit(cloud, "translate:by=" + ",".join(map(str, by)))
    assert torch.allclose(moved.cloud.pos, cloud.pos + torch.tensor(by))
    dx = _edit(cloud, "translate:dx=3").cloud.pos - cloud.pos  # dx: the last axis (time in 1-D)
    assert torch.equal(dx, torch.zeros_like(dx).index_fill(1, torch.tensor([dims - 1]), 3.0))
    exact = _edit(cloud, "translate:by=" + ",".join(map(str, by)) + ",exact")
    assert torch.equal(exact.cloud.pos, cloud.pos) and exact.query_map.dims == dims
    assert torch.allclose(exact.displayed_positions(), moved.cloud.pos)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_flips_mirror_the_named_axis_about_the_centre(dims):
    cloud = _cloud(dims)
    flipped = _edit(cloud, "flip:axis=h").cloud.pos
    assert torch.allclose(flipped[:, -1], 2 * _centre(dims)[-1] - cloud.pos[:, -1])
    assert torch.equal(flipped[:, :-1], cloud.pos[:, :-1])
    if dims == 3:
        depth = _edit(cloud, "flip:axis=d,exact")
        assert torch.allclose(depth.displayed_positions()[:, 0], 2 * _centre(3)[0] - cloud.pos[:, 0])
    else:
        with pytest.raises(EditError, match="axis 'd' does not exist"):
            _edit(cloud, "flip:axis=d")


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_masks_and_mixes_take_boxes_and_balls_of_the_cloud_dimension(dims):
    cloud, other = _cloud(dims), _cloud(dims, seed=1, index=5)
    lo, hi = [0.0] * dims, [6.0] * dims
    box = ",".join(map(str, lo + hi))
    inside = (cloud.pos < 6).all(1)
    assert _edit(cloud, f"mask:box={box}").cloud.num_points == int((~inside).sum())
    ball = ",".join(map(str, _centre(dims).tolist() + [3.5]))
    near = (cloud.pos - _centre(dims)).norm(dim=1) <= 3.5
    assert _edit(cloud, f"mask:circle={ball}").cloud.num_points == int((~near).sum())
    mixed = _edit(cloud, f"mix:index=5,mode=box,box={box}", lookup=lambda i, split: other).cloud
    assert torch.equal(mixed.lat, torch.cat([cloud.lat[~inside], other.lat[(other.pos < 6).all(1)]]))
    halves = _edit(cloud, "mix:index=5,mode=left-right", lookup=lambda i, split: other).cloud
    left = cloud.pos[:, -1] < _centre(dims)[-1]
    assert torch.equal(halves.lat, torch.cat([cloud.lat[left], other.lat[~left]]))
    wrong = ",".join(["0"] * (dims % 3 + 1) + ["1"] * (dims % 3 + 1))  # a box of another D
    with pytest.raises(EditError, match=f"a {dims}-D cloud needs {2 * dims}"):
        _edit(cloud, f"mask:box={wrong}")


def test_1d_edits_without_a_meaning_are_clear_errors():
    cloud = _cloud(1)
    with pytest.raises(EditError, match="rotation is not defined for 1-D"):
        _edit(cloud, "rotate:deg=30")
    with pytest.raises(EditError, match="one axis; move it with dx="):
        _edit(cloud, "translate:dy=2")
    with pytest.raises(EditError, match="row=,col= name a 2-D pivot"):
        _edit(cloud, "scale:factor=2,row=0,col=0")
    scaled = _edit(cloud, "scale:factor=2,at=0").cloud.pos
    assert torch.equal(scaled, 2 * cloud.pos)
    pushed = _edit(cloud, "push:px=1,seed=2").cloud.pos
    assert bool(((pushed - cloud.pos).abs() <= 1).all()) and not torch.equal(pushed, cloud.pos)


def test_3d_rotation_turns_about_the_named_axis_and_composes_exactly():
    cloud = _cloud(3)
    turned = _edit(cloud, "rotate:deg=90,exact").displayed_positions()  # about d: every slice as an image
    slices = Affine.rotation(90.0, _centre(3)[1:].tolist())(cloud.pos[:, 1:])
    assert torch.equal(turned[:, 0], cloud.pos[:, 0]) and torch.allclose(turned[:, 1:], slices, atol=1e-5)
    about_v = _edit(cloud, "rotate:deg=33,axis=v,at=0,0,0").cloud.pos
    assert torch.equal(about_v[:, 1], cloud.pos[:, 1])
    assert torch.allclose(about_v.norm(dim=1), cloud.pos.norm(dim=1), atol=1e-4)
    four = _edit(cloud, *["rotate:deg=90,axis=h,exact"] * 4)
    assert four.query_map.is_identity
    with pytest.raises(EditError, match="rotation axis applies to 3-D samples only"):
        _edit(_cloud(2), "rotate:deg=30,axis=d")


def test_pivot_and_move_spellings_are_checked_when_parsed():
    with pytest.raises(EditError, match="not both"):
        parse_edit("translate:dx=1,by=1,2")
    with pytest.raises(EditError, match="not both"):
        parse_edit("rotate:deg=3,row=1,col=1,at=1,1")
    with pytest.raises(EditError, match="box takes 4"):
        parse_edit("mask:box=1,2,3,4,5")
    assert parse_edit("mask:box=0,2").params == {"box": (0.0, 2.0)}
    with pytest.raises(EditError, match="radius must be >= 0, got -1"):
        parse_edit("mask:circle=3,-1")
    assert parse_edit("flip:axis=d").params == {"axis": "d"}
    assert EditState(_cloud(3)).query_map.dims == 3  # the default identity takes the cloud's D
    with pytest.raises(EditError, match="2-D query map for a 3-D cloud"):
        EditState(_cloud(3), Affine.translation(1.0, 0.0))
