"""The factored latent gradient (``fit.engine = "factored"``): the first layer applied per latent, not per pixel.

With the decoder frozen, the first layer's pre-activation of a pixel p with neighbours k_1..k_n is

    a_p = b1 + W1_off off_p + sum_j W1_j lat[k_j]        (W1_j: the [W, z] block of neighbour slot j)

and the latent part of the input gradient is dlat[k_j] += W1_j^T dh_p. Both are linear in the
latents, so per block of pixels the engine projects the latents the block reads by every slot's block
once (its table Q [u, n, W] = one [u, z] x [z, nW] matmul, b1 added to slot 0), sums n rows of Q per
pixel (``embedding_bag``), sums each table row's dh over the pixels that read it (the same
``embedding_bag`` the other way round, over the block's precomputed transposed index) and ends with one
transposed projection dlat = G [u, nW] x [nW, z] added into the block's latents.

Layout: rows of a pass are ordered by image, and a large image's rows in Z-order of its grid
(:mod:`arc.field.group`), so a block of pixels reads a few hundred latents whose table stays in cache.
A latent read by two blocks is projected twice and its two partial gradients add up, by linearity.
Per supervised pixel only the offsets' part (2 nD W), the output layer (4 W C) and the 2 n W
gather/scatter additions remain; per step and latent 4 n z W (times the blocks that read it). With
K ~ 0.2 x the pixels supervised per step (the defaults) that is about a quarter of the dense engine's
(:class:`arc.field.fitting.LatentGradient`) arithmetic. Results equal the dense engine's up to float
rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torch.nn import functional

from arc.field.decoder import Decoder
from arc.field.group import FieldGroup, Pass


@dataclass(frozen=True)
class Block:
    """Rows ``rows`` of a group's pixel table and the u latents they read.

    ``latents`` [u] int64 (global, ascending); the block's table has u n rows, row l n + j holding latent
    ``latents[l]`` projected by slot j. ``gather`` [m, n] int32: the table rows each pixel sums; ``scatter``
    [m n] int32: pixel numbers (0..m-1) grouped by the table row they read, that row's group starting at
    ``scatter_offsets`` [u n] int32.
    """

    rows: slice
    latents: Tensor
    gather: Tensor
    scatter: Tensor
    scatter_offsets: Tensor

    def forward(self, group: FieldGroup, latents: Tensor, project: Tensor, w1_off_t: Tensor, b1: Tensor, w2: Tensor,
                b2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The decoder on the block's pixels, the first layer through the block's table -> (its latents [u, z],
        h [m, W] after the ReLU, residual y - target [m, C]). ``project`` [z, nW] (its dtype is the projection's
        precision), ``w1_off_t`` [nD, W]; everything else float32."""
        lat = latents.index_select(0, self.latents)
        table = (lat.to(project.dtype) @ project).float()  # [u, nW]
        width = b1.shape[0]
        table[:, :width] += b1  # slot 0 carries the bias: every pixel sums one row of each slot
        h = functional.embedding_bag(self.gather, table.view(-1, width), mode="sum")  # [m, W] = sum_j Q[k_j, j]
        h.addmm_(group.off[self.rows], w1_off_t).relu_()
        return lat, h, torch.addmm(b2, h, w2.t()) - group.target[self.rows]

    def table_gradient(self, dh: Tensor) -> Tensor:
        """dh [m, W] of the block's pixels summed per table row -> G [u, nW]."""
        return functional.embedding_bag(self.scatter, dh, self.scatter_offsets, mode="sum").view(self.latents.numel(), -1)


def latent_projection(w1: Tensor, neighbours: int, latent_dim: int) -> Tensor:
    """The latent part of the first layer's weight W1 [W, n(z + D)] rearranged as P [z, nW] with
    P[c, j W + o] = W1[o, j z + c], so that latents [k, z] @ P = Q [k, n, W] flattened."""
    width, nz = w1.shape[0], neighbours * latent_dim
    return w1[:, :nz].reshape(width, neighbours, latent_dim).permute(2, 1, 0).reshape(latent_dim, neighbours * width)


