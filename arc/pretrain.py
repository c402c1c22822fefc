"""Decoder pretraining as a LightningModule: :class:`arc.field.pretraining.JointTraining` (the computation
of ``pretrain_decoder``) driven step by step for standalone runs with logging
(``tools/train.py fit --config configs/pretrain/<name>.yaml``).

Each training batch is one optimisation step number (manual optimisation). At the end the decoder
is saved, with the record of :func:`arc.pipeline.save_pretrained`, where the anchoring DataModule
looks for it, so a classifier run reuses it.
"""
from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from torch import Tensor

from arc.field.config import FitConfig
from arc.field.pretraining import JointTraining
from arc.pipeline import save_pretrained
from arc.viz import log_reconstructions


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
        self.joint: Optional[JointTraining] = None

    def setup(self, stage: str) -> None:
        if self.joint is not None:
            return
        data = self.trainer.datamodule
        images, indices = data.pretraining_images()
        self.field, self.pretrain, self.output = data.field, data.pretrain, data.decoder_path
        self.originals = images[: self.hparams.reconstructions]
        self.joint = JointTraining(images, self.field, self.pretrain, "train", indices, self.hparams.pixel_budget,
                                      device=self.trainer.strategy.root_device)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.joint.optimiser()

    def training_step(self, step: Tensor, batch_idx: int) -> Tensor:
        loss = self.joint.train_step(int(step), self.optimizers())
        self.log("pretrain/loss", loss / len(self.joint.group), prog_bar=True)
        done = int(step) + 1
        if done % self.hparams.psnr_every == 0 or done == self.pretrain.steps:
            self.log("pretrain/psnr", self.joint.psnr().mean().item(), prog_bar=True)
        return loss

    def on_train_end(self) -> None:
        psnr = self.joint.psnr()
        if self.hparams.reconstructions:
            clouds = self.joint.clouds().select(range(len(self.originals)))
            log_reconstructions(self.trainer.loggers, self.joint.decoder, clouds, self.field.spacing_for(clouds.dims),
                                self.field.neighbours, key="pretrain/reconstruction", step=self.global_step,
                                originals=self.originals)
        if self.trainer.is_global_zero:
            save_pretrained(self.output, self.joint.trained_decoder(), self.trainer.datamodule.source, psnr)
