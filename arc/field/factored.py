"""The factored latent gradient (``fit.engine = "factored"``): the first layer applied per latent, not per pixel.

With the decoder frozen, the first layer's pre-activation of a pixel p with neighbours k_1..k_n is

    a_p = b1 + W1_off off_p + sum_j W1_j lat[k_j]        (W1_j: the [W, z] block of neighbour slot j)

and the latent part of the input gradient is dlat[k_j] += W1_j^T dh_p. Both are linear in the
latents, so a step projects every latent by every slot's block once (the table Q [K, n, W] =
one [K, z] x [z, nW] matmul), gathers and sums n rows of Q per pixel (``embedding_bag``), scatters
each pixel's dh into the rows it read (G [K, n, W], ``index_add_`` per slot), and ends with one
transposed projection dlat = G [K, nW] x [nW, z].

Layout: the rows of a pass are ordered by image, so a block of pixels reads a narrow range of
latents [lo, hi). Such a block projects only its own range, gathers from and scatters into a table
that stays in cache, and projects its G back into grad[lo:hi] (a latent shared by two blocks is
projected twice and its two partial gradients add up, by linearity). A pass whose blocks would
project more than twice its latents (a large image split into blocks of random pixels) reads one
table of the whole group instead, projected once per step. Per supervised pixel only the offsets' part
(2 nD W), the output layer (4 W C) and the 2 n W gather/scatter additions remain; per step and
latent 4 n z W. With K ~ 0.2 x the pixels supervised per step (the defaults) that is about a
quarter of the dense engine's (:class:`arc.field.fitting.LatentGradient`) arithmetic; the gathers
and scatters are memory-bound, which is what decides which engine is faster
(docs/benchmarks.md). Results equal the dense engine's up to float rounding.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch.nn import functional

from arc.field.decoder import Decoder
from arc.field.group import FieldGroup, Pass


class FactoredGradient:
    """The gradient of a group's loss w.r.t. its latents through a frozen decoder, one step at a time.

    ``dtype`` is the precision of the two projections (float32, or bfloat16/float16 on CUDA); the
    table, its gathers and scatters, the offsets' and the output layer's matmuls stay float32.
    ``micro_batch``: pixels per block of the per-pixel work.
    """

    def __init__(self, decoder: Decoder, group: FieldGroup, dtype: torch.dtype = torch.float32, micro_batch: int = 2048) -> None:
        n, z = decoder.neighbours, decoder.latent_dim
        w1 = decoder.hidden.weight.detach().to(group.device, torch.float32)  # [W, n(z + D)]
        self.width = w1.shape[0]
        # project[c, j W + o] = W1[o, j z + c]: latents [K, z] @ project = Q [K, n, W] flattened
        self.project = w1[:, : n * z].reshape(self.width, n, z).permute(2, 1, 0).reshape(z, n * self.width).to(dtype).contiguous()
        self.w1_off_t = w1[:, n * z :].t()  # [nD, W]
        self.b1 = decoder.hidden.bias.detach().to(group.device, torch.float32)
        self.w2 = decoder.out.weight.detach().to(group.device, torch.float32)  # [C, W]
        self.w2_t = self.w2.t()
        self.b2 = decoder.out.bias.detach().to(group.device, torch.float32)
        self.n = n
        self.dtype = dtype
        self.group = group
        self.micro_batch = max(1, int(micro_batch))
        self.slots = torch.arange(n, device=group.device)  # int64: index_add_ takes a slow path with int32 indices
        self._blocks: dict[tuple[int, int], list[tuple[slice, int, int]]] = {}

    def blocks(self, piece: Pass) -> list[tuple[slice, int, int]]:
        """The pass's pixel blocks (rows, lo, hi): each reads latents [lo, hi) only; lo = hi = -1 for blocks of a
        pass that reads the whole group's table (computed once per pass and cached)."""
        key = (piece.start, piece.stop)
        if key not in self._blocks:
            nbr = self.group.nbr
            cuts = range(piece.start, piece.stop, self.micro_batch)
            found = [(slice(a, min(a + self.micro_batch, piece.stop)),) for a in cuts]
            spans = [(int(nbr[sl].min()), int(nbr[sl].max()) + 1) for (sl,) in found]
            total = sum(hi - lo for lo, hi in spans)
            local = total <= 2 * (max(hi for _, hi in spans) - min(lo for lo, _ in spans))
            self._blocks[key] = [(sl, lo, hi) if local else (sl, -1, -1) for (sl,), (lo, hi) in zip(found, spans)]
        return self._blocks[key]

    def step(self, latents: Tensor, grad: Tensor, passes: Sequence[Pass], loss: bool = False) -> Tensor | None:
        """Add d(loss of the step's passes)/d latents into ``grad`` [K, z]; return the loss (0-dim, float64) or None.

        The latents must not change between the passes of one step (a whole-group table is projected once).
        """
        total = torch.zeros((), dtype=torch.float64, device=grad.device) if loss else None
        whole: tuple[Tensor, Tensor] | None = None
        for piece in passes:
            for sl, lo, hi in self.blocks(piece):
                if lo >= 0:
                    table, scattered = self._project(latents[lo:hi])
                    self._block(sl, lo, table, scattered, total)
                    self._project_back(scattered, grad[lo:hi])
                else:
                    whole = self._project(latents) if whole is None else whole
                    self._block(sl, 0, *whole, total)
        if whole is not None:
            self._project_back(whole[1], grad)
        return total

    def _project(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """latents [k, z] -> (their table Q [k n, W], float32; a zero G of the same shape)."""
        table = (latents.to(self.dtype) @ self.project).float().view(-1, self.width)
        return table, torch.zeros_like(table)

    def _project_back(self, scattered: Tensor, grad: Tensor) -> None:
        """grad [k, z] += G [k, nW] x project^T."""
        back = scattered.view(grad.shape[0], -1)
        if self.dtype == grad.dtype:
            grad.addmm_(back, self.project.t())
        else:
            grad.add_((back.to(self.dtype) @ self.project.t()).to(grad.dtype))

    def _block(self, sl: slice, lo: int, table: Tensor, scattered: Tensor, total: Tensor | None) -> None:
        """Forward and backward of the pixels ``sl`` against ``table`` (latents from ``lo`` on); dh into ``scattered``."""
        g = self.group
        rows = ((g.nbr[sl] - lo).long() * self.n + self.slots).t().contiguous()  # [n, m] rows of the table
        h = functional.embedding_bag(rows.t(), table, mode="sum")  # [m, W] = sum_j Q[k_j, j]
        h.addmm_(g.off[sl], self.w1_off_t).add_(self.b1).relu_()
        residual = torch.addmm(self.b2, h, self.w2_t) - g.target[sl]
        weight = g.weight[sl]
        if total is not None:
            total += (weight * residual.square()).sum().double()
        dh = torch.ops.aten.threshold_backward((residual * (2.0 * weight)) @ self.w2, h, 0.0)  # [m, W]
        for j in range(self.n):
            scattered.index_add_(0, rows[j], dh)
