"""The original implementation's loops, re-created for same-run speed comparisons.

The original fits **one image at a time**: per image a fresh latent tensor and a fresh (unfused)
``torch.optim.Adam``, and per step the loss of the step's pixel chunk through the decoder under
autograd, ``backward``, one Adam step; then one full decode for the PSNR. Its pretraining loops over
the images inside every step: per image the loss, ``backward(retain_graph=True)`` and that image's own
latent Adam step, then the mean of the losses backpropagated once more for one decoder Adam step
(the decoder's gradient is (1 + 1/N) Σ ∇L_i, as the spec records).

These are the original's computations on this project's inputs (the same :class:`FieldGroup` tables,
seeds and pixel schedule), so their results equal :func:`arc.field.fit_clouds` and
:func:`arc.field.pretrain_decoder` up to float rounding (fitting) or up to the (1 + 1/N) decoder
gradient and the per-image order of the latent steps (pretraining). They are not used to produce
representations: ``tools/bench_fit.py --original-loop`` times them against the engines.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from arc.field.config import FieldConfig, FitConfig, PretrainConfig
from arc.field.decoder import Decoder
from arc.field.group import FieldGroup
from arc.field.pretraining import new_decoder


def fit_one_at_a_time(
    images: Sequence[Tensor], decoder: Decoder, field: FieldConfig, fit: FitConfig, split: str, indices: Sequence[int],
    device: torch.device | str | None = None,
) -> Tensor:
    """Fit each image [C, *S] in [0, 1] alone, as the original does, on ``device`` (default: the decoder's); returns
    [N] PSNR (dB) on the CPU. The decoder is frozen."""
    psnr = []
    device = next(decoder.parameters()).device if device is None else torch.device(device)
    decoder = decoder.to(device)
    frozen = [p.requires_grad for p in decoder.parameters()]
    decoder.requires_grad_(False)
    try:
        for image, index in zip(images, indices):
            group = FieldGroup([image], field, split, [index], fit.seed, fit.pixel_fraction, fit.pixel_budget, device)
            latents = group.latents.detach().clone().requires_grad_(True)
            optimiser = torch.optim.Adam([latents], lr=fit.lr)
            for step in range(fit.steps):
                optimiser.zero_grad()
                sum(group.loss(decoder, latents, piece) for piece in group.passes(step)).backward()
                optimiser.step()
            psnr.append(group.psnr(decoder, latents.detach()).cpu())
    finally:
        for param, flag in zip(decoder.parameters(), frozen):
            param.requires_grad_(flag)
    return torch.cat(psnr)


def pretrain_image_by_image(
    images: Sequence[Tensor], field: FieldConfig, pretrain: PretrainConfig, split: str, indices: Sequence[int],
    device: torch.device | str = "cpu",
) -> tuple[Decoder, Tensor]:
    """Pretrain a fresh decoder on ``images`` with the original's per-step loop over images on ``device``; returns
    (decoder, [N] PSNR of the jointly fitted images, on the CPU)."""
    channels, dims = int(images[0].shape[0]), images[0].dim() - 1
    decoder = new_decoder(field, channels, pretrain.seed, dims).to(device)
    groups = [FieldGroup([image], field, split, [index], pretrain.seed, pretrain.pixel_fraction, FitConfig.pixel_budget,
                         device)
              for image, index in zip(images, indices)]
    latents = [group.latents.detach().clone().requires_grad_(True) for group in groups]
    latent_optimisers = [torch.optim.Adam([lat], lr=pretrain.lr) for lat in latents]
    decoder_optimiser = torch.optim.Adam(decoder.parameters(), lr=pretrain.lr)
    for step in range(pretrain.steps):
        decoder_optimiser.zero_grad()
        total = 0.0
        for group, lat, optimiser in zip(groups, latents, latent_optimisers):
            optimiser.zero_grad()
            loss = sum(group.loss(decoder, lat, piece) for piece in group.passes(step))
            loss.backward(retain_graph=True)
            optimiser.step()
            total = total + loss
        (total / len(groups)).backward()
        decoder_optimiser.step()
    psnr = torch.cat([group.psnr(decoder, lat.detach()).cpu() for group, lat in zip(groups, latents)])
    return decoder.eval(), psnr
