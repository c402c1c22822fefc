"""Space-filling-curve serialization of integer grid coordinates.

Codes are int64: the cloud (batch) index sits above bit ``3 * DEPTH`` and the
curve index of the voxel below it, so sorting the codes groups the points by
cloud (in cloud order) and orders each cloud along its curve.

Orders: ``"z"`` (Morton / z-order), ``"hilbert"``, and their transposed
variants ``"z-trans"`` / ``"hilbert-trans"`` in which the first two axes are
swapped before encoding. The depth is fixed (``DEPTH`` = 16 bits per axis) so
a cloud's order never depends on the other clouds in its batch.

A cloud whose grid z is 0 everywhere (ARC's 2D clouds) is ordered by the 2D
Hilbert curve of (x, y): a 3D Hilbert curve restricted to a plane is not a
locality-preserving 2D curve. For Morton codes the zero z bits do not change
the order, so the 3D code is used for every cloud.
"""
from __future__ import annotations

import torch
from torch import Tensor

DEPTH = 16
"""Bits per axis of a grid coordinate (grid coordinates lie in [0, 2**DEPTH))."""

MAX_CLOUDS = 1 << (63 - 3 * DEPTH)
"""Number of clouds whose index fits above the curve bits of an int64 code."""

ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")


_SPREAD = {
    2: ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF), (4, 0x0F0F0F0F0F0F0F0F),
        (2, 0x3333333333333333), (1, 0x5555555555555555)),
    3: ((32, 0x001F00000000FFFF), (16, 0x001F0000FF0000FF), (8, 0x100F00F00F00F00F),
        (4, 0x10C30C30C30C30C3), (2, 0x1249249249249249)),
}


def interleave_bits(coords: Tensor, depth: int = DEPTH) -> Tensor:
    """Interleave the low ``depth`` (<= 16) bits of each of D in {2, 3} columns, column 0 most significant.

    coords: [N, D] non-negative int64. Returns [N] int64 whose bit ``D*i + (D-1-d)``
    is bit i of column d (bits are spread with the usual shift-and-mask steps).
    """
    n_dims = coords.shape[1]
    code = torch.zeros(coords.shape[0], dtype=torch.long, device=coords.device)
    for d in range(n_dims):
        v = coords[:, d].long() & ((1 << depth) - 1)
        for shift, mask in _SPREAD[n_dims]:
            v = (v | (v << shift)) & mask
        code |= v << (n_dims - 1 - d)
    return code


def morton_encode(coords: Tensor, depth: int = DEPTH) -> Tensor:
    """Z-order (Morton) index of [N, D] non-negative int coordinates -> [N] int64."""
    return interleave_bits(coords.long(), depth)


def hilbert_encode(coords: Tensor, depth: int = DEPTH) -> Tensor:
    """Hilbert-curve index of [N, D] non-negative int coordinates in [0, 2**depth) -> [N] int64.

    Skilling's iterative algorithm ("Programming the Hilbert curve", 2004): undo the
    per-level rotations/reflections, Gray-encode the transposed index, then interleave
    its bits (column 0 most significant). Consecutive indices are grid neighbours.
    """
    x = [coords[:, d].long().clone() for d in range(coords.shape[1])]
    n_dims = len(x)
    q = 1 << (depth - 1)
    while q > 1:
        p = q - 1
        for i in range(n_dims):
            high = (x[i] & q) != 0
            if i == 0:
                x[0] = torch.where(high, x[0] ^ p, x[0])
                continue
            t = (x[0] ^ x[i]) & p
            x[0] = torch.where(high, x[0] ^ p, x[0] ^ t)
            x[i] = torch.where(high, x[i], x[i] ^ t)
        q >>= 1
    for i in range(1, n_dims):
        x[i] = x[i] ^ x[i - 1]
    t = torch.zeros_like(x[0])
    q = 1 << (depth - 1)
    while q > 1:
        t = torch.where((x[n_dims - 1] & q) != 0, t ^ (q - 1), t)
        q >>= 1
    x = [xi ^ t for xi in x]
    return interleave_bits(torch.stack(x, dim=1), depth)


def even_depth(max_coord: int) -> int:
    """Smallest even bit count (>= 2) covering ``max_coord``.

    The 2D Hilbert curve of depth d + 2 visits [0, 2**d)^2 in the same order as the
    depth-d curve (its first quadrant of a first quadrant is transposed twice), so any
    even depth gives the order of depth ``DEPTH``; the short one is just cheaper.
    """
    bits = max(int(max_coord).bit_length(), 1)
    return bits + (bits & 1)


def encode(grid_coord: Tensor, batch: Tensor, order: str, num_clouds: int | None = None) -> Tensor:
    """Serialization code of every point for one curve order.

    grid_coord: [N, 3] int64 in [0, 2**DEPTH); batch: [N] int64 cloud index.
    Returns [N] int64 = batch << 3*DEPTH | curve index.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown serialization order {order!r}; expected one of {ORDERS}")
    g = grid_coord.long()
    if order.endswith("-trans"):
        g = g[:, [1, 0, 2]]
    if order.startswith("z"):
        code = morton_encode(g)
    else:
        b = int(batch.max()) + 1 if num_clouds is None else num_clouds
        z_max = torch.zeros(b, dtype=torch.long, device=g.device).scatter_reduce(0, batch, g[:, 2], "amax")
        flat = z_max[batch] == 0
        code = hilbert_encode(g[:, :2], even_depth(int(g[:, :2].max())))
        if not bool(flat.all()):
            code = torch.where(flat, code, hilbert_encode(g))
    return (batch.long() << (3 * DEPTH)) | code
