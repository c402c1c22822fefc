"""Point construction: every point kept, voxel assignment (cloud / frame origin, exactness), stable serialization."""
import pytest
import torch

from ptv3.point import PointError, make_point, voxelize


def _integer_cloud(n=600, side=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(side * side, generator=g)[:n]
    return torch.stack([flat // side, flat % side, torch.zeros_like(flat)], 1).float()


def test_every_point_is_kept_in_input_order():
    coord = torch.tensor([[0.0, 3, 0], [1, 1, 0], [1.6, 1.2, 0], [3, 0, 0], [1.2, 1.9, 0]])
    feat = torch.arange(10.0).view(5, 2)
    point = make_point({"coord": coord, "feat": feat, "offset": torch.tensor([5])}, grid_size=1.0)
    assert point.offset.tolist() == [5] and torch.equal(point.feat, feat) and torch.equal(point.coord, coord)
    assert point.grid_coord.tolist() == [[0, 3, 0], [1, 1, 0], [1, 1, 0], [3, 0, 0], [1, 1, 0]]


@pytest.mark.parametrize("shift", [0.3, 0.7, 0.1, 0.9, -0.3, 0.55])
def test_voxels_are_exact_after_fractional_shift(shift):
    coord = _integer_cloud()
    batch = torch.zeros(coord.shape[0], dtype=torch.long)
    moved = coord + torch.tensor([shift, -shift, 0.0])
    torch.testing.assert_close(voxelize(moved, batch, 1, 2.0), voxelize(coord, batch, 1, 2.0), rtol=0, atol=0)


def test_float32_voxel_formula_is_not_exact():
    # what the exact assignment guards against: the same shifts put points into other voxels in float32
    coord = _integer_cloud()
    moved = [coord + torch.tensor([s, -s, 0.0]) for s in (0.3, 0.7, 0.1, 0.9)]
    naive = [torch.floor((c - c.min(0).values) / 2.0) for c in moved]
    assert any(not torch.equal(n, torch.floor((coord - coord.min(0).values) / 2.0)) for n in naive)


def test_frame_origin_puts_boundaries_at_multiples_of_the_grid():
    x = torch.tensor([3.0, 4.9, 5.0, 17.0])
    coord = torch.stack([x, torch.zeros(4), torch.zeros(4)], 1)
    batch = torch.zeros(4, dtype=torch.long)
    assert voxelize(coord, batch, 1, 2.0, "cloud")[:, 0].tolist() == [0, 0, 1, 7]
    assert voxelize(coord, batch, 1, 2.0, "frame", align=8)[:, 0].tolist() == [1, 2, 2, 8]
    # a shift by the coarsest cell (2 * 8) changes nothing, a negative position is fine
    assert voxelize(coord + torch.tensor([16.0, 0, 0]), batch, 1, 2.0, "frame", align=8)[:, 0].tolist() == [1, 2, 2, 8]
    shifted = voxelize(coord - torch.tensor([20.0, 0, 0]), batch, 1, 2.0, "frame", align=8)
    assert shifted[:, 0].tolist() == [7, 8, 8, 14]  # voxels -9, -8, -8, -2; origin -16
    assert (shifted[:, 0] >> 3).tolist() == [0, 1, 1, 1]  # coarse cells of 16 px anchored at 0 (-32, -16, -16, -16)


def test_frame_origin_is_per_cloud():
    a = torch.tensor([[40.0, 3, 0], [45, 9, 0]])
    b = torch.tensor([[1000.0, 500, 0], [1001, 503, 0]])
    batch = torch.tensor([0, 0, 1, 1])
    both = voxelize(torch.cat([a, b]), batch, 2, 2.0, "frame", align=8)
    assert torch.equal(both[:2], voxelize(a, batch[:2], 1, 2.0, "frame", align=8))
    assert both.max() < 16 and both.min() >= 0


def test_bad_grid_origin_is_an_error():
    data = {"coord": torch.zeros(3, 3), "feat": torch.zeros(3, 2), "offset": torch.tensor([3])}
    with pytest.raises(PointError, match="grid_origin"):
        make_point(data, 1.0, grid_origin="image")
    with pytest.raises(PointError, match="power of 2"):
        make_point(data, 1.0, grid_origin="frame", align=6)


def test_duplicate_codes_serialize_in_point_order():
    g = torch.Generator().manual_seed(1)
    coord = torch.randint(0, 3, (3000, 2), generator=g).float()  # 3000 points in 2 x 2 voxels
    point = make_point({"coord": coord, "feat": torch.zeros(3000, 1), "offset": torch.tensor([1000, 3000])},
                       grid_size=2.0).serialize(("z", "hilbert"))
    for o in range(2):
        order = point.serialized_order[o]
        key = point.batch[order] * 100 + point.grid_coord[order, 0] * 10 + point.grid_coord[order, 1]
        same = key[1:] == key[:-1]
        assert same.any() and bool((order[1:][same] > order[:-1][same]).all())