def pixel_blocks(nbr: Tensor, piece: Pass, size: int) -> list[Block]:
    """The pass's rows cut into blocks of ``size`` pixels, with the index tables of each (``nbr`` [T, n]: the
    group's global latent indices)."""
    n = nbr.shape[1]
    blocks = []
    for start in range(piece.start, piece.stop, size):
        rows = slice(start, min(start + size, piece.stop))
        latents, local = torch.unique(nbr[rows].long(), return_inverse=True)  # local [m, n]
        table_rows = (local * n + torch.arange(n, device=nbr.device)).reshape(-1)  # [m n]
        scatter = torch.sort(table_rows, stable=True).indices // n
        counts = torch.bincount(table_rows, minlength=latents.numel() * n)
        offsets = torch.cumsum(counts, 0) - counts
        blocks.append(Block(rows, latents, table_rows.view(-1, n).int(), scatter.int(), offsets.int()))
    return blocks


class FactoredGradient:
    """The gradient of a group's loss w.r.t. its latents through a frozen decoder, one step at a time.

    ``dtype`` is the precision of the two projections (float32, or bfloat16/float16 on CUDA); the
    table, its gathers and scatters, the offsets' and the output layer's matmuls stay float32.
    ``micro_batch``: pixels per block. A pass's blocks are computed at its first step and kept (32 bytes
    per pixel).
    """

    def __init__(self, decoder: Decoder, group: FieldGroup, dtype: torch.dtype = torch.float32, micro_batch: int = 2048) -> None:
        n, z = decoder.neighbours, decoder.latent_dim
        w1 = decoder.hidden.weight.detach().to(group.device, torch.float32)  # [W, n(z + D)]
        self.project = latent_projection(w1, n, z).to(dtype).contiguous()  # [z, nW]
        self.w1_off_t = w1[:, n * z :].t()  # [nD, W]
        self.b1 = decoder.hidden.bias.detach().to(group.device, torch.float32)
        self.w2 = decoder.out.weight.detach().to(group.device, torch.float32)  # [C, W]
        self.b2 = decoder.out.bias.detach().to(group.device, torch.float32)
        self.dtype = dtype
        self.group = group
        self.micro_batch = max(1, int(micro_batch))
        self._blocks: dict[tuple[int, int], list[Block]] = {}

    def blocks(self, piece: Pass) -> list[Block]:
        """The pass's pixel blocks (computed at the first call and kept)."""
        key = (piece.start, piece.stop)
        if key not in self._blocks:
            self._blocks[key] = pixel_blocks(self.group.nbr, piece, self.micro_batch)
        return self._blocks[key]

    def step(self, latents: Tensor, grad: Tensor, passes: Sequence[Pass], loss: bool = False) -> Tensor | None:
        """Add d(loss of the step's passes)/d latents into ``grad`` [K, z]; return the loss (0-dim, float64) or None."""
        total = torch.zeros((), dtype=torch.float64, device=grad.device) if loss else None
        for piece in passes:
            for block in self.blocks(piece):
                grad.index_add_(0, block.latents, self._block(block, latents, total))
        return total

    def _block(self, block: Block, latents: Tensor, total: Tensor | None) -> Tensor:
        """Forward and backward of the block's pixels -> the gradient [u, z] of the latents it reads."""
        lat, h, residual = block.forward(self.group, latents, self.project, self.w1_off_t, self.b1, self.w2, self.b2)
        weight = self.group.weight[block.rows]
        if total is not None:
            total += (weight * residual.square()).sum().double()
        dh = torch.ops.aten.threshold_backward((residual * (2.0 * weight)) @ self.w2, h, 0.0)  # [m, W]
        back = block.table_gradient(dh)
        if self.dtype == torch.float32:
            return back @ self.project.t()
        return (back.to(self.dtype) @ self.project.t()).to(lat.dtype)
