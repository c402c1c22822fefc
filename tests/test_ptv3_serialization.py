"""Space-filling-curve codes of the PTv3 serialization."""
import torch

from ptv3.serialization import DEPTH, encode, even_depth, hilbert_encode, interleave_bits, morton_encode


def _grid(n: int, dims: int) -> torch.Tensor:
    return torch.cartesian_prod(*[torch.arange(n)] * dims).view(-1, dims)


def _bitwise_reference(coords: torch.Tensor) -> torch.Tensor:
    dims = coords.shape[1]
    code = torch.zeros(coords.shape[0], dtype=torch.long)
    for bit in range(DEPTH):
        for d in range(dims):
            code |= ((coords[:, d] >> bit) & 1) << (dims * bit + dims - 1 - d)
    return code


def test_morton_known_points():
    pts = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [2, 0, 0], [3, 3, 3], [0, 0, 2]])
    assert morton_encode(pts).tolist() == [0, 4, 2, 1, 7, 32, 63, 8]
    assert morton_encode(torch.tensor([[1, 0], [0, 1], [2, 3]])).tolist() == [2, 1, 0b1101]


def test_interleave_matches_bitwise_reference():
    g = torch.Generator().manual_seed(0)
    for dims in (2, 3):
        coords = torch.randint(0, 1 << DEPTH, (500, dims), generator=g)
        assert torch.equal(interleave_bits(coords), _bitwise_reference(coords))


def test_hilbert_2d_is_bijection_visiting_neighbours():
    pts = _grid(16, 2)
    for depth in (4, 16):
        code = hilbert_encode(pts, depth)
        assert sorted(code.tolist()) == list(range(256))
        walk = pts[torch.argsort(code)]
        assert torch.all((walk[1:] - walk[:-1]).abs().sum(dim=1) == 1)
        assert walk[0].tolist() == [0, 0]


def test_hilbert_3d_is_bijection_visiting_neighbours():
    pts = _grid(8, 3)
    code = hilbert_encode(pts, 3)
    assert sorted(code.tolist()) == list(range(512))
    walk = pts[torch.argsort(code)]
    assert torch.all((walk[1:] - walk[:-1]).abs().sum(dim=1) == 1)


def test_hilbert_2d_even_depths_agree():
    pts = torch.randint(0, 1000, (2000, 2), generator=torch.Generator().manual_seed(1))
    assert even_depth(999) == 10 and even_depth(0) == 2 and even_depth(4) == 4
    for depth in (10, 12, 14):
        assert torch.equal(hilbert_encode(pts, depth), hilbert_encode(pts, DEPTH))
    assert not torch.equal(hilbert_encode(pts, 11), hilbert_encode(pts, 10))


def test_flat_cloud_uses_2d_hilbert_and_3d_cloud_3d_hilbert():
    flat = torch.cat([_grid(16, 2), torch.zeros(256, 1, dtype=torch.long)], dim=1)
    cube = _grid(4, 3)
    grid = torch.cat([flat, cube])
    batch = torch.cat([torch.zeros(256, dtype=torch.long), torch.ones(64, dtype=torch.long)])
    code = encode(grid, batch, "hilbert")
    order = torch.argsort(code)
    assert torch.equal(batch[order], torch.sort(batch).values)  # clouds stay grouped, in order
    for cloud in (0, 1):
        walk = grid[order][batch[order] == cloud]
        assert torch.all((walk[1:] - walk[:-1]).abs().sum(dim=1) == 1)


def test_batch_index_in_high_bits():
    grid = torch.tensor([[5, 5, 0], [0, 0, 0], [1, 0, 0]])
    batch = torch.tensor([0, 1, 1])
    for order in ("z", "z-trans", "hilbert", "hilbert-trans"):
        code = encode(grid, batch, order)
        assert torch.equal(code >> (3 * DEPTH), batch)
        assert int(code[0]) < min(int(code[1]), int(code[2]))  # cloud 0 first although its voxel is larger


def test_transposed_variants_swap_axes():
    g = torch.Generator().manual_seed(2)
    grid = torch.cat([torch.randint(0, 300, (400, 2), generator=g), torch.zeros(400, 1, dtype=torch.long)], dim=1)
    batch = torch.randint(0, 3, (400,), generator=g)
    swapped = grid[:, [1, 0, 2]]
    for name in ("z", "hilbert"):
        assert torch.equal(encode(grid, batch, f"{name}-trans"), encode(swapped, batch, name))
        assert not torch.equal(encode(grid, batch, f"{name}-trans"), encode(grid, batch, name))
