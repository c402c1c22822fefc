"""One split of a 1-D or 3-D source as a lazily read sequence of (sample float32 [C, *S], label)."""
from __future__ import annotations

import logging

from torch import Tensor

from arc.data.images import ImageReadError
from arc.data.signals import check_signal, conform_signal_channels, fit_shape
from arc.data.sources.readers import Reader
from arc.data.sources.split_base import CountedSplit

log = logging.getLogger(__name__)


class SignalSplit(CountedSplit):
    """One split of a D-dimensional source: ``split[i]`` -> (sample float32 [C, *S], label int).

    The sample is read, converted to the source's ``channels`` (counted in ``converted``), checked
    (:class:`ImageReadError` on failure, counted in ``skipped``) and, when the source has a fixed
    ``shape``, brought to it by ``ragged`` (counted in ``resized``; see :mod:`arc.data.signals`).
    The first conversion and the first resize of a split are logged once. Counters are per process.
    """

    max_pixels = None  # signals are never downscaled to a pixel budget (images: ImageSplit)
    downscaled = 0  # the image splits' count of samples shrunk to max_pixels; never for signals

    def __init__(self, name: str, reader: Reader, channels: int, dims: int, shape: tuple[int, ...] | None = None,
                 ragged: str = "refuse"):
        super().__init__(name, reader, channels)
        self.dims, self.shape, self.ragged = dims, (tuple(shape) if shape is not None else None), ragged
        self._resized: set[int] = set()

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        index = self._index(index)
        what = f"{self.name}[{index}] ({self.describe(index)})"
        try:
            sample = check_signal(self.reader.read(index), what, self.dims)
            sample, converted = conform_signal_channels(sample, self.channels, what)
            resized = False
            if self.shape is not None:
                sample, resized = fit_shape(sample, self.shape, self.ragged, what, getattr(self.reader, "fill", 0.0))
        except ImageReadError:
            self._skipped.add(index)
            raise
        if converted:
            self._note(self._converted, index, f"{self.name}: converting samples to {self.channels} channel(s), first {what}")
        if resized:
            self._note(self._resized, index, f"{self.name}: bringing samples to shape {self.shape} (ragged: {self.ragged}), first {what}")
        return sample, int(self.reader.labels()[index])

    @staticmethod
    def _note(counted: set[int], index: int, message: str) -> None:
        if not counted:
            log.info(message)
        counted.add(index)

    @property
    def resized(self) -> int:
        """Number of distinct samples padded, cropped or resampled to the source's shape in this process."""
        return len(self._resized)
