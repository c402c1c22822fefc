"""Canvas transforms (paper Exp. 1 and 5): pad an image onto a black size x size canvas.

``mode="centre"`` puts the image at top = (S - H) // 2, left = (S - W) // 2;
``mode="random"`` draws top in [0, S - H] and left in [0, S - W] uniformly from a
generator seeded by ``item_seed(seed, "canvas/<split>", index)``, so the
displacement of an image never depends on batching, workers or resume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from arc.seeding import item_generator

CanvasMode = Literal["centre", "random"]


class CanvasError(ValueError):
    """An image does not fit on the configured canvas (a configuration error, not a skip)."""


@dataclass(frozen=True)
class CanvasConfig:
    """Pad every image to ``size`` x ``size`` pixels, filled with 0 (black)."""

    size: int
    mode: CanvasMode = "centre"
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.size) < 2:
            raise ValueError(f"canvas size must be >= 2 pixels, got {self.size}")
        if self.mode not in ("centre", "random"):
            raise ValueError(f"canvas mode must be 'centre' or 'random', got {self.mode!r}")

    @classmethod
    def parse(cls, value: "CanvasConfig | Mapping | None") -> "CanvasConfig | None":
        """Accept a CanvasConfig, a mapping of its fields, or None."""
        if value is None or isinstance(value, CanvasConfig):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"size", "mode", "seed"}
            if unknown:
                raise ValueError(f"unknown canvas options {sorted(unknown)}; expected size, mode, seed")
            return cls(**value)
        raise ValueError(f"canvas must be a CanvasConfig, a mapping or None, got {type(value).__name__}")


def canvas_placement(canvas: CanvasConfig, height: int, width: int, split: str, index: int) -> tuple[int, int]:
    """(top, left) of an H x W image on the canvas; raises :class:`CanvasError` if it does not fit."""
    if height > canvas.size or width > canvas.size:
        raise CanvasError(
            f"{split}[{index}]: image {height}x{width} is larger than the {canvas.size}x{canvas.size} canvas; "
            "increase canvas.size"
        )
    if canvas.mode == "centre":
        return (canvas.size - height) // 2, (canvas.size - width) // 2
    generator = item_generator(canvas.seed, f"canvas/{split}", index)
    top = int(torch.randint(0, canvas.size - height + 1, (1,), generator=generator))
    left = int(torch.randint(0, canvas.size - width + 1, (1,), generator=generator))
    return top, left


def apply_canvas(image: Tensor, canvas: CanvasConfig, split: str, index: int) -> Tensor:
    """[C, H, W] -> [C, S, S] with the image placed per :func:`canvas_placement`, zeros elsewhere."""
    height, width = image.shape[-2:]
    top, left = canvas_placement(canvas, height, width, split, index)
    return F.pad(image, (left, canvas.size - width - left, top, canvas.size - height - top), value=0.0)
