"""The gradient of a group's loss w.r.t. the decoder's weights and the latents, written by hand.

The kernels of the factored fitting engine (:class:`arc.field.factored.FactoredGradient`: the first layer
applied per latent through the table Q = latents x P, P the [z, nW] rearranged latent part of W1) plus
the weight gradients, on blocks of pixels whose tables stay in cache; no autograd graph. Per block, with
``lat`` [u, z] the latents it reads, ``off`` [M, nD] its offsets:

    forward   h = relu(sum_j Q[k_j, j] + W1_off off + b1) [M, W],  y = h W2^T + b2 [M, C]
    backward  dy = 2 weight (y - target) [M, C]
              dW2 += dy^T h,  db2 += sum dy,  dh = (dy W2) * (h > 0) [M, W]
              dW1_off += dh^T off,  db1 += sum dh,  G = dh summed per table row [u, nW]
              dP += lat^T G,  dlat = G P^T, added into the block's latents

(``weight`` = 1 / (chunk pixels * C) per pixel, so the loss is the sum of per-image mean squared
errors, :meth:`arc.field.group.FieldGroup.loss`); dP is rearranged into the latent part of dW1 at the
end of a pass. The gradients are those of autograd up to the rounding of sums taken in another order.

On the CPU a pass is cut into ``LANES`` contiguous lanes, each accumulated into its own weight-gradient
buffers by single-threaded kernels (lanes run concurrently on the intra-op threads: no kernel waits
on a thread-pool barrier); the lanes' sums and the blocks' latent gradients are added in a fixed order,
so the result does not depend on the number of threads.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import torch
from torch import Tensor

from arc.field.decoder import Decoder
from arc.field.factored import Block, latent_projection, pixel_blocks
from arc.field.fitting import CPU_MICRO_BATCH, GPU_MICRO_BATCH, intra_op_threads
from arc.field.group import FieldGroup, Pass

LANES = 8  # gradient buffers of a pass on the CPU (fixed, so results are independent of the thread count)


class JointGradient:
    """Accumulates d(loss of a pass) / d(decoder weights) into the decoder parameters' ``.grad`` and
    d(loss) / d latents into a [K, z] gradient, in float32, blocks of ``micro_batch`` pixels (default: 2,048
    on the CPU, the pixel budget up to 2^20 on CUDA).

    The weights are read at every call (they change between optimiser steps); the ``.grad`` tensors of the
    decoder's parameters must exist before the first call. A pass's blocks are computed at its first call and
    kept (32 bytes per pixel).
    """

    def __init__(self, decoder: Decoder, group: FieldGroup, micro_batch: int | None = None) -> None:
        self.decoder = decoder
        self.group = group
        self.n, self.z = decoder.neighbours, decoder.latent_dim
        cpu = group.device.type == "cpu"
        if micro_batch is None:
            micro_batch = CPU_MICRO_BATCH if cpu else min(group.pixel_budget, GPU_MICRO_BATCH)
        self.micro_batch = max(1, int(micro_batch))
        self.lanes = LANES if cpu else 1
        self._blocks: dict[tuple[int, int], list[Block]] = {}

    def lane_blocks(self, piece: Pass) -> list[list[Block]]:
        """The pass cut into lanes of blocks (computed at the first call and kept)."""
        bounds = [piece.start + piece.size * j // self.lanes for j in range(self.lanes + 1)]
        lanes = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b > a:
                if (a, b) not in self._blocks:
                    self._blocks[(a, b)] = pixel_blocks(self.group.nbr, Pass(a, b), self.micro_batch)
                lanes.append(self._blocks[(a, b)])
        return lanes

    @torch.no_grad()
    def accumulate(self, latents: Tensor, grad: Tensor, piece: Pass, threads: int | None = None) -> Tensor:
        """Add the pass's gradients into the decoder's ``.grad`` and ``grad`` [K, z] with up to ``threads``
        threads (default: the intra-op thread count); return the pass loss (0-dim, float64)."""
        hidden, out = self.decoder.hidden, self.decoder.out
        nz, width = self.n * self.z, hidden.out_features
        w1 = hidden.weight.detach()
        project = latent_projection(w1, self.n, self.z).contiguous()  # [z, nW]
        weights = (project, w1[:, nz:].t(), hidden.bias.detach(), out.weight.detach(), out.bias.detach())
        latents = latents.detach()
        lanes = self.lane_blocks(piece)
        threads = torch.get_num_threads() if threads is None else threads
        workers = min(threads, len(lanes), sum(len(blocks) for blocks in lanes))  # a thread per block at most
        with ExitStack() as stack:
            if self.lanes > 1:  # single-threaded kernels: their bits do not depend on the thread count either
                stack.enter_context(intra_op_threads(1))
            if workers > 1:
                pool = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
                results = list(pool.map(lambda blocks: self._lane(latents, blocks, weights), lanes))
            else:
                results = [self._lane(latents, blocks, weights) for blocks in lanes]
        total = torch.zeros((), dtype=torch.float64, device=grad.device)
        sums = [torch.zeros_like(project), torch.zeros_like(w1[:, nz:]), *(torch.zeros_like(p) for p in weights[2:])]
        for loss, lane_sums, latent_grads in results:  # in lane and block order: the sums do not depend on the threads
            total += loss
            for acc, part in zip(sums, lane_sums):
                acc.add_(part)
            for index, dlat in latent_grads:
                grad.index_add_(0, index, dlat)
        d_project, d_w1_off, d_b1, d_w2, d_b2 = sums
        hidden.weight.grad[:, :nz] += d_project.view(self.z, self.n, width).permute(2, 1, 0).reshape(width, nz)
        hidden.weight.grad[:, nz:] += d_w1_off
        hidden.bias.grad += d_b1
        out.weight.grad += d_w2
        out.bias.grad += d_b2
        return total

    def _lane(self, latents: Tensor, blocks: list[Block], weights: tuple[Tensor, ...]):
        """The loss (float64), weight-gradient sums [dP, dW1_off, db1, dW2, db2] and per-block (latent indices,
        latent gradient [u, z]) of one lane's blocks."""
        g = self.group
        project, w1_off_t, b1, w2, b2 = weights
        width = b1.shape[0]
        d_project, d_w1_off = torch.zeros_like(project), torch.zeros(width, w1_off_t.shape[0], device=b1.device)
        d_b1, d_w2, d_b2 = torch.zeros_like(b1), torch.zeros_like(w2), torch.zeros_like(b2)
        total = torch.zeros((), dtype=torch.float64, device=g.device)
        latent_grads = []
        for block in blocks:
            lat, h, residual = block.forward(g, latents, project, w1_off_t, b1, w2, b2)
            weight = g.weight[block.rows]
            total += (weight * residual.square()).sum().double()
            dy = residual.mul_(2.0 * weight)
            d_w2.addmm_(dy.t(), h)
            d_b2.add_(dy.sum(0))
            dh = torch.ops.aten.threshold_backward(dy @ w2, h, 0.0)  # [m, W]
            d_w1_off.addmm_(dh.t(), g.off[block.rows])
            d_b1.add_(dh.sum(0))
            back = block.table_gradient(dh)  # G [u, nW]
            d_project.addmm_(lat.t(), back)
            latent_grads.append((block.latents, back @ project.t()))
        return total, (d_project, d_w1_off, d_b1, d_w2, d_b2), latent_grads
