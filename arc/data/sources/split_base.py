"""What every split of a source shares: a reader, a name, the labels, and the per-process counts of the
samples that were skipped (:class:`~arc.data.images.ImageReadError`) or converted to the source's channels."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from arc.data.sources.readers import Reader


class CountedSplit(Sequence):
    """Base of :class:`~arc.data.sources.image_split.ImageSplit` and :class:`~arc.data.sources.signal_split.SignalSplit`:
    ``len``, ``labels``, ``describe`` from the reader, and the ``skipped`` / ``converted`` counts (per process:
    DataLoader workers keep their own). Subclasses read ``split[i]`` -> (sample, label)."""

    def __init__(self, name: str, reader: Reader, channels: int):
        self.name, self.reader, self.channels = name, reader, channels
        self._skipped: set[int] = set()
        self._converted: set[int] = set()

    def __len__(self) -> int:
        return len(self.reader)

    def _index(self, index: int) -> int:
        """``index`` (negative counts from the end) as a position, or IndexError."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name} split has {n} samples, index {index} is out of range")
        return int(index) % n

    def describe(self, index: int) -> str:
        """Where sample ``index`` comes from: its file path, or its array and position."""
        return self.reader.describe(int(index))

    @property
    def labels(self) -> Tensor:
        """[len] int64 labels (no sample is read)."""
        return self.reader.labels()

    @property
    def skipped(self) -> int:
        """Number of distinct samples that raised :class:`ImageReadError` in this process."""
        return len(self._skipped)

    @property
    def skipped_indices(self) -> list[int]:
        return sorted(self._skipped)

    @property
    def converted(self) -> int:
        """Number of distinct samples converted to the source's channel count in this process."""
        return len(self._converted)
