"""One split of a source as a lazily decoded sequence of (image float32 [C, H, W] in [0, 1], label)."""
from __future__ import annotations

import math
import torch.nn.functional as F
from torch import Tensor

from arc.data.canvas import CanvasConfig, apply_canvas
from arc.data.images import ImageReadError, check_source_image, conform_channels
from arc.data.sources.readers import Reader
from arc.data.sources.split_base import CountedSplit


class ImageSplit(CountedSplit):
    """One split: ``split[i]`` -> (image float32 [C, H, W] in [0, 1], label int), decoded lazily.

    The image is read, alpha-composited on black, converted to the dataset's ``channels``
    (counted in ``converted``), checked (:class:`ImageReadError` on failure, counted in
    ``skipped``), centre-cropped (``center_crop``), downscaled to at most ``max_pixels`` pixels
    (:func:`downscale`, counted in ``downscaled``) and placed on the canvas (``canvas``).
    The counters are per process (DataLoader workers keep their own).
    """

    def __init__(self, name: str, reader: Reader, channels: int, center_crop: int | None = None, canvas: CanvasConfig | None = None,
                 max_pixels: int | None = None):
        super().__init__(name, reader, channels)
        self.center_crop, self.canvas, self.max_pixels = center_crop, canvas, max_pixels
        self._downscaled: set[int] = set()

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        index = self._index(index)
        try:
            image, converted = conform_channels(self.reader.read(index), self.channels)
            image = check_source_image(image, self._what(index))
            if self.center_crop is not None:
                image = self._crop(image, index)
        except ImageReadError:
            self._skipped.add(index)
            raise
        if converted:
            self._converted.add(index)
        if self.max_pixels is not None and image.shape[1] * image.shape[2] > self.max_pixels:
            image = downscale(image, self.max_pixels)
            self._downscaled.add(index)
        if self.canvas is not None:
            image = apply_canvas(image, self.canvas, self.name, index)
        return image, int(self.reader.labels()[index])

    def _what(self, index: int) -> str:
        return f"{self.name}[{index}] ({self.describe(index)})"

    def _crop(self, image: Tensor, index: int) -> Tensor:
        crop, (height, width) = self.center_crop, image.shape[1:]
        if height < crop or width < crop:
            raise ImageReadError(f"{self._what(index)}: image {height}x{width} is smaller than center_crop {crop}")
        top, left = (height - crop) // 2, (width - crop) // 2
        return image[:, top : top + crop, left : left + crop]

    @property
    def downscaled(self) -> int:
        """Number of distinct images downscaled to ``max_pixels`` in this process."""
        return len(self._downscaled)


def downscale(image: Tensor, max_pixels: int) -> Tensor:
    """``image`` [C, H, W] resized (bilinear, antialiased, aspect ratio kept) to the largest size with
    at most ``max_pixels`` pixels."""
    height, width = image.shape[1:]
    scale = math.sqrt(max_pixels / (height * width))
    size = [max(1, int(height * scale)), max(1, int(width * scale))]
    while size[0] * size[1] > max_pixels:  # float rounding
        size[int(size[1] > size[0])] -= 1
    resized = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return resized.clamp_(0.0, 1.0)
