"""Nearest-latent index: exact (distance, index) order against a brute-force reference."""
import numpy as np
import pytest
import torch

from arc.field import FieldInputError, nearest_latents, pixel_grid, pixel_neighbours
from arc.field import neighbours as nb


def reference(pos: torch.Tensor, queries: torch.Tensor, n: int) -> torch.Tensor:
    p, q = pos.double().numpy(), queries.double().numpy()
    out = []
    for row in q:
        d2 = (p[:, 0] - row[0]) ** 2 + (p[:, 1] - row[1]) ** 2
        out.append(np.lexsort((np.arange(len(p)), d2))[:n])
    return torch.from_numpy(np.stack(out)).long()


def lattice_positions(k: int, height: int, width: int, seed: int) -> torch.Tensor:
    flat = torch.randperm(height * width, generator=torch.Generator().manual_seed(seed))[:k]
    return torch.stack([flat // width, flat % width], 1).float()


@pytest.mark.parametrize("k", [4, 30, 300])
def test_lattice_matches_reference(k):
    pos = lattice_positions(k, 30, 40, k)
    queries = pixel_grid(30, 40)
    assert torch.equal(nearest_latents(pos, queries, 4), reference(pos, queries, 4))


@pytest.mark.parametrize("k", [60, 500])  # brute force and tree
def test_random_fractional_positions_and_queries(k):
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(k, 2, generator=g) * 50
    queries = torch.rand(700, 2, generator=g) * 60 - 5
    assert torch.equal(nearest_latents(pos, queries, 6), reference(pos, queries, 6))


def test_lattice_latents_with_half_pixel_queries_brute_force():
    pos = lattice_positions(40, 12, 12, 3)
    queries = pixel_grid(24, 24) / 2 - 0.25  # sub-pixel centres at scale 2: many ties, non-integer
    assert torch.equal(nearest_latents(pos, queries, 4), reference(pos, queries, 4))


def test_heavy_ties_need_requery(monkeypatch):
    # a regular lattice of latents every 2 pixels: half-way pixels have up to 4 equidistant latents,
    # and with few extra candidates the tie set reaches past them, forcing the ball re-query
    rows, cols = torch.meshgrid(torch.arange(0, 40, 2), torch.arange(0, 40, 2), indexing="ij")
    pos = torch.stack([rows.flatten(), cols.flatten()], 1).float()
    pos = pos[torch.randperm(pos.shape[0], generator=torch.Generator().manual_seed(1))]
    queries = torch.cat([pixel_grid(40, 40), pixel_grid(40, 40) + 0.5])
    expected = reference(pos, queries, 5)
    monkeypatch.setattr(nb, "BRUTE_FORCE_MAX_LATENTS", 0)
    assert torch.equal(nearest_latents(pos, queries, 5, extra=0), expected)
    assert torch.equal(nearest_latents(pos, queries, 5, extra=3), expected)
    monkeypatch.setattr(nb, "QUERY_CHUNK", 100)
    assert torch.equal(nearest_latents(pos, queries, 5, extra=1), expected)


def test_pixel_neighbours_row_major():
    pos = torch.tensor([[0.0, 0.0], [0.0, 4.0], [3.0, 0.0], [3.0, 4.0]])
    nbr = pixel_neighbours(pos, 4, 5, 4)
    assert nbr.shape == (20, 4) and nbr.dtype == torch.int64
    assert nbr[0, 0] == 0 and nbr[4, 0] == 1 and nbr[15, 0] == 2 and nbr[19, 0] == 3
    assert torch.equal(nbr, reference(pos, pixel_grid(4, 5), 4))


def test_too_few_latents_is_an_error():
    with pytest.raises(FieldInputError, match="cannot give 4 neighbours"):
        nearest_latents(torch.zeros(3, 2), torch.zeros(5, 2), 4)
    with pytest.raises(FieldInputError, match="NaN"):
        nearest_latents(torch.tensor([[0.0, float("nan")]] * 4), torch.zeros(5, 2), 4)
