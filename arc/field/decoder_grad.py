"""The gradient of a group's loss w.r.t. the decoder's weights and the latents, written by hand.

The kernels of fitting (:class:`arc.field.fitting.LatentGradient`) plus one more matmul per layer
for the weight gradients, on blocks of pixels small enough to stay in cache; no autograd graph.
With x = [lat; off] [M, F] the inputs of a block, per block

    forward   h = relu(x W1^T + b1) [M, W],  y = h W2^T + b2 [M, C]
    backward  dy = 2 weight (y - target) [M, C]
              dW2 += dy^T h,  db2 += sum dy,  dh = (dy W2) * (h > 0) [M, W]
              dW1 += dh^T x,  db1 += sum dh,  dlat = dh W1[:, :nz] scattered by ``index_add_``

(``weight`` = 1 / (chunk pixels * C) per pixel, so the loss is the sum of per-image mean squared
errors, :meth:`arc.field.group.FieldGroup.loss`). The gradients are those of autograd up to the
rounding of sums taken in another order.

On the CPU a pass is cut into ``LANES`` contiguous lanes, each accumulated into its own gradient
buffers by single-threaded kernels (lanes run concurrently on the intra-op threads: no kernel waits
on a thread-pool barrier) and the lanes are summed in a fixed order, so the result does not depend on
the number of threads.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import torch
from torch import Tensor

from arc.field.decoder import Decoder
from arc.field.fitting import CPU_MICRO_BATCH, GPU_MICRO_BATCH, intra_op_threads
from arc.field.group import FieldGroup, Pass

LANES = 8  # gradient buffers of a pass on the CPU (fixed, so results are independent of the thread count)


class JointGradient:
    """Accumulates d(loss of a pass) / d(decoder weights) into the decoder parameters' ``.grad`` and
    d(loss) / d latents into a [K, z] gradient, in float32, blocks of ``micro_batch`` pixels (default: 2,048
    on the CPU, the pixel budget up to 2^20 on CUDA).

    The weights are read at every call (they change between optimiser steps); the ``.grad`` tensors of the
    decoder's parameters must exist before the first call.
    """

    def __init__(self, decoder: Decoder, group: FieldGroup, micro_batch: int | None = None) -> None:
        self.decoder = decoder
        self.group = group
        self.nz = decoder.neighbours * decoder.latent_dim
        cpu = group.device.type == "cpu"
        if micro_batch is None:
            micro_batch = CPU_MICRO_BATCH if cpu else min(group.pixel_budget, GPU_MICRO_BATCH)
        self.micro_batch = max(1, int(micro_batch))
        self.lanes = LANES if cpu else 1
        self._buffers: list[list[Tensor]] = []  # lanes 1.. : [grad, dW1, db1, dW2, db2]

    def _targets(self, grad: Tensor) -> list[list[Tensor]]:
        params = [self.decoder.hidden.weight, self.decoder.hidden.bias, self.decoder.out.weight, self.decoder.out.bias]
        if len(self._buffers) != self.lanes - 1 or (self._buffers and self._buffers[0][0].shape != grad.shape):
            self._buffers = [[torch.zeros_like(grad), *(torch.zeros_like(p) for p in params)] for _ in range(self.lanes - 1)]
        return [[grad, *(p.grad for p in params)], *self._buffers]

    @torch.no_grad()
    def accumulate(self, latents: Tensor, grad: Tensor, piece: Pass, threads: int | None = None) -> Tensor:
        """Add the pass's gradients into the decoder's ``.grad`` and ``grad`` [K, z] with up to ``threads``
        threads (default: the intra-op thread count); return the pass loss (0-dim, float64)."""
        targets = self._targets(grad)
        bounds = [piece.start + piece.size * j // self.lanes for j in range(self.lanes + 1)]
        lanes = [(Pass(a, b), out) for a, b, out in zip(bounds[:-1], bounds[1:], targets) if b > a]
        own = [out for _, out in lanes if out is not targets[0]]  # the lanes' own buffers, in lane order
        for out in own:
            for t in out:
                t.zero_()
        latents = latents.detach()
        threads = torch.get_num_threads() if threads is None else threads
        workers = min(threads, len(lanes), -(-piece.size // self.micro_batch))  # a thread per block at most
        with ExitStack() as stack:
            if self.lanes > 1:  # single-threaded kernels: their bits do not depend on the thread count either
                stack.enter_context(intra_op_threads(1))
            if workers > 1:
                pool = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
                losses = list(pool.map(lambda lane: self._lane(latents, *lane), lanes))
            else:
                losses = [self._lane(latents, *lane) for lane in lanes]
        for out in own:  # in lane order: the sums do not depend on the threads
            for total, part in zip(targets[0], out):
                total.add_(part)
        return torch.stack(losses).sum()

    def _lane(self, latents: Tensor, piece: Pass, out: list[Tensor]) -> Tensor:
        """Accumulate rows ``piece`` into ``out`` = [grad, dW1, db1, dW2, db2]; return their loss (float64)."""
        g, hidden, decoder_out = self.group, self.decoder.hidden, self.decoder.out
        w1, b1, w2, b2 = hidden.weight.detach(), hidden.bias.detach(), decoder_out.weight.detach(), decoder_out.bias.detach()
        grad, dw1, db1, dw2, db2 = out
        w1_lat = w1[:, : self.nz]  # [W, nz] (a view; BLAS takes its stride)
        total = torch.zeros((), dtype=torch.float64, device=g.device)
        for a in range(piece.start, piece.stop, self.micro_batch):
            sl = slice(a, min(a + self.micro_batch, piece.stop))
            idx = g.nbr[sl].reshape(-1)
            rows = sl.stop - sl.start
            x = torch.cat([latents.index_select(0, idx).reshape(rows, -1), g.off[sl]], dim=1)  # [M, F]
            h = torch.addmm(b1, x, w1.t()).relu_()  # [M, W]
            residual = torch.addmm(b2, h, w2.t()) - g.target[sl]  # [M, C]
            weight = g.weight[sl]
            total += (weight * residual.square()).sum().double()
            dy = residual.mul_(2.0 * weight)
            dw2.addmm_(dy.t(), h)
            db2.add_(dy.sum(0))
            dh = torch.ops.aten.threshold_backward(dy @ w2, h, 0.0)  # [M, W]
            dw1.addmm_(dh.t(), x)
            db1.add_(dh.sum(0))
            grad.index_add_(0, idx, (dh @ w1_lat).reshape(idx.numel(), -1))
        return total
