"""The plain batched-autograd loop: the reference the INR engine is checked and timed against.

What one would write first: every image's INR in one [N, ...] stack of leaf tensors, the forward
(:func:`plain_forward`) under autograd, ``loss.backward()``, ``torch.optim.Adam`` with its
defaults, all images in one batch with the default intra-op threads. Same init, pixel schedule and
loss as :func:`arc.baselines.fitting.fit_inrs`, so its weights agree with the engine's up to float
rounding (``tests/test_baselines_inr.py``); ``tools/bench_fit.py --inr`` times both in one run.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from arc.baselines.fitting import INRFitConfig, pixel_rows, psnr_of
from arc.baselines.inr import INRConfig, WeightStack, encode, sample_coordinates
from arc.field.group import chunk_size


def plain_forward(config: INRConfig, stack: WeightStack, inputs: Tensor) -> Tensor:
    """[B, M, C] outputs at ``inputs`` [B, M, in] or [M, in], written the obvious way (for autograd)."""
    h = inputs
    for layer, omega in enumerate(config.scales()):
        pre = h @ stack.weights[layer].transpose(1, 2) + stack.biases[layer].unsqueeze(1)
        h = torch.sin(omega * pre) if config.kind == "siren" else torch.relu(pre)
    return h @ stack.weights[-1].transpose(1, 2) + stack.biases[-1].unsqueeze(1)


def autograd_fit(config: INRConfig, stack: WeightStack, images: Tensor, fit: INRFitConfig, order: Optional[Tensor] = None) -> Tensor:
    """Fit ``stack`` (updated in place) to ``images`` [B, C, *S] in [0, 1] with autograd and
    ``torch.optim.Adam``; ``order`` [B, ΠS] as in :func:`~arc.baselines.fitting.fit_stack`. Returns [B] PSNR."""
    target = config.to_fit_space(pixel_rows(images))
    pixels = target.shape[1]
    inputs = encode(config, sample_coordinates(images.shape[2:], images.device))
    m = chunk_size(pixels, fit.pixel_fraction)
    params = stack.tensors()
    for param in params:
        param.requires_grad_(True)
    optimiser = torch.optim.Adam(params, lr=fit.lr)
    for step in range(fit.steps):
        if m < pixels:
            rows = order[:, step % math.ceil(pixels / m) * m :][:, :m]
            x, t = inputs[rows], target.gather(1, rows.unsqueeze(2).expand(-1, -1, target.shape[2]))
        else:
            x, t = inputs, target
        out = plain_forward(config, stack, x)
        loss = (out - t).square().mean(dim=(1, 2)).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    for param in params:
        param.requires_grad_(False)
    with torch.no_grad():
        return psnr_of(config, stack, images)
