"""Serialized pooling on a hand-made example."""
import torch

from ptv3.point import make_point
from ptv3.pooling import SerializedPooling, segment_max, segment_mean


def test_segment_reductions():
    values = torch.tensor([[1.0, -1.0], [3.0, -5.0], [2.0, 7.0]])
    index = torch.tensor([1, 1, 0])
    assert segment_max(values, index, 2).tolist() == [[2.0, 7.0], [3.0, -1.0]]
    assert segment_mean(values, index, 2).tolist() == [[2.0, 7.0], [2.0, -3.0]]


def test_pooling_hand_made_example():
    # cloud 0: grid (0,0),(1,1) -> parent (0,0); (2,0) -> parent (1,0). cloud 1: (0,1),(1,0) -> parent (0,0)
    coord = torch.tensor([[0.0, 0, 0], [1, 1, 0], [2, 0, 0], [10, 11, 0], [11, 10, 0]])
    feat = torch.tensor([[1.0, 0.0], [0.0, 4.0], [5.0, 5.0], [-1.0, -2.0], [-3.0, 1.0]])
    point = make_point({"coord": coord, "feat": feat, "offset": torch.tensor([3, 5])}, grid_size=1.0)
    pool = SerializedPooling(2, 2, stride=2).eval()
    with torch.no_grad():
        pool.proj.weight.copy_(torch.eye(2))
        pool.proj.bias.zero_()
    out = pool(point)
    assert out.offset.tolist() == [2, 3]
    assert out.batch.tolist() == [0, 0, 1]
    assert out.grid_coord.tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 0]]
    torch.testing.assert_close(out.coord, torch.tensor([[0.5, 0.5, 0], [2.0, 0, 0], [10.5, 10.5, 0]]))
    expected_max = torch.tensor([[1.0, 4.0], [5.0, 5.0], [-1.0, 1.0]])
    torch.testing.assert_close(out.feat, pool.act(pool.norm(expected_max)))


def test_pooling_gradient_reaches_the_max():
    coord = torch.tensor([[0.0, 0, 0], [1, 0, 0]])
    feat = torch.tensor([[1.0], [3.0]], requires_grad=True)
    point = make_point({"coord": coord, "feat": feat, "offset": torch.tensor([2])}, grid_size=1.0)
    pool = SerializedPooling(1, 1).eval()
    with torch.no_grad():
        pool.proj.weight.fill_(1.0)
        pool.proj.bias.zero_()
    pool(point).feat.sum().backward()
    assert feat.grad[0, 0] == 0 and feat.grad[1, 0] != 0


def test_pooling_merges_points_sharing_a_voxel():
    # grid 1: points 0, 1 share voxel (0, 0), point 2 is at (1, 1): one parent voxel; point 3 alone in (2, 0)
    coord = torch.tensor([[0.0, 0, 0], [0.5, 0.25, 0], [1, 1, 0], [2, 0, 0]])
    feat = torch.tensor([[1.0, 9.0], [4.0, 0.0], [2.0, 3.0], [0.0, 0.0]])
    point = make_point({"coord": coord, "feat": feat, "offset": torch.tensor([4])}, grid_size=1.0)
    assert point.feat.shape[0] == 4
    pool = SerializedPooling(2, 2, stride=2).eval()
    with torch.no_grad():
        pool.proj.weight.copy_(torch.eye(2))
        pool.proj.bias.zero_()
    out = pool(point)
    assert out.grid_coord.tolist() == [[0, 0, 0], [1, 0, 0]]
    torch.testing.assert_close(out.coord, torch.tensor([[1.5 / 3, 1.25 / 3, 0], [2.0, 0, 0]]))  # mean of all 3 points
    torch.testing.assert_close(out.feat, pool.act(pool.norm(torch.tensor([[4.0, 9.0], [0.0, 0.0]]))))
