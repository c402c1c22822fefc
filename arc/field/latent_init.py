"""A learned starting point for the latents: a ridge map from the patch around a latent to its fitted value.

Fitting starts every latent at U(±1e-4) (the paper's). A fitted latent is largely a function of the image
around its position, so a linear map from the (2r+1)² x C patch of fit-space values there (plus a constant)
to the z latent values, learned from clouds fitted the usual way with the same decoder, gives a start that
is already a rough fit. On the digits at 28², 100 steps from it reach the PSNR of 250 steps from the
uniform start (``tools/bench_latent_init.py``, ``docs/benchmarks.md`` "Latent initialisation").
Images only (D = 2); the map belongs to one decoder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from arc.cloud import CloudBatch
from arc.field.colour import to_fit_space_batch
from arc.field.errors import FieldInputError
from arc.field.group import FieldGroup


@dataclass
class PatchInit:
    """``weight`` [C (2r+1)² + 1, z]: fit-space patch of radius ``radius`` around a latent (and 1) -> latent;
    ``colour``: the field's colour mode the patches are read in."""

    weight: Tensor
    radius: int
    colour: str

    def features(self, image: Tensor, pos: Tensor) -> Tensor:
        """[k, C (2r+1)² + 1]: the fit-space patches of ``image`` [C, H, W] around ``pos`` [k, 2] (row, col;
        zero padding outside the image) and a constant 1."""
        if image.ndim != 3:
            raise FieldInputError(f"patch initialisation reads images [C, H, W], got a sample of shape {tuple(image.shape)}")
        fit_space, _, _ = to_fit_space_batch(image[None], self.colour)
        size = 2 * self.radius + 1
        columns = F.unfold(F.pad(fit_space, (self.radius,) * 4), size)[0]  # [C size², H W]
        where = (pos[:, 0] * image.shape[-1] + pos[:, 1]).long()
        return torch.cat([columns[:, where].t(), columns.new_ones(len(where), 1)], dim=1)

    def latents(self, image: Tensor, pos: Tensor) -> Tensor:
        """[k, z] starting latents at ``pos`` [k, 2] of ``image`` [C, H, W] in [0, 1]."""
        return self.features(image, pos) @ self.weight

    @classmethod
    def learn(cls, images: Sequence[Tensor], clouds: CloudBatch, colour: str, radius: int = 2,
              ridge: float = 1e-2) -> "PatchInit":
        """The ridge map (penalty ``ridge`` on every coefficient) from the patches of ``images`` [C, H, W] (in
        [0, 1], the clouds' images in order) around their latents to the fitted ``clouds``' latents."""
        if len(images) != len(clouds.offset):
            raise FieldInputError(f"{len(images)} images but {len(clouds.offset)} clouds")
        probe = cls(torch.empty(0), radius, colour)
        starts = torch.cat([clouds.offset.new_zeros(1), clouds.offset])
        rows = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]
        x = torch.cat([probe.features(im.float(), clouds.pos[sl]) for im, sl in zip(images, rows)]).double()
        y = clouds.lat.double()
        gram = x.t() @ x + ridge * torch.eye(x.shape[1], dtype=torch.float64)
        return cls(torch.linalg.solve(gram, x.t() @ y).float(), radius, colour)

    @torch.no_grad()
    def start(self, group: FieldGroup, images: Sequence[Tensor]) -> None:
        """Overwrite the latents of ``group`` (built from ``images``, in order) with their starting values."""
        starts = torch.cat([group.latent_offset.new_zeros(1), group.latent_offset]).tolist()
        for b, image in enumerate(images):
            rows = slice(starts[b], starts[b + 1])
            group.latents[rows] = self.latents(image.float(), group.pos[rows].cpu()).to(group.latents.device)
