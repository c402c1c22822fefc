"""Decoder pretraining: a fresh shared decoder trained jointly with the latents of a few images.

Same loss and pixel schedule as fitting (:mod:`arc.field.group`), with the gradients of the decoder's
weights and of the latents written by hand (:class:`arc.field.decoder_grad.JointGradient`: the fitting
kernels plus one weight-gradient matmul per layer, no autograd graph) and one Adam over both, in full
float32 on CUDA as on the CPU.
:class:`JointTraining` holds the decoder, the latents and the group and takes one optimisation
step at a time; :func:`pretrain_decoder` runs all steps, and the LightningModule
:class:`arc.pretrain.DecoderPretraining` drives the same steps with logging.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Optional, Sequence

import torch
from torch import Tensor, nn

from arc.cloud import CloudBatch
from arc.field.config import FieldConfig, FitConfig, PretrainConfig
from arc.field.decoder import Decoder
from arc.field.decoder_grad import JointGradient
from arc.field.errors import FieldInputError
from arc.field.fitting import adam, cuda_tf32, intra_op_threads
from arc.field.group import FieldGroup
from arc.field.latent_init import PatchInit
from arc.files import atomic_write
from arc.seeding import item_seed

log = logging.getLogger(__name__)


def new_decoder(field: FieldConfig, channels: int, seed: int, dims: int = 2) -> Decoder:
    """A decoder of ``dims``-D samples (images: 2) with PyTorch's default init drawn from a seed (the global RNG
    is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(item_seed(seed, "decoder-init", 0))
        return Decoder(field.latent_dim, field.neighbours, channels, field.offset_mode, dims)


class JointTraining(nn.Module):
    """A fresh decoder (``decoder``) and the latents [K, z] (``latents``, initialised from the group's) of the
    images of ``group`` (a :class:`FieldGroup` on ``device``), trained together.

    Loss of a step = sum over images of their mean squared error over the step's pixels (fit colour space).
    """

    def __init__(
        self,
        images: Sequence[Tensor],
        field: FieldConfig,
        pretrain: PretrainConfig,
        split: str,
        indices: Sequence[int],
        pixel_budget: int = FitConfig.pixel_budget,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not images:
            raise FieldInputError("decoder pretraining needs at least one image")
        self.lr = pretrain.lr
        self.images = list(images)
        self.colour = field.colour
        self.group = FieldGroup(images, field, split, indices, pretrain.seed, pretrain.pixel_fraction, pixel_budget, device)
        self.decoder = new_decoder(field, self.group.channels, pretrain.seed, self.group.dims).to(self.group.device)
        self.latents = nn.Parameter(self.group.latents.detach().clone())
        self.gradient = JointGradient(self.decoder, self.group)

    def optimiser(self) -> torch.optim.Adam:
        """One Adam over the decoder's weights and the latents (fused on the CPU and CUDA)."""
        return adam([*self.decoder.parameters(), self.latents], self.lr, self.group.device)

    def _full_float32(self) -> ContextManager:
        return cuda_tf32(False) if self.group.device.type == "cuda" else nullcontext()

    def _step_threads(self) -> ContextManager:
        """On the CPU, the whole step with single-threaded kernels (the gradient runs its lanes on threads of
        its own; toggling the intra-op thread count inside a step wakes the thread pool at every step)."""
        return intra_op_threads(1) if self.group.device.type == "cpu" else nullcontext()

    def train_step(self, step: int, optimiser: torch.optim.Optimizer) -> Tensor:
        """Optimisation step number ``step``: zero the gradients, accumulate those of each of the step's passes
        (:class:`JointGradient`), one ``optimiser`` step. Returns the step's loss (0-dim, float64, on the device)."""
        for param in self.parameters():
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        threads = torch.get_num_threads()  # for the gradient's lanes; the step's own kernels run on one
        with self._full_float32(), self._step_threads():
            optimiser.zero_grad(set_to_none=False)
            total = torch.zeros((), dtype=torch.float64, device=self.group.device)
            for piece in self.group.passes(step):
                total += self.gradient.accumulate(self.latents, self.latents.grad, piece, threads)
            optimiser.step()
        return total

    def psnr(self) -> Tensor:
        """[B] PSNR (dB, CPU) of every image decoded from the current latents."""
        with self._full_float32():
            return self.group.psnr(self.decoder, self.latents.detach())

    def clouds(self) -> CloudBatch:
        """The current clouds (CPU)."""
        return self.group.clouds(self.latents)

    def trained_decoder(self) -> Decoder:
        """The decoder as trained so far (CPU, eval mode), carrying the latent-start map learned from the current
        latents when the samples are images (``fit.init: patch``, :class:`PatchInit`)."""
        decoder = self.decoder.eval().cpu()
        if self.group.dims == 2:
            decoder.latent_start = PatchInit.learn(self.images, self.clouds(), self.colour)
        return decoder


def save_progress(path: Path, step: int, training: JointTraining, optimiser: torch.optim.Optimizer) -> None:
    """Write the state after ``step`` steps (decoder, latents, Adam) atomically to ``path``."""
    state = {"step": step, "training": training.state_dict(), "optimiser": optimiser.state_dict()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_progress(path: Path, training: JointTraining, optimiser: torch.optim.Optimizer) -> int:
    """Restore a state written by :func:`save_progress`; returns the number of steps it had done (0: none usable)."""
    try:
        state = torch.load(path, map_location=training.group.device, weights_only=True)
        training.load_state_dict(state["training"])
        optimiser.load_state_dict(state["optimiser"])
        return int(state["step"])
    except Exception as err:  # a truncated or foreign file (the unpickler raises many kinds): start over
        log.warning("pretraining progress %s is unusable (%s): starting over", path, err)
        return 0


def pretrain_decoder(
    images: Sequence[Tensor],
    field: FieldConfig,
    pretrain: PretrainConfig,
    split: str,
    indices: Sequence[int],
    device: torch.device | str | None = None,
    progress: Optional[Callable[[int, float], None]] = None,
    pixel_budget: int = FitConfig.pixel_budget,
    checkpoint: Optional[Path] = None,
    checkpoint_every: int = 50,
) -> tuple[Decoder, Tensor]:
    """Train a shared decoder jointly with the latents of ``images`` [C, H, W] in [0, 1] (or samples [C, *S] of one D;
    the decoder is then D-dimensional) for ``pretrain.steps`` steps.

    ``progress(step, loss)`` after each step. With ``checkpoint``, the state is saved there every
    ``checkpoint_every`` steps and a run resumes from it: a step depends only on (seed, step) and the
    state, so a resumed run gives the same decoder bits as an uninterrupted one; the file is removed at
    the end. Returns (decoder on CPU, eval mode, with its latent-start map for images
    (:meth:`JointTraining.trained_decoder`), [B] PSNR of the jointly fitted images).
    """
    training = JointTraining(images, field, pretrain, split, indices, pixel_budget, device)
    optimiser = training.optimiser()
    start = load_progress(checkpoint, training, optimiser) if checkpoint is not None and checkpoint.exists() else 0
    if start:
        log.info("pretraining resumes at step %d of %d from %s", start, pretrain.steps, checkpoint)
    for step in range(start, pretrain.steps):
        loss = training.train_step(step, optimiser)
        if progress is not None:
            progress(step + 1, float(loss))
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < pretrain.steps:
            save_progress(checkpoint, step + 1, training, optimiser)
    psnr = training.psnr()
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return training.trained_decoder(), psnr
