"""The indexing function U_n: the n nearest latents of each query, ordered by (distance, latent index).

Positions and queries are [*, D] points (D = 1, 2 or 3 spatial axes; images: (row, col)).

Ties are frequent on integer lattices, so the order is made exact and
deterministic: squared distances are computed in float64 (float32 where
they are small integers, which is exact) and sorted lexicographically with
the latent index. Small clouds use a brute-force search; large ones use a scipy cKDTree with extra candidates, and rows
whose tie set at the n-th distance could reach past the candidates are
re-queried with a ball query that returns every latent at that distance.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from arc.field.errors import FieldInputError

BRUTE_FORCE_MAX_LATENTS = 128
QUERY_CHUNK = 1 << 18
BRUTE_FORCE_CHUNK = 1 << 20  # distance entries per block (cache-sized)


def _check(pos: Tensor, queries: Tensor, n: int) -> None:
    if pos.ndim != 2 or queries.ndim != 2 or pos.shape[1] != queries.shape[1] or pos.shape[1] not in (1, 2, 3):
        raise FieldInputError(f"positions and queries must be [*, D] with one D in 1..3, got {tuple(pos.shape)} and {tuple(queries.shape)}")
    if pos.shape[0] < n:
        raise FieldInputError(f"a cloud with {pos.shape[0]} latents cannot give {n} neighbours per query")
    if not bool(torch.isfinite(pos).all()) or not bool(torch.isfinite(queries).all()):
        raise FieldInputError("positions or queries contain NaN or inf")


def _brute_force(pos: Tensor, queries: Tensor, n: int) -> Tensor:
    """Exact neighbours of queries [Q, D] among pos [..., k, D] (float64) -> [..., Q, n].

    On integer coordinates the key d2 * k + index is an exact, unique (distance, index) key:
    computed in float32 when it stays below 2^24, else in float64.
    """
    lead, (k, dims) = pos.shape[:-2], pos.shape[-2:]
    pos = pos.reshape(-1, k, dims)  # [B, k, D]
    chunk = max(1, BRUTE_FORCE_CHUNK // (k * pos.shape[0]))
    integer = bool((pos == pos.round()).all()) and bool((queries == queries.round()).all())
    extent = torch.maximum(pos.amax((0, 1)), queries.amax(0)) - torch.minimum(pos.amin((0, 1)), queries.amin(0))
    key_bound = (float(extent.square().sum()) + 1) * k
    dtype = torch.float32 if integer and key_bound < 2.0**24 else torch.float64
    pos, queries = pos.to(dtype), queries.to(dtype)
    rank = torch.arange(k, dtype=dtype, device=pos.device)
    out = []
    for q in queries.split(chunk):
        d2 = (pos[:, None, :, 0] - q[None, :, None, 0]).square()
        for axis in range(1, dims):
            d2 = d2 + (pos[:, None, :, axis] - q[None, :, None, axis]).square()
        if integer and key_bound < 2.0**52:
            out.append(torch.topk(d2 * k + rank, n, dim=-1, largest=False, sorted=True).indices)
        else:
            out.append(torch.sort(d2, dim=-1, stable=True).indices[..., :n])  # stable: ties keep index order
    return torch.cat(out, dim=1).reshape(*lead, queries.shape[0], n)


def _exact_order(pos: np.ndarray, q: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort candidate rows [R, c] by (float64 squared distance, index); return (indices, d2)."""
    d = pos[cand] - q[:, None, :]
    d2 = d[..., 0] * d[..., 0]
    for axis in range(1, d.shape[-1]):
        d2 = d2 + d[..., axis] * d[..., axis]
    k = pos.shape[0]
    if np.isfinite(d2).all() and float(d2.max(initial=0.0)) * k < 2.0**62 and (d2 == np.round(d2)).all():
        key = np.sort(d2.astype(np.int64) * k + cand, axis=1)  # integer distances: one exact, unique key
        return key % k, (key // k).astype(np.float64)
    order = np.lexsort((cand, d2), axis=1)
    return np.take_along_axis(cand, order, 1), np.take_along_axis(d2, order, 1)


def _tree_chunk(tree: cKDTree, pos: np.ndarray, q: np.ndarray, n: int, extra: int) -> np.ndarray:
    k = pos.shape[0]
    kc = min(k, n + extra)
    _, cand = tree.query(q, k=kc, workers=-1)
    cand = cand.reshape(len(q), kc)
    idx, d2 = _exact_order(pos, q, cand)
    out = idx[:, :n].copy()
    if kc == k:
        return out
    # All latents closer than the farthest candidate are candidates; a row is exact unless
    # its n-th distance reaches the farthest candidate distance (ties could continue past it).
    redo = np.nonzero(d2[:, n - 1] >= d2.max(axis=1) * (1 - 1e-12))[0]
    if redo.size:
        radius = np.sqrt(d2[redo, n - 1]) * (1 + 1e-9) + 1e-12
        balls = tree.query_ball_point(q[redo], radius, workers=-1)
        width = max(len(members) for members in balls)
        padded = np.full((redo.size, width), k, dtype=np.int64)  # index k: a sentinel point at infinity
        for row, members in enumerate(balls):
            padded[row, : len(members)] = members
        far = np.vstack([pos, np.full((1, pos.shape[1]), np.inf)])
        out[redo] = _exact_order(far, q[redo], padded)[0][:, :n]
    return out


def nearest_latents(pos: Tensor, queries: Tensor, n: int, extra: int = 4) -> Tensor:
    """For each query [Q, D] the indices of its n nearest latents pos [k, D] -> [Q, n] int64 (CPU).

    Rows are sorted by (Euclidean distance, latent index); distances use float64.
    """
    _check(pos, queries, n)
    pos64 = pos.detach().to("cpu", torch.float64)
    q64 = queries.detach().to("cpu", torch.float64)
    if pos64.shape[0] <= BRUTE_FORCE_MAX_LATENTS:
        return _brute_force(pos64, q64, n)
    pos_np = pos64.numpy()
    tree = cKDTree(pos_np)
    q_np = q64.numpy()
    out = np.empty((q_np.shape[0], n), dtype=np.int64)
    for start in range(0, q_np.shape[0], QUERY_CHUNK):
        out[start : start + QUERY_CHUNK] = _tree_chunk(tree, pos_np, q_np[start : start + QUERY_CHUNK], n, extra)
    return torch.from_numpy(out)


def sample_grid(shape: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """The row-major grid of a sample of spatial shape S -> [prod(S), D] float32 (an image's (row, col))."""
    axes = [torch.arange(int(size), device=device, dtype=torch.float32) for size in shape]
    return torch.cartesian_prod(*axes).reshape(-1, len(axes))


def pixel_grid(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """The row-major pixel-centre grid of an H x W image -> [H*W, 2] float32 (row, col)."""
    return sample_grid((height, width), device)


def _check_shape(shape: Sequence[int]) -> None:
    if not 1 <= len(shape) <= 3 or min(int(v) for v in shape) < 1:
        raise FieldInputError(f"a sample's shape must be 1 to 3 positive sizes, got {tuple(shape)}")


def sample_neighbours(pos: Tensor, shape: Sequence[int], n: int) -> Tensor:
    """Nearest latents (pos [k, D]) of every point of a sample of spatial shape S, row-major -> [prod(S), n] int64 (CPU)."""
    _check_shape(shape)
    return nearest_latents(pos, sample_grid(shape), n)


def pixel_neighbours(pos: Tensor, height: int, width: int, n: int) -> Tensor:
    """Nearest latents of every pixel of an H x W image, row-major -> [H*W, n] int64 (CPU)."""
    return sample_neighbours(pos, (height, width), n)


def sample_neighbours_batch(pos: Tensor, shape: Sequence[int], n: int) -> Tensor:
    """:func:`sample_neighbours` of B same-shape clouds with k latents each, pos [B, k, D] -> [B, prod(S), n] int64 (CPU).

    Small clouds share one brute-force search; large ones are searched one by one with the tree.
    """
    if pos.ndim != 3 or pos.shape[0] == 0:
        raise FieldInputError(f"batched positions must be [B, k, D] with B >= 1, got {tuple(pos.shape)}")
    if pos.shape[1] > BRUTE_FORCE_MAX_LATENTS:
        return torch.stack([sample_neighbours(p, shape, n) for p in pos])
    _check_shape(shape)
    queries = sample_grid(shape)
    _check(pos.reshape(-1, pos.shape[2]), queries, n)
    if pos.shape[1] < n:
        raise FieldInputError(f"a cloud with {pos.shape[1]} latents cannot give {n} neighbours per query")
    return _brute_force(pos.detach().to("cpu", torch.float64), queries.to(torch.float64), n)
