"""A learned starting point for the latents (``fit.init: patch``): a ridge map from the patch around a latent to
its fitted value.

Fitting starts every latent at U(±1e-4) (the paper's, ``fit.init: uniform``). A fitted latent is largely a
function of the image around its position, so a linear map from the (2r+1)² x C patch of fit-space values there
(plus a constant) to the z latent values gives a start that is already a rough fit. Pretraining learns the map
from its own jointly fitted latents at the end (:meth:`arc.field.pretraining.JointTraining.trained_decoder`) and
the decoder carries it (``Decoder.latent_start``, saved in its checkpoint, outside its content hash). On the
digits at 28², 100 steps from it reach the PSNR of 250 steps from the uniform start (``tools/bench_latent_init.py``,
``docs/benchmarks.md`` "Latent initialisation"). Images only (D = 2).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from arc.cloud import CloudBatch
from arc.field.colour import to_fit_space_batch
from arc.field.errors import FieldInputError

if TYPE_CHECKING:
    from arc.field.group import FieldGroup

RADIUS = 2  # 5 x 5 patches
RIDGE = 1e-2  # penalty on every coefficient (the patches are standardised values, the latents O(1))


@dataclass
class PatchInit:
    """``weight`` [C (2r+1)² + 1, z] float32: fit-space patch of radius ``radius`` around a latent (and 1) -> latent;
    ``colour``: the field's colour mode the patches are read in."""

    weight: Tensor
    radius: int
    colour: str

    def features(self, image: Tensor, pos: Tensor) -> Tensor:
        """[k, C (2r+1)² + 1]: the fit-space patches of ``image`` [C, H, W] around ``pos`` [k, 2] (row, col;
        zero padding outside the image), channel-major then row-major as ``F.unfold`` orders them, and a constant 1."""
        if image.ndim != 3:
            raise FieldInputError(f"patch initialisation reads images [C, H, W], got a sample of shape {tuple(image.shape)}")
        fit_space, _, _ = to_fit_space_batch(image[None], self.colour)
        padded = F.pad(fit_space[0], (self.radius,) * 4)  # [C, H + 2r, W + 2r]
        window = torch.arange(2 * self.radius + 1)
        rows = pos[:, 0].long()[:, None, None] + window[None, :, None]  # [k, 2r+1, 1]
        cols = pos[:, 1].long()[:, None, None] + window[None, None, :]  # [k, 1, 2r+1]
        patches = padded[:, rows, cols].permute(1, 0, 2, 3).reshape(len(pos), -1)  # [k, C (2r+1)²]
        return torch.cat([patches, patches.new_ones(len(pos), 1)], dim=1)

    def latents(self, image: Tensor, pos: Tensor) -> Tensor:
        """[k, z] starting latents at ``pos`` [k, 2] of ``image`` [C, H, W] in [0, 1]."""
        return self.features(image, pos) @ self.weight

    def hash(self) -> str:
        """sha256 (hex) of the map: its float32 weights, radius and colour mode (what the start depends on)."""
        digest = hashlib.sha256(self.weight.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        digest.update(f"radius={self.radius};colour={self.colour};shape={tuple(self.weight.shape)}".encode())
        return digest.hexdigest()

    @classmethod
    def learn(cls, images: Sequence[Tensor], clouds: CloudBatch, colour: str, radius: int = RADIUS,
              ridge: float = RIDGE) -> "PatchInit":
        """The ridge map (penalty ``ridge`` on every coefficient) from the patches of ``images`` [C, H, W] (in
        [0, 1], the clouds' images in order) around their latents to the fitted ``clouds``' latents. The normal
        equations are summed image by image (float64), so memory stays that of one image's patches."""
        if len(images) != len(clouds.offset):
            raise FieldInputError(f"{len(images)} images but {len(clouds.offset)} clouds")
        probe = cls(torch.empty(0), radius, colour)
        starts = torch.cat([clouds.offset.new_zeros(1), clouds.offset]).tolist()
        gram = moment = None
        for b, image in enumerate(images):
            x = probe.features(image.float(), clouds.pos[starts[b]:starts[b + 1]]).double()
            y = clouds.lat[starts[b]:starts[b + 1]].double()
            gram = x.t() @ x if gram is None else gram + x.t() @ x
            moment = x.t() @ y if moment is None else moment + x.t() @ y
        gram += ridge * torch.eye(gram.shape[0], dtype=torch.float64)
        return cls(torch.linalg.solve(gram, moment).float(), radius, colour)

    @torch.no_grad()
    def start(self, group: FieldGroup, images: Sequence[Tensor]) -> None:
        """Overwrite the latents of ``group`` (built from ``images``, in order) with their starting values."""
        starts = torch.cat([group.latent_offset.new_zeros(1), group.latent_offset]).tolist()
        for b, image in enumerate(images):
            rows = slice(starts[b], starts[b + 1])
            group.latents[rows] = self.latents(image.float(), group.pos[rows].cpu()).to(group.latents.device)
