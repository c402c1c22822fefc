"""Decoder pretraining as a LightningModule: the computation of ``arc.field.fitting.pretrain_decoder``
wrapped for standalone runs with logging (``tools/train.py fit --config configs/pretrain/<name>.yaml``).

Each training batch is one optimisation step number: the step's pixel chunks of every image are
decoded (split into passes by the pixel budget), the sum of per-image mean squared errors is
back-propagated into the decoder and all latents, and one Adam step follows. At the end the
decoder is saved where the anchoring DataModule looks for it, so a classifier run reuses it.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Optional

import lightning as L
import torch
from torch import Tensor, nn

from arc.field.config import FitConfig
from arc.field.decoder import save_decoder
from arc.field.fitting import new_decoder
from arc.field.group import FieldGroup
from arc.viz import log_reconstructions

log = logging.getLogger(__name__)


class DecoderPretraining(L.LightningModule):
    """Joint training of the shared decoder and the latents of the pretraining images.

    The images, field and pretraining settings come from the attached
    :class:`arc.data.module.PretrainDataModule`.

    Args:
        pixel_budget: supervised pixels per forward/backward pass (memory bound).
        psnr_every: log ``pretrain/psnr`` (a full decode of every image) every this many steps.
        reconstructions: number of images shown in the logged reconstruction panel (W&B only).
    """

    def __init__(self, pixel_budget: int = FitConfig.pixel_budget, psnr_every: int = 50, reconstructions: int = 4) -> None:
        super().__init__()
        if pixel_budget < 1 or psnr_every < 1 or reconstructions < 0:
            raise ValueError("pixel_budget and psnr_every must be >= 1 and reconstructions >= 0")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.group: Optional[FieldGroup] = None
        self.decoder: Optional[nn.Module] = None
        self.latents: Optional[nn.Parameter] = None

    def setup(self, stage: str) -> None:
        if self.group is not None:
            return
        data = self.trainer.datamodule
        images, indices = data.pretraining_images()
        self.field, self.pretrain, self.output = data.field, data.pretrain, data.decoder_path
        self.originals = images[: self.hparams.reconstructions]
        self.group = FieldGroup(images, self.field, "train", indices, self.pretrain.seed, self.pretrain.pixel_fraction,
                                self.hparams.pixel_budget, device=self.trainer.strategy.root_device)
        self.decoder = new_decoder(self.field, self.group.channels, self.pretrain.seed)
        self.latents = nn.Parameter(self.group.latents.detach().clone())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([*self.decoder.parameters(), self.latents], lr=self.pretrain.lr)

    def training_step(self, step: Tensor, batch_idx: int) -> Tensor:
        optimiser = self.optimizers()
        optimiser.zero_grad()
        total = torch.zeros((), device=self.device)
        for piece in self.group.passes(int(step)):
            loss = self.group.loss(self.decoder, self.latents, piece)
            self.manual_backward(loss)
            total += loss.detach()
        optimiser.step()
        self.log("pretrain/loss", total / len(self.group), prog_bar=True)
        done = int(step) + 1
        if done % self.hparams.psnr_every == 0 or done == self.pretrain.steps:
            psnr = self.group.psnr(self.decoder, self.latents.detach())
            self.log("pretrain/psnr", psnr.mean().item(), prog_bar=True)
        return total

    def on_train_end(self) -> None:
        psnr = self.group.psnr(self.decoder, self.latents.detach())
        if self.hparams.reconstructions:
            self._log_reconstructions()
        if self.trainer.is_global_zero:
            meta = {"source": self.trainer.datamodule.source_spec, "images": str(len(self.group)),
                    "psnr_mean": f"{psnr.mean().item():.4f}", "pretrain": str(asdict(self.pretrain))}
            save_decoder(self.output, self.decoder.cpu().eval(), meta)
            log.info("pretrained decoder (mean PSNR %.2f dB) saved to %s", psnr.mean().item(), self.output)

    def _log_reconstructions(self) -> None:
        clouds = self.group.clouds(self.latents.detach()).select(range(len(self.originals)))
        log_reconstructions(self.trainer.loggers, self.decoder, clouds, self.field.spacing, self.field.neighbours,
                            key="pretrain/reconstruction", step=self.global_step, originals=self.originals)
