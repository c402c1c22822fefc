"""Normalisation layers whose CPU results do not depend on the number of threads."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PointBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` on [N, C] point features (same parameters, buffers and state dict).

    On the CPU in training, the batch mean and variance are per-channel column reductions
    (``mean(0)``, ``var(0)``): torch splits those over channels, so the result is the same
    for any number of threads, while the fused CPU kernel splits the N points between threads
    and its sums change with the thread count. A single point in training (one small cloud
    pooled to one voxel) takes the same path on every device, where the fused kernel refuses
    it; its variance is 0, so it normalises to the bias. Elsewhere (eval, CUDA) it is the
    fused kernel.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and x.dim() == 2 and (x.device.type == "cpu" or x.shape[0] == 1)):
            return super().forward(x)
        xf = x.float()  # statistics in float32 also under autocast, as the fused kernel
        mean, var = xf.mean(0), xf.var(0, unbiased=False)
        if self.track_running_stats and self.running_mean is not None:
            self._update_running_stats(mean.detach(), var.detach(), x.shape[0])
        out = (xf - mean) * (var + self.eps).rsqrt()
        out = out * self.weight + self.bias if self.affine else out
        return out.to(x.dtype)

    def _update_running_stats(self, mean: Tensor, var: Tensor, n: int) -> None:
        """Exponential average (or cumulative with momentum None) of the mean and the unbiased variance."""
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (n / max(n - 1, 1))
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(unbiased, momentum)


class PointLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (same parameters and state dict) whose CPU weight and bias gradients are column sums.

    The fused CPU backward splits the rows between threads and adds the per-thread partial
    sums of the weight and bias gradients, so they change with the thread count; normalising
    without affine and applying the affine as a broadcast keeps each gradient a per-channel
    reduction. Elsewhere it is the fused kernel.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or not self.elementwise_affine:
            return super().forward(x)
        out = F.layer_norm(x, self.normalized_shape, None, None, self.eps)
        return out * self.weight + self.bias if self.bias is not None else out * self.weight
