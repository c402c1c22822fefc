"""Settings of the field (the INR) and of the fitting stages, as plain dataclasses.

``dataclasses.asdict`` of these goes into store manifests and content hashes,
so a changed setting makes a new store and a new decoder checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

Colour = Literal["standardise", "unit"]
Precision = Literal["32", "tf32", "bf16", "16"]


@dataclass(frozen=True)
class FieldConfig:
    """The representation: latent size, neighbours, latent density and colour space.

    latents_per_pixel: rho in k = floor(rho * H * W); ignored when latent_count is set.
    latent_count: an absolute number of latents per image (paper Table 11), or None.
    """

    latent_dim: int = 32
    neighbours: int = 4
    latents_per_pixel: float = 0.05
    latent_count: Optional[int] = None
    colour: Colour = "standardise"

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {self.neighbours}")
        if not 0.0 < self.latents_per_pixel <= 1.0:
            raise ValueError(f"latents_per_pixel must be in (0, 1], got {self.latents_per_pixel}")
        if self.latent_count is not None and self.latent_count < 1:
            raise ValueError(f"latent_count must be >= 1 or None, got {self.latent_count}")
        if self.colour not in ("standardise", "unit"):
            raise ValueError(f"colour must be 'standardise' or 'unit', got {self.colour!r}")

    @property
    def spacing(self) -> float:
        """s = 1/sqrt(latents_per_pixel) pixels: the expected latent spacing that scales decoder offsets."""
        return 1.0 / math.sqrt(self.latents_per_pixel)


def _check_common(steps: int, lr: float, pixel_fraction: float) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not 0.0 < pixel_fraction <= 1.0:
        raise ValueError(f"pixel_fraction must be in (0, 1], got {pixel_fraction}")


@dataclass(frozen=True)
class FitConfig:
    """Fitting latents with a frozen decoder (per-image Adam, chunked pixel schedule).

    pixel_budget: supervised pixels per step of a group and per pass; bounds memory (a group's
        pixel tables, about 72 bytes per image pixel; the decoder activations are computed in
        blocks of at most 2^20 pixels on CUDA, 2,048 on the CPU). It does not change the
        results, so it is not part of the store key.
    precision: the decoder matmuls on CUDA: "32" (full float32), "tf32" (float32 with TF32
        tensor-core matmuls), "bf16" or "16" (matmuls in that dtype, float32 loss and Adam).
        The CPU always fits in full float32.
    """

    steps: int = 500
    lr: float = 5e-3
    pixel_fraction: float = 0.25
    pixel_budget: int = 4_000_000
    precision: Precision = "32"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_common(self.steps, self.lr, self.pixel_fraction)
        if self.pixel_budget < 1:
            raise ValueError(f"pixel_budget must be >= 1, got {self.pixel_budget}")
        object.__setattr__(self, "precision", str(self.precision))  # YAML reads 32 as an int
        if self.precision not in ("32", "tf32", "bf16", "16"):
            raise ValueError(f"precision must be '32', 'tf32', 'bf16' or '16', got {self.precision!r}")


@dataclass(frozen=True)
class PretrainConfig:
    """Joint training of the shared decoder and the latents of ``images`` seeded train images."""

    images: int = 100
    steps: int = 500
    lr: float = 5e-3
    pixel_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        _check_common(self.steps, self.lr, self.pixel_fraction)
        if self.images < 1:
            raise ValueError(f"images must be >= 1, got {self.images}")
