"""Settings of the field (the INR) and of the fitting stages, as plain dataclasses.

``dataclasses.asdict`` of these goes into store manifests and content hashes,
so a changed setting makes a new store and a new decoder checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Optional, Union

Colour = Literal["standardise", "unit"]
OffsetMode = Literal["spacing", "per_image"]
OffsetScale = Union[OffsetMode, float]
Precision = Literal["32", "tf32", "bf16", "16"]
Engine = Literal["auto", "dense", "factored"]
ENGINES = ("auto", "dense", "factored")
LatentStart = Literal["uniform", "patch"]
LATENT_STARTS = ("uniform", "patch")


@dataclass(frozen=True)
class FieldConfig:
    """The representation: latent size, neighbours, latent density and colour space.

    Args:
        latent_dim: z, the size of every latent vector.
        neighbours: the nearest latents each pixel's decoder query reads.
        latents_per_pixel: rho in k = floor(rho * H * W); ignored when latent_count is set.
        latent_count: an absolute number of latents per image (paper Table 11), or None.
        colour: "standardise" (per-image channel mean/std, the paper) or "unit" (pixel values in [0, 1]).
        reference_pixels: with latent_count (and only then), the image area H * W [pixels] the count
            refers to, e.g. 784 for 28x28 or a typical area when sizes are mixed; it fixes the
            dataset's offset scale (see ``spacing``). Required with latent_count unless offset_scale
            is a number.
        offset_scale: how the decoder's offsets (latent - pixel) are scaled: "spacing" divides them by
            the dataset constant ``spacing`` (the expected latent spacing); a number divides them by
            that many pixels instead (one dataset constant, e.g. ~20 for a 28x28 image on a 100x100
            canvas, docs/benchmarks.md); "per_image" standardises them per image by the scalar mean
            and unbiased std of all its offsets (the original code; :mod:`arc.field.offsets`). The
            decoder carries its mode (``offset_mode``), so decoding scales as fitting did.
    """

    latent_dim: int = 32
    neighbours: int = 4
    latents_per_pixel: float = 0.05
    latent_count: Optional[int] = None
    colour: Colour = "standardise"
    reference_pixels: Optional[int] = None
    offset_scale: OffsetScale = "spacing"

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ValueError(f"field.latent_dim must be >= 1, got {self.latent_dim}")
        if self.neighbours < 1:
            raise ValueError(f"field.neighbours must be >= 1, got {self.neighbours}")
        if not 0.0 < self.latents_per_pixel <= 1.0:
            raise ValueError(f"field.latents_per_pixel must be in (0, 1], got {self.latents_per_pixel}")
        if self.latent_count is not None and self.latent_count < 1:
            raise ValueError(f"field.latent_count must be >= 1 or None, got {self.latent_count}")
        if isinstance(self.offset_scale, (int, float)) and not isinstance(self.offset_scale, bool):
            if not 0.0 < self.offset_scale < math.inf:
                raise ValueError(f"field.offset_scale: a number must be a positive number of pixels, got {self.offset_scale}")
            object.__setattr__(self, "offset_scale", float(self.offset_scale))  # 20 and 20.0: one store key
        elif self.offset_scale not in ("spacing", "per_image"):
            raise ValueError(f"field.offset_scale must be 'spacing', 'per_image' or a number of pixels, got {self.offset_scale!r}")
        if self.latent_count is not None and self.reference_pixels is None and isinstance(self.offset_scale, str):
            raise ValueError(
                f"field.latent_count={self.latent_count} needs field.reference_pixels, the image area H*W it refers to "
                "(e.g. 784 for 28x28 images): the offset scale is s = sqrt(reference_pixels / latent_count)"
            )
        if self.latent_count is None and self.reference_pixels is not None:
            raise ValueError("field.reference_pixels is used only with latent_count; with latents_per_pixel, s = 1/sqrt(rho)")
        if self.reference_pixels is not None and self.reference_pixels < self.latent_count:
            raise ValueError(
                f"field.reference_pixels must be >= field.latent_count (at most one latent per pixel), got "
                f"{self.reference_pixels} < {self.latent_count}"
            )
        if self.colour not in ("standardise", "unit"):
            raise ValueError(f"field.colour must be 'standardise' or 'unit', got {self.colour!r}")

    @property
    def offset_mode(self) -> OffsetMode:
        """The mode the decoder records: "per_image", or "spacing" (offsets divided by the constant ``spacing``)."""
        return "per_image" if self.offset_scale == "per_image" else "spacing"

    @property
    def spacing(self) -> float:
        """s [pixels] of images (D = 2): :meth:`spacing_for` (2)."""
        return self.spacing_for(2)

    def spacing_for(self, dims: int) -> float:
        """s [sample units], the dataset constant that divides the decoder's offsets of D-dimensional samples
        (unused when per_image).

        s = offset_scale when that is a number; else the expected latent spacing, the D-th root of the
        sample points per latent: (1 / latents_per_pixel)^(1/D), or (reference_pixels / latent_count)^(1/D)
        when latent_count is set (reference_pixels then counts the points of a reference sample).
        """
        if dims not in (1, 2, 3):
            raise ValueError(f"a sample has 1, 2 or 3 spatial dimensions, got {dims}")
        if not isinstance(self.offset_scale, str):
            return self.offset_scale
        if self.latent_count is not None:
            return _root(self.reference_pixels / self.latent_count, dims)
        return 1.0 / _root(self.latents_per_pixel, dims)


def _root(x: float, dims: int) -> float:
    """x^(1/dims) by the exact library root (math.sqrt for D = 2, so 2-D spacings keep their bits)."""
    return (x, math.sqrt(x), math.cbrt(x))[dims - 1]


def _check_common(block: str, steps: int, lr: float, pixel_fraction: float) -> None:
    if steps < 1:
        raise ValueError(f"{block}.steps must be >= 1, got {steps}")
    if lr <= 0:
        raise ValueError(f"{block}.lr must be > 0, got {lr}")
    if not 0.0 < pixel_fraction <= 1.0:
        raise ValueError(f"{block}.pixel_fraction must be in (0, 1], got {pixel_fraction}")


@dataclass(frozen=True)
class FitConfig:
    """Fitting latents with a frozen decoder (per-image Adam, chunked pixel schedule).

    Args:
        steps: Adam steps per image.
        lr: Adam learning rate of the latents.
        pixel_fraction: share of an image's pixels supervised per step (a fixed chunk schedule).
        pixel_budget: supervised pixels per step of a group and per pass; bounds memory (a group's
            pixel tables, about 72 bytes per image pixel; the decoder activations are computed in
            blocks of at most 2^20 pixels on CUDA, 2,048 on the CPU). It does not change the
            results, so it is not part of the store key.
        precision: the decoder matmuls on CUDA: "32" (full float32), "tf32" (float32 with TF32
            tensor-core matmuls), "bf16" or "16" (matmuls in that dtype, float32 loss and Adam).
            The CPU always fits in full float32.
        seed: the seed of every per-image draw; the DataModule sets it to ``data.seed``.
        engine: how the latent gradient is computed: "dense" (the decoder per pixel,
            :class:`arc.field.fitting.LatentGradient`), "factored" (the first layer per latent,
            :class:`arc.field.factored.FactoredGradient`, about a quarter of the arithmetic) or "auto"
            (:func:`arc.field.fitting.resolve_engine`: the one measured faster for the device).
            The results are equal up to float rounding, so, like ``pixel_budget`` and the device, it is
            not part of the store key (:meth:`result_settings`).
        init: where the latents start: "uniform" (U(±1e-4), the paper's) or "patch" (the map from the 5x5
            patch around each latent that the decoder learned at the end of its pretraining,
            :mod:`arc.field.latent_init`; images only): a rough fit before the first step, so fewer
            steps reach the same PSNR. It changes the clouds, so it is part of the store key when not
            "uniform" (with the map's hash, :func:`arc.field.fitting.cloud_settings`).
    """

    steps: int = 500
    lr: float = 5e-3
    pixel_fraction: float = 0.25
    pixel_budget: int = 4_000_000
    precision: Precision = "32"
    seed: int = 0
    engine: Engine = "auto"
    init: LatentStart = "uniform"

    def __post_init__(self) -> None:
        _check_common("fit", self.steps, self.lr, self.pixel_fraction)
        if self.init not in LATENT_STARTS:
            raise ValueError(f"fit.init must be one of {LATENT_STARTS}, got {self.init!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"fit.engine must be one of {ENGINES}, got {self.engine!r}")
        if self.pixel_budget < 1:
            raise ValueError(f"fit.pixel_budget must be >= 1, got {self.pixel_budget}")
        object.__setattr__(self, "precision", str(self.precision))  # YAML reads 32 as an int
        if self.precision not in ("32", "tf32", "bf16", "16"):
            raise ValueError(f"fit.precision must be '32', 'tf32', 'bf16' or '16', got {self.precision!r}")

    def result_settings(self) -> dict:
        """The settings that make the fitted clouds what they are, for store keys and manifests: all but
        ``pixel_budget`` (memory) and ``engine`` (speed), and ``init`` only when it is not "uniform", so the
        keys are those of before any of them existed."""
        settings = {name: value for name, value in asdict(self).items() if name not in ("pixel_budget", "engine")}
        if self.init == "uniform":
            del settings["init"]
        return settings


@dataclass(frozen=True)
class PretrainConfig:
    """Joint training of the shared decoder and the latents of ``images`` seeded train images.

    Args:
        images: train images the decoder is pretrained on.
        steps: joint Adam steps.
        lr: Adam learning rate of the decoder and the latents.
        pixel_fraction: share of each image's pixels supervised per step.
        seed: the seed of the image subset and the initialisation; the DataModule sets it to ``data.seed``.
    """

    images: int = 100
    steps: int = 500
    lr: float = 5e-3
    pixel_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        _check_common("pretrain", self.steps, self.lr, self.pixel_fraction)
        if self.images < 1:
            raise ValueError(f"pretrain.images must be >= 1, got {self.images}")
